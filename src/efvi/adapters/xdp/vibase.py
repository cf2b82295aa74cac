"""An ``xdp`` VI's state and control path: its AF_XDP sockets (created lazily, on the
first post, transmit or filter once memory is registered), their XSKMAP slots and
filter groups. The RX path (:mod:`.rx`) and TX path (:mod:`.tx`) build on it;
:class:`~efvi.adapters.xdp.vi.XdpVI` puts them together."""

from __future__ import annotations

import collections
import errno as _errno
import os
import select
from typing import TYPE_CHECKING

import numpy as np

from efvi.adapters.base import HwVI
from efvi.adapters.xdp.program import MAX_QUEUES
from efvi.adapters.xdp.xsk import CHUNK_SIZE, Ring, XskSocket
from efvi.errors import SetupError

if TYPE_CHECKING:
    from efvi.adapters.xdp.pd import XdpPD


class XdpVIBase(HwVI):
    """A VI's state and sockets (control path); see :class:`~efvi.adapters.xdp.vi.XdpVI`."""

    rx_buffer_len = CHUNK_SIZE
    rx_prefix_len = 0
    clock_source = "xdp-sw"

    def __init__(self, pd: XdpPD, rxq: int, txq: int, evq: int, queues: list[int]) -> None:
        self.pd = pd
        self.adapter = pd.adapter
        self.prog = pd.adapter.program
        self.rxq, self.txq, self.evq = rxq, txq, evq
        self.queues = queues
        self.target = self.prog.alloc_target()
        self.groups: set[int] = set()
        self.socks: dict[int, XskSocket] = {}
        self.rx_socks: list[tuple[int, XskSocket]] = []
        #: (queue, RX ring) of a VI with exactly one RX socket (the per-packet path)
        self._rx1q: tuple[int, Ring] | None = None
        self.tx_sock: XskSocket | None = None
        self._sw: collections.deque[int] = collections.deque()
        self._closed = False
        self.busy_poll_on = False  # SO_BUSY_POLL accepted (busy_poll=N in the URL)
        self._published = False
        # RX state
        self._rx_cons: dict[int, int] = {}
        #: multi-buffer frames: per queue, bytes of the chain so far (0: none) and its stamp
        self._chain_len: dict[int, int] = {}
        self._chain_ts: dict[int, int] = {}
        self._fill_prod: dict[int, int] = {}
        self._q_out: dict[int, int] = {}
        self._rx_id = np.zeros(0, np.uint32)
        self._ts_off = 0
        self._ts_age = 0
        # TX state
        self._tx_prod = 0
        self._comp_cons = 0
        self._tx_done = 0  # core descriptors completed (mod 2**32 in events)
        self._runs: collections.deque[list[int]] = collections.deque()  # [kind, n_core, n_xdp]
        self._tx_unkicked = False
        self._bounce: list[int] | None = None  # bounce frames (DMA), taken on first use
        self._bounce_seq: list[int] = []  # TX-ring index each frame was last sent at (-1)
        self._bounce_k = 0  # next frame (FIFO: completions come back in order)
        self._poller: select.poll | None = None
        self.counters = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0,
                         "tx_error_drops": 0, "tx_kick_errors": 0, "tx_bounced": 0}

    # ---- sockets (control path, lazy) ----------------------------------------------------
    def activate(self) -> None:
        """Open the VI's sockets now if memory is registered (else on first use)."""
        self.ensure_sockets()

    def ensure_sockets(self) -> bool:
        """Create this VI's sockets if memory is registered; False if not yet possible."""
        if self.socks or self._closed:
            return bool(self.socks)
        pd = self.pd
        if not pd.umem_len:
            return False
        need_rx = self.rxq > 0
        plan = [q for q in self.queues if need_rx or q == self.queues[0]]
        if not self.txq and not need_rx:
            return False
        owners = self.prog.queue_owner
        for q in plan:
            other = owners.get(q)
            if other is not None and other is not self and not other._closed:
                raise SetupError(
                    f"RX queue {q} of {self.adapter.iface} already has a VI in this process",
                    errno=_errno.EBUSY,
                    hint="AF_XDP has one fill ring per queue: use one VI per queue "
                         f"(xdp:{self.adapter.iface}@Q, or a VISet on a multi-queue "
                         "interface); close the other VI first")
        try:
            with self.adapter.netns.enter():  # sockets belong to the netns they are made in
                self._open_sockets(plan, need_rx)
        except BaseException:
            self._close_sockets()
            raise
        self._rx_id = np.zeros(pd.umem_len // CHUNK_SIZE + 1, np.uint32)
        self._rx_id_mv = self._rx_id.data
        assert pd.umem is not None
        self._umem_mv = pd.umem.data
        self._umem_q = pd.umem[:pd.umem.shape[0] & ~7].data.cast("q")
        self._umem_i64 = pd.umem[:pd.umem.shape[0] & ~7].view(np.int64)
        self._poller = select.poll()
        for _, s in self.rx_socks:
            self._poller.register(s.fd, select.POLLIN)
        if len(self.rx_socks) == 1 and self.rx_socks[0][1].rx is not None:
            self._rx1q = (self.rx_socks[0][0], self.rx_socks[0][1].rx)
        return True

    def _open_sockets(self, plan: list[int], need_rx: bool) -> None:
        pd = self.pd
        owners = self.prog.queue_owner
        for i, q in enumerate(plan):
            tx_here = self.txq > 0 and i == 0
            rx_size = max(self.rxq, 64) if need_rx else 0
            tx_size = max(self.txq, 64) if tx_here else 0
            broker = self.adapter.broker
            if broker is not None:
                s = broker.open_socket(pd.umem_id, q, rx_size=rx_size, tx_size=tx_size,
                                       fill_size=max(self.rxq, 64),
                                       comp_size=max(self.txq, 64), sg=self.adapter.sg)
            else:
                s = XskSocket(self.adapter.ifindex, q, umem_addr=pd.umem_addr,
                              umem_len=pd.umem_len, rx_size=rx_size, tx_size=tx_size,
                              fill_size=max(self.rxq, 64), comp_size=max(self.txq, 64),
                              shared_fd=pd.shared_fd(), zerocopy=self.adapter.zerocopy,
                              tx_budget=tx_size, sg=self.adapter.sg)
            pd.sockets.append(s)
            self.socks[q] = s
            owners[q] = self
            if rx_size:
                self.prog.hold_queue(q, os.getpid())
            if self.adapter.busy_poll and rx_size:
                self.busy_poll_on = s.set_busy_poll(self.adapter.busy_poll,
                                                    self.adapter.busy_budget)
            if rx_size:
                self.rx_socks.append((q, s))
                self._rx_cons[q] = 0
                self._chain_len[q] = 0
                self._chain_ts[q] = 0
                self._fill_prod[q] = 0
                self._q_out[q] = 0
            if tx_here:
                self.tx_sock = s

    def _publish(self) -> None:
        """Enter the RX sockets in the XSKMAP (after the first RX post: until the VI has
        buffers, its filters' frames stay with the kernel instead of being dropped)."""
        self._published = True
        for q, s in self.rx_socks:
            for t in (self.target, *self.groups):
                self.prog.set_slot(t * MAX_QUEUES + q, s.fd)

    def _ready(self) -> bool:
        return bool(self.socks) or self.ensure_sockets()

    def join_group(self, g: int) -> None:
        self.groups.add(g)
        if not self._published:
            return
        for q, s in self.rx_socks:
            self.prog.set_slot(g * MAX_QUEUES + q, s.fd)

    def leave_group(self, g: int) -> None:
        self.groups.discard(g)
        for q in self.socks:
            self.prog.clear_slot(g * MAX_QUEUES + q)

    @property
    def zerocopy(self) -> bool:
        return any(s.zerocopy for s in self.socks.values())


    def _close_sockets(self) -> None:
        owners = self.prog.queue_owner
        for q, s in list(self.socks.items()):
            for t in (self.target, *self.groups):
                try:
                    self.prog.clear_slot(t * MAX_QUEUES + q)
                except SetupError:
                    pass
            if owners.get(q) is self:
                del owners[q]
                if any(rq == q for rq, _ in self.rx_socks):
                    try:
                        self.prog.hold_queue(q, 0)
                    except SetupError:
                        pass
            if s in self.pd.sockets:
                self.pd.sockets.remove(s)
            s.close()
        self.socks.clear()
        self.rx_socks.clear()
        self._rx1q = None
        self._published = False
        self.tx_sock = None
        self._poller = None
