"""The ``xdp`` adapter: ef_vi over AF_XDP (``xdp:IFNAME[@QUEUE][?mode=&zerocopy=&force=&ts=]``).

Model mapping:

* **PD ↔ UMEM.** A PD's one memory region is the UMEM (``multi_region=False``),
  registered in unaligned-chunk mode so TX may start anywhere. The region's mapping
  starts with a 128 KiB headroom (``XdpAdapter.region_headroom``: the core maps it
  in the same mapping, right below the region) registered as part of the UMEM: its
  first 64 KiB hold the VIs' PIO areas (pre-staged frames sent straight from UMEM),
  the other 64 KiB the TX *bounce frames* (32 × 2048 bytes, :data:`BOUNCE_PER_VI` per
  VI) that gathered packets are copied into; so DMA address = UMEM offset and the
  region's DMA base is 128 KiB.
* **VI ↔ AF_XDP sockets.** A VI on ``xdp:IF`` gets one socket per RX queue (one merged
  event queue; ``q_id`` of an RX event is the hardware queue), ``xdp:IF@Q`` or
  ``VirtualInterface(queue=Q)`` one socket on queue Q; VISet member *i* binds queue
  *i*. Sockets are created on first use (first post, transmit, or filter once memory
  is registered) — that call may raise SetupError. Sockets of one PD share its UMEM
  (``XDP_SHARED_UMEM``), each with its own FILL/COMPLETION pair.
* **One VI per RX queue per process.** AF_XDP has one FILL ring per (device, queue), so
  two VIs receiving on one queue would take each other's buffers; a second VI that
  needs a socket on a busy queue gets SetupError(EBUSY). Use ``@Q``/VI sets on a
  multi-queue interface for several VIs.
* **Filters** are entries of the interface program's BPF hash table
  (:mod:`efvi.adapters.xdp.program`). Steal only (sniff → UnsupportedError naming
  ``packet``). An identical filter already installed → FilterExistsError; for a
  multicast destination held by another VI → UnsupportedError: XDP redirects a frame
  to exactly one socket, so **multicast replication across VIs is not supported** on
  xdp (use one VI per group, or the sim adapter).
* **RX** events come from the RX rings: ``ofs`` = 256 (the kernel's headroom),
  ``ts_ns`` = the program's ``bpf_ktime_get_ns`` converted to CLOCK_REALTIME
  (clock source ``xdp-sw``). **Hardware RX timestamps** (``ts=auto``, the default, or
  ``ts=hw``): in native mode the program is loaded device-bound with the
  ``bpf_xdp_metadata_rx_timestamp`` kfunc (:mod:`efvi.adapters.xdp.link`); a frame the
  driver stamped carries the NIC clock's ns (raw, not converted: a PHC, usually kept
  on TAI/UTC by ptp4l) and the per-event flag :data:`RX_FLAG_HW_TS` in ``flags``;
  other frames keep the software stamp. The VI's ``clock_source`` turns ``hw`` at the
  first hardware-stamped frame (per VI; the flag is per event) and stays ``xdp-sw``
  on drivers that implement the kfunc without a clock (veth) or when the kfunc
  program could not be used (skb mode, old kernel, driver refusal: the plain program
  is loaded silently, ``capabilities.hw_timestamps`` is False and
  ``XdpAdapter.rx_timestamp_info`` says why). Drivers such as mlx5/ice only stamp
  when RX hardware timestamping is enabled on the interface (ptp4l or
  ``hwstamp_ctl -r 1``); efvi does not change that global setting. Frames longer than a buffer (2048 − 256) are dropped by
  the kernel and counted (``rx_trunc_drops``); interfaces whose MTU allows such
  frames are refused at VI allocation.
* **TX** descriptors go to the TX ring; ``sendto`` kicks when the kernel sets
  need_wakeup (always, in copy mode). Completions come back in order and become TX
  events (≤ 64 descriptors each, ``rq_id`` = cumulative count). A packet of several
  descriptors (``transmitv``, gather) is sent as one AF_XDP descriptor: in place when
  the pieces are adjacent in memory, else copied into one of the VI's bounce frames
  (``tx_bounced`` counts them), which is reused once the kernel completed it; its ids
  complete in order with the other sends. A packet longer than 2048 bytes completes
  as TX_ERROR (TOO_BIG); so does a gathered one when the PD has no bounce frames (no
  reserve area could be mapped, or 4+ VIs took them all) or the VI's are all still in
  flight after a kick (BUS); both count in ``tx_error_drops``.
"""

from __future__ import annotations

import collections
import errno as _errno
import platform
import select
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import ctypes
import ctypes.util
import numpy as np

from efvi.adapters.base import (Adapter, Capabilities, EventArray, HwProtectionDomain, HwVI,
                                InterfaceInfo, U32Array, U64Array)
from efvi.adapters.xdp.link import InterfaceProgram
from efvi.netutil import NetnsHandle
from efvi.adapters.xdp.program import MAX_QUEUES, TableKind, presence_bit, spec_key
from efvi.adapters.xdp.xsk import (ADDR_MASK, Ring, CHUNK_SIZE, OFFSET_SHIFT, XDP_PACKET_HEADROOM,
                                   XDP_RING_NEED_WAKEUP, XskSocket)
from efvi.errors import FilterExistsError, SetupError, UnsupportedError
from efvi.events import EventType, TxErrorType
from efvi.filters import FilterKind, FilterSpec
from efvi import netutil

if TYPE_CHECKING:
    from efvi.memory import MemoryRegion

M32 = 0xFFFFFFFF
_REQ_NONE = 0xFFFFFFFF
PIO_RESERVE = 64 * 1024  # UMEM bytes below the region for PIO areas
BOUNCE_RESERVE = 64 * 1024  # and after those, for TX bounce frames
RESERVE = PIO_RESERVE + BOUNCE_RESERVE
BOUNCE_PER_VI = 8  # bounce frames a VI takes (on its first gathered packet)
MAX_RX_FRAME = CHUNK_SIZE - XDP_PACKET_HEADROOM
_RETRY = (_errno.EAGAIN, _errno.ENOBUFS, _errno.EBUSY)
_KICK_LIMIT = 64
_TX = int(EventType.TX)
_TXERR = int(EventType.TX_ERROR)
_SW = int(EventType.SW)
_OPTIONS = {"mode", "zerocopy", "force", "ts"}
#: RX event flag (xdp adapter): ``ts_ns`` is a hardware stamp from the NIC's clock
RX_FLAG_HW_TS = 0x100
_HW_TS_MASK = (1 << 63) - 1
_SCALAR_RX = 8  # at most this many RX frames per queue: scalar path (no numpy overhead)


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes", "on")


class XdpAdapter(Adapter):
    """An interface driven through AF_XDP (see the module doc)."""

    name = "xdp"
    region_headroom = RESERVE

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        super().__init__(iface, queue, options)
        self._closed = True
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise SetupError(
                f"the xdp adapter needs x86-64 (found {platform.machine()})",
                errno=_errno.EOPNOTSUPP,
                hint="AF_XDP rings need memory barriers pure Python cannot emit on this "
                     "architecture; use the packet adapter")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise SetupError(f"unknown xdp option(s) {sorted(unknown)}", errno=_errno.EINVAL,
                             hint="options: mode=auto|drv|skb, zerocopy=auto|0|1, force=1, "
                                  "ts=auto|sw|hw")
        if not iface:
            raise SetupError("xdp needs an interface: xdp:IFNAME[@QUEUE]", errno=_errno.EINVAL)
        self.mode = options.get("mode", "auto").lower()
        zc = options.get("zerocopy", "auto").lower()
        self.zerocopy: bool | None = None if zc in ("auto", "") else _truthy(zc)
        force = _truthy(options.get("force"))
        self.netns = NetnsHandle()
        try:
            li = netutil.link_info(iface)
            if not li.up:
                raise SetupError(f"interface {iface} is down", errno=_errno.ENETDOWN,
                                 hint=f"run: ip link set {iface} up")
            if len(li.mac) != 6:
                raise SetupError(f"{iface} is not an Ethernet interface", errno=_errno.EINVAL,
                                 hint=f"use packet:{iface}")
            self.ifindex = li.ifindex
            self.mac = li.mac
            self.mtu = li.mtu
            self.nqueues = min(netutil.rx_queue_count(iface), MAX_QUEUES)
            if queue is not None and queue >= self.nqueues:
                raise SetupError(
                    f"{iface} has {self.nqueues} RX queue(s) (0..{self.nqueues - 1}); "
                    f"queue {queue} does not exist", errno=_errno.EINVAL,
                    hint=f"use xdp:{iface}@0..{self.nqueues - 1}, or add queues: "
                         f"ethtool -L {iface} combined {queue + 1}")
            self.features = netutil.xdp_features(iface)
            self._info = netutil.interface_info(iface)
            self.program = InterfaceProgram.acquire(iface, self.ifindex, self.netns,
                                                    self.mode, force,
                                                    options.get("ts", "auto").lower())
            self._ts_hw_rx = _driver_hw_rx(iface)
        except BaseException:
            self.netns.close()
            raise
        self._closed = False

    @property
    def capabilities(self) -> Capabilities:
        zc = self.features.zero_copy and self.zerocopy is not False
        kinds = frozenset(k.name.lower() for k in FilterKind
                          if k not in (FilterKind.NONE, FilterKind.ALL))
        return Capabilities(
            adapter="xdp", steal=True, sniff=False, zero_copy=bool(zc), rx_timestamps=True,
            tx_timestamps=False, hw_timestamps=self.program.hw_kfunc and self._ts_hw_rx,
            pio=True, vi_sets=True,
            multi_region=False,
            rx_queues=1 if self.queue is not None else self.nqueues, filter_kinds=kinds)

    def interface_info(self) -> InterfaceInfo:
        return self._info

    @property
    def rx_timestamp_info(self) -> dict[str, object]:
        """How RX frames are stamped: ``kfunc`` (device-bound program calling
        ``bpf_xdp_metadata_rx_timestamp``, software stamp when the driver has none) or
        ``ktime`` (software only), whether the driver reports hardware RX stamps
        (``ethtool -T``), and why hardware stamps are not possible (``why_not``)."""
        p = self.program
        why = p.hw_note
        if p.hw_kfunc and not self._ts_hw_rx:
            why = (f"{self.iface}'s driver reports no raw hardware RX timestamps "
                   "(ethtool -T); frames keep software stamps")
        return {"path": "kfunc" if p.hw_kfunc else "ktime", "driver_hw_rx": self._ts_hw_rx,
                "hw_timestamps": p.hw_kfunc and self._ts_hw_rx, "why_not": why}

    def resolve_neighbour(self, ip: str) -> bytes | None:
        with self.netns.enter():
            return netutil.neighbour(ip, self.ifindex)

    def alloc_pd(self) -> HwProtectionDomain:
        if self._closed:
            raise SetupError("adapter is closed", errno=_errno.EBADF)
        return XdpPD(self)

    def now_ns(self) -> int:
        """CLOCK_REALTIME in int ns (RX timestamps are converted to it)."""
        return time.clock_gettime_ns(time.CLOCK_REALTIME)

    @property
    def attach_mode(self) -> str:
        return self.program.mode

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.program.release()
        self.netns.close()


def _driver_hw_rx(iface: str) -> bool:
    """The driver lists raw hardware RX timestamps and a PHC (``ethtool -T``)."""
    from efvi.adapters.packet.ring import ts_info
    return ts_info(iface).hw_rx


class XdpPD(HwProtectionDomain):
    """A PD: one UMEM (the registered region plus the PIO area below it)."""

    def __init__(self, adapter: XdpAdapter) -> None:
        self.adapter = adapter
        self.umem_addr = 0
        self.umem_len = 0
        self.dma_base = 0
        self.umem: np.ndarray | None = None
        self._reserve = 0  # address of the PIO area (0: none)
        self._pio_next = 0
        self._pio_dma = 0
        self._bounce_next = PIO_RESERVE  # next free bounce frame (offset in the reserve)
        self.sockets: list[XskSocket] = []
        self.vis: set[XdpVI] = set()
        self._closed = False

    # ---- memory --------------------------------------------------------------------
    def register_memory(self, region: "MemoryRegion") -> int:
        addr, n = region.address, region.nbytes
        # the PIO and bounce area must be virtually contiguous with the region (one
        # UMEM): the core maps it right below the region (Adapter.region_headroom)
        self.umem_addr, self.umem_len, self.dma_base = addr, n, 0
        if region.headroom >= RESERVE:
            self._reserve = addr - RESERVE
            self.umem_addr, self.dma_base = self._reserve, RESERVE
            self._pio_dma = 0
            self.umem_len = n + RESERVE
        buf = (ctypes.c_char * self.umem_len).from_address(self.umem_addr)
        self.umem = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
        return self.dma_base

    def unregister_memory(self, region: "MemoryRegion") -> None:
        self._unmap()

    def _unmap(self) -> None:
        self.umem = None
        self._reserve = 0  # the region owns (and unmaps) its headroom
        self.umem_len = 0

    def pio_area(self, nbytes: int) -> tuple[memoryview, int] | None:
        """A PIO area of the UMEM's reserved 64 KiB (16 VIs' worth of 4 KiB areas)."""
        if not self.umem_len:
            raise UnsupportedError("xdp PIO areas live in the UMEM: register the PD's "
                                   "memory region before using vi.pio")
        if not self._reserve:
            raise UnsupportedError("xdp: no address space next to the memory region for "
                                   "the PIO area; stage frames in the region and transmit "
                                   "them instead")
        if self._pio_next + nbytes > PIO_RESERVE:
            raise UnsupportedError(f"xdp: the PD's {PIO_RESERVE // 1024} KiB of PIO space "
                                   "is used up; allocate VIs that need PIO in another PD")
        off = self._pio_next
        self._pio_next += (nbytes + 63) & ~63
        arr = (ctypes.c_char * nbytes).from_address(self._reserve + off)
        return memoryview(arr).cast("B"), self._pio_dma + off

    def bounce_frames(self, n: int) -> list[int]:
        """Up to ``n`` bounce frames (UMEM/DMA addresses of 2048 bytes) for one VI's
        gathered TX; fewer (or none) when the reserve is used up or absent."""
        if not self._reserve or self.umem_len == 0:
            return []
        out: list[int] = []
        while len(out) < n and self._bounce_next + CHUNK_SIZE <= RESERVE:
            out.append(self._pio_dma + self._bounce_next)
            self._bounce_next += CHUNK_SIZE
        return out

    def shared_fd(self) -> int | None:
        for s in self.sockets:
            if s.sock.fileno() >= 0:
                return s.fd
        return None

    # ---- VIs ---------------------------------------------------------------------------
    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int,
                 queue: int | None) -> HwVI:
        a = self.adapter
        if a.mtu + 22 > MAX_RX_FRAME:
            raise SetupError(
                f"{a.iface} has MTU {a.mtu}: its frames do not fit a {CHUNK_SIZE}-byte "
                f"AF_XDP buffer ({MAX_RX_FRAME} bytes after the kernel's headroom)",
                errno=_errno.EMSGSIZE, hint=f"run: ip link set {a.iface} mtu 1500")
        if queue is None:
            queues = [a.queue] if a.queue is not None else list(range(a.nqueues))
        else:
            if a.queue is not None and queue != a.queue:
                raise SetupError(f"this driver is bound to queue {a.queue} "
                                 f"(xdp:{a.iface}@{a.queue}); cannot use queue {queue}",
                                 errno=_errno.EINVAL, hint=f"open xdp:{a.iface} instead")
            if queue >= a.nqueues:
                raise SetupError(f"{a.iface} has {a.nqueues} RX queue(s); no queue {queue}",
                                 errno=_errno.EINVAL,
                                 hint=f"a VI set on {a.iface} has at most {a.nqueues} VIs")
            queues = [queue]
        vi = XdpVI(self, rxq, txq, evq, queues)
        self.vis.add(vi)
        return vi

    # ---- filters -----------------------------------------------------------------------
    def filter_add(self, spec: FilterSpec, targets: Sequence[HwVI]) -> object:
        prog = self.adapter.program
        kind, key = spec_key(spec)
        vis = [t for t in targets if isinstance(t, XdpVI)]
        existing = prog.filters.get(key)
        if existing is not None:
            if spec.is_multicast and existing[0] not in {v.target for v in vis}:
                raise UnsupportedError(
                    f"the xdp adapter cannot replicate multicast filter {spec} to several "
                    "VIs: XDP redirects each frame to one AF_XDP socket and another VI "
                    "holds it; receive the group on one VI, or use the sim adapter")
            raise FilterExistsError(f"filter {spec} is already installed on "
                                    f"{self.adapter.iface}")
        group = None
        if len(vis) == 1:
            target = vis[0].target
        else:
            group = prog.alloc_target()
            target = group
        try:
            for v in vis:
                if group is not None:
                    v.join_group(group)
                v.ensure_sockets()
            if kind in (TableKind.UCAST_MIS, TableKind.MCAST_MIS):
                prog.refresh_kernel_macs(self.adapter.mac)
            bit = presence_bit(kind, spec.vlan_id is None)
            prog.insert(key, bit, target, spec.is_multicast)
        except BaseException:
            if group is not None:
                for v in vis:
                    v.leave_group(group)
                prog.free_target(group)
            raise
        return (key, bit, group, tuple(vis))

    def filter_del(self, handle: object) -> None:
        key, bit, group, vis = cast("tuple[bytes, int, int | None, tuple[XdpVI, ...]]",
                                    handle)
        prog = self.adapter.program
        prog.remove(key, bit)
        if group is not None:
            for v in vis:
                v.leave_group(group)
            prog.free_target(group)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for vi in list(self.vis):
            vi.close()
        self._unmap()


class XdpVI(HwVI):
    """One VI: AF_XDP sockets on its queues, one merged event stream."""

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
        self.tx_sock: XskSocket | None = None
        self._sw: collections.deque[int] = collections.deque()
        self._closed = False
        self._published = False
        # RX state
        self._rx_cons: dict[int, int] = {}
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
        self._poller = select.poll()
        for _, s in self.rx_socks:
            self._poller.register(s.fd, select.POLLIN)
        return True

    def _open_sockets(self, plan: list[int], need_rx: bool) -> None:
        pd = self.pd
        owners = self.prog.queue_owner
        for i, q in enumerate(plan):
            tx_here = self.txq > 0 and i == 0
            rx_size = max(self.rxq, 64) if need_rx else 0
            tx_size = max(self.txq, 64) if tx_here else 0
            s = XskSocket(self.adapter.ifindex, q, umem_addr=pd.umem_addr,
                          umem_len=pd.umem_len, rx_size=rx_size, tx_size=tx_size,
                          fill_size=max(self.rxq, 64), comp_size=max(self.txq, 64),
                          shared_fd=pd.shared_fd(), zerocopy=self.adapter.zerocopy,
                          tx_budget=tx_size)
            pd.sockets.append(s)
            self.socks[q] = s
            owners[q] = self
            if rx_size:
                self.rx_socks.append((q, s))
                self._rx_cons[q] = 0
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

    # ---- RX ----------------------------------------------------------------------------
    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        """FILL doorbell: write ``addrs`` to the FILL ring(s), spreading over queues.

        Cost: a few numpy ops per queue touched, one producer store each, and a
        ``recvfrom`` only when the driver asks (need_wakeup). The first call creates the
        VI's sockets and may raise SetupError.
        """
        if self._closed or not self._ready():
            return
        n = int(addrs.shape[0])
        if n == 0 or not self.rx_socks:
            return
        self._rx_post(addrs, ids, n)
        if not self._published:
            self._publish()  # after the buffers are in: no frame meets an empty ring

    def _rx_post(self, addrs: U64Array, ids: U32Array, n: int) -> None:
        if n == 1 and len(self.rx_socks) == 1:  # per-packet refill: scalar path
            q, s = self.rx_socks[0]
            f = s.fill
            assert f is not None
            addr = int(addrs[0])
            self._rx_id_mv[addr >> 11] = int(ids[0])
            p = self._fill_prod[q]
            f.desc_q[p & f.mask] = addr
            p = (p + 1) & M32
            f.prod[0] = p
            self._fill_prod[q] = p
            self._q_out[q] += 1
            if f.flags[0] & XDP_RING_NEED_WAKEUP:
                s.kick_rx()
            return
        self._rx_id[(addrs >> np.uint64(11)).astype(np.intp)] = ids
        if len(self.rx_socks) == 1:
            self._fill(self.rx_socks[0], addrs)
            return
        # give buffers to the queues holding the fewest
        outs = self._q_out
        total = sum(outs.values()) + n
        share = -(-total // len(self.rx_socks))
        pos = 0
        order = sorted(self.rx_socks, key=lambda x: outs[x[0]])
        for qs in order:
            k = min(n - pos, max(share - outs[qs[0]], 0))
            if k > 0:
                self._fill(qs, addrs[pos:pos + k])
                pos += k
        if pos < n:
            self._fill(order[0], addrs[pos:])

    def _fill(self, qs: tuple[int, XskSocket], addrs: U64Array) -> None:
        q, s = qs
        f = s.fill
        assert f is not None
        p = self._fill_prod[q]
        k = int(addrs.shape[0])
        a = p & f.mask
        if a + k <= f.size:
            f.desc[a:a + k] = addrs
        else:
            f.desc[(p + np.arange(k, dtype=np.int64)) & f.mask] = addrs
        p = (p + k) & M32
        f.prod[0] = p
        self._fill_prod[q] = p
        self._q_out[q] += k
        if f.flags[0] & XDP_RING_NEED_WAKEUP:
            s.kick_rx()

    # ---- TX ----------------------------------------------------------------------------
    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """TX doorbell: descriptors to the TX ring, then ``sendto`` if the kernel asks.

        Cost: ~6 numpy ops and one producer store; in copy mode the kick runs the
        kernel's transmit of the batch on this thread (one syscall per
        XDP_MAX_TX_SKB_BUDGET frames). The first call may create sockets (SetupError).
        """
        if self._closed or not self._ready() or self.tx_sock is None:
            return
        n = int(addrs.shape[0])
        if n == 0:
            return
        if n == 1:  # per-packet send: scalar path (no numpy calls)
            ln = int(lens[0])
            if ln <= CHUNK_SIZE:
                t = self.tx_sock.tx
                assert t is not None
                p = self._tx_prod
                j = (p & t.mask) * 2
                t.desc_q[j] = int(addrs[0])
                t.desc_i[2 * j + 2] = ln
                self._tx_prod = p = (p + 1) & M32
                t.prod[0] = p
                self._tx_unkicked = True
                self._run(0, 1, 1)
                self.counters["tx_bytes"] += ln
                self._kick()
                return
        if (ids == _REQ_NONE).any() or (lens > CHUNK_SIZE).any():
            self._tx_slow(addrs, lens, ids)
        else:
            self._tx_write(addrs, lens)
            self._run(0, n, n)
            self.counters["tx_bytes"] += int(lens.sum())
        self._kick()

    def _run(self, kind: int, n_core: int, n_xdp: int) -> None:
        runs = self._runs
        if kind == 0 and runs and runs[-1][0] == 0:
            runs[-1][1] += n_core
            runs[-1][2] += n_xdp
        else:
            runs.append([kind, n_core, n_xdp])

    def _tx_write(self, addrs: U64Array, lens: U32Array) -> None:
        t = self.tx_sock.tx  # type: ignore[union-attr]
        assert t is not None
        p = self._tx_prod
        k = int(addrs.shape[0])
        a = p & t.mask
        if a + k <= t.size:
            d = t.desc[a:a + k]
            d["addr"] = addrs
            d["len"] = lens
        else:
            idx = (p + np.arange(k, dtype=np.int64)) & t.mask
            t.desc["addr"][idx] = addrs
            t.desc["len"][idx] = lens
        self._tx_prod = p = (p + k) & M32
        t.prod[0] = p
        self._tx_unkicked = True

    def _tx_slow(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """Packets of several descriptors: merge adjacent pieces, else copy them into a
        bounce frame (one ``memmove`` per piece); TX_ERROR above 2048 bytes.

        Cost: a Python loop over the descriptors, plus the copy for gathered packets.
        """
        al, ll, il = addrs.tolist(), lens.tolist(), ids.tolist()
        i = 0
        while i < len(al):
            j = i
            while il[j] == _REQ_NONE and j + 1 < len(al):
                j += 1
            start, total, ok = al[i], 0, True
            for k in range(i, j + 1):
                if al[k] != start + total:
                    ok = False
                total += ll[k]
            if total > CHUNK_SIZE:
                self._run(1, j - i + 1, 0)
            else:
                if not ok:  # gather: copy the pieces into a bounce frame
                    dst = self._bounce_frame()
                    if dst >= 0:
                        base = self.pd.umem_addr
                        at = dst
                        for k in range(i, j + 1):
                            ctypes.memmove(base + at, base + al[k], ll[k])
                            at += ll[k]
                        self._bounce_seq[self._bounce_k] = self._tx_prod
                        self._bounce_k = (self._bounce_k + 1) % len(self._bounce_seq)
                        self.counters["tx_bounced"] += 1
                        start, ok = dst, True
                if ok:
                    self._tx_write(np.array([start], np.uint64), np.array([total], np.uint32))
                    self._run(0 if i == j else 2, j - i + 1, 1)
                    self.counters["tx_bytes"] += total
                else:
                    self._run(3, j - i + 1, 0)
            i = j + 1

    def _bounce_frame(self) -> int:
        """The next bounce frame once the kernel is done with it (DMA address), else -1.

        Cost: a comparison with the completion producer; a ``sendto`` kick only when
        the frame is still in flight (rare: it was used ``BOUNCE_PER_VI`` sends ago).
        """
        if self._bounce is None:
            self._bounce = self.pd.bounce_frames(BOUNCE_PER_VI)
            self._bounce_seq = [-1] * len(self._bounce)
        if not self._bounce:
            return -1
        seq = self._bounce_seq[self._bounce_k]
        if seq >= 0:
            s = self.tx_sock
            assert s is not None and s.comp is not None
            for _ in range(_KICK_LIMIT):
                # completions are in TX-ring order: done once the producer passed seq
                if (int(s.comp.prod[0]) - seq - 1) & M32 < 0x80000000:
                    break
                self._kick()
            else:
                return -1
        return self._bounce[self._bounce_k]

    def _kick(self) -> None:
        s = self.tx_sock
        if s is None or s.tx is None:
            return
        t = s.tx
        if not t.flags[0] & XDP_RING_NEED_WAKEUP:
            self._tx_unkicked = False  # the driver polls the TX ring itself
            return
        for _ in range(_KICK_LIMIT):
            rc = s.kick_tx()
            if rc not in (0, *_RETRY):
                self.counters["tx_kick_errors"] += 1
                break
            if t.cons[0] == self._tx_prod:
                self._tx_unkicked = False
                break

    # ---- events ------------------------------------------------------------------------
    def harvest(self, out: EventArray, max_events: int) -> int:
        """RX events, then TX completions, then SW events, up to ``max_events``.

        Cost per call: ~17 numpy ops per RX queue with frames (2 to look for hardware
        stamps, 3 more when there are some), a few per TX batch;
        no per-packet Python work. Publishes ring consumers after reading entries.
        """
        if self._closed:
            return 0
        n = 0
        for q, s in self.rx_socks:
            if n >= max_events:
                break
            n += self._harvest_rx(q, s, out, n, max_events - n)
        if self.tx_sock is not None and n < max_events:
            n += self._harvest_tx(out, n, max_events - n)
        while self._sw and n < max_events:
            out[n] = (_SW, 0, 0, 0, 0, 0, self._sw.popleft(), 0)
            n += 1
        return n

    def _harvest_rx(self, q: int, s: XskSocket, out: EventArray, n: int, room: int) -> int:
        r = s.rx
        assert r is not None
        prod = r.prod[0]
        cons = self._rx_cons[q]
        k = min((prod - cons) & M32, room)
        if k <= 0:
            return 0
        if k <= _SCALAR_RX:
            return self._harvest_rx_scalar(q, r, out, n, k, cons)
        a = cons & r.mask
        if a + k <= r.size:
            d = r.desc[a:a + k]
        else:
            d = r.desc[(cons + np.arange(k, dtype=np.int64)) & r.mask]
        raw = d["addr"]
        lens = d["len"].copy()
        base = raw & np.uint64(ADDR_MASK)
        ofs = raw >> np.uint64(OFFSET_SHIFT)
        data = (base + ofs).astype(np.intp)
        ids = self._rx_id[(base >> np.uint64(11)).astype(np.intp)]
        umem = self.pd.umem
        assert umem is not None
        meta = umem[(data - 8)[:, None] + np.arange(8)].view("<i8")[:, 0]
        mcast = umem[data] & 1
        self._ts_age -= 1
        if self._ts_age <= 0:
            self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                            - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self._ts_age = 256
        rec = out[n:n + k]
        rec["type"] = 0
        rec["subtype"] = 0
        flags = 1 | (mcast.astype(np.uint16) << 3)
        ts = np.where(meta > 0, meta + self._ts_off, 0)
        hw = meta < 0  # bit 63: a hardware stamp (kfunc program only)
        if hw.any():
            self.clock_source = "hw"
            ts = np.where(hw, meta & _HW_TS_MASK, ts)
            flags |= hw.astype(np.uint16) << 8
        rec["flags"] = flags
        rec["q_id"] = q
        rec["ofs"] = ofs
        rec["rq_id"] = ids
        rec["len"] = lens
        rec["ts_ns"] = ts
        r.cons[0] = (cons + k) & M32
        self._rx_cons[q] = (cons + k) & M32
        self._q_out[q] -= k
        self.counters["rx_packets"] += k
        self.counters["rx_bytes"] += int(lens.sum())
        return k

    def _harvest_rx_scalar(self, q: int, r: "Ring", out: EventArray, n: int, k: int,
                           cons: int) -> int:
        """Few frames: memoryview reads and one record store each (no numpy calls)."""
        dq, di, ids, umem = r.desc_q, r.desc_i, self._rx_id_mv, self._umem_mv
        self._ts_age -= 1
        if self._ts_age <= 0:
            self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                            - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self._ts_age = 256
        off = self._ts_off
        mask = r.mask
        nbytes = 0
        for i in range(k):
            j = (cons + i) & mask
            raw = dq[2 * j]
            ln = di[4 * j + 2]
            base = raw & ADDR_MASK
            ofs = raw >> OFFSET_SHIFT
            data = base + ofs
            meta = int.from_bytes(umem[data - 8:data], "little", signed=True)
            if meta >= 0:
                out[n + i] = (0, 0, 1 | ((umem[data] & 1) << 3), q, ofs, ids[base >> 11], ln,
                              meta + off if meta > 0 else 0)
            else:  # bit 63: a hardware stamp
                self.clock_source = "hw"
                out[n + i] = (0, 0, 1 | ((umem[data] & 1) << 3) | RX_FLAG_HW_TS, q, ofs,
                              ids[base >> 11], ln, meta & _HW_TS_MASK)
            nbytes += ln
        cons = (cons + k) & M32
        r.cons[0] = cons
        self._rx_cons[q] = cons
        self._q_out[q] -= k
        self.counters["rx_packets"] += k
        self.counters["rx_bytes"] += nbytes
        return k

    def _harvest_tx(self, out: EventArray, n: int, room: int) -> int:
        s = self.tx_sock
        assert s is not None and s.comp is not None
        if self._tx_unkicked or (s.tx is not None and s.tx.cons[0] != self._tx_prod):
            self._kick()
        c = s.comp
        prod = c.prod[0]
        avail = (prod - self._comp_cons) & M32
        used = 0
        start = n
        runs = self._runs
        while runs and n < start + room:
            kind, n_core, n_xdp = runs[0]
            if kind == 0:
                m = min(n_core, avail - used)
                if m <= 0:
                    break
                used += m
                n, left = self._tx_events(out, n, start + room, _TX, 0, m)
                done = m - left
                used -= left
                runs[0][1] -= done
                runs[0][2] -= done
                self.counters["tx_packets"] += done
                if runs[0][1] == 0:
                    runs.popleft()
                if left:
                    break
            elif kind == 2:  # merged packet: n_core descriptors, one xdp descriptor
                if avail - used < 1:
                    break
                n2, left = self._tx_events(out, n, start + room, _TX, 0, n_core)
                if left:
                    break  # no room: retry next harvest
                n = n2
                used += 1
                runs.popleft()
                self.counters["tx_packets"] += 1
            else:  # software-failed packet
                sub = int(TxErrorType.TOO_BIG) if kind == 1 else int(TxErrorType.BUS)
                n2, left = self._tx_events(out, n, start + room, _TXERR, sub, n_core)
                if left:
                    break
                n = n2
                runs.popleft()
                self.counters["tx_error_drops"] += 1
        if used:
            self._comp_cons = (self._comp_cons + used) & M32
            c.cons[0] = self._comp_cons
        return n - start

    def _tx_events(self, out: EventArray, n: int, limit: int, etype: int, sub: int,
                   count: int) -> tuple[int, int]:
        """Emit events covering ``count`` descriptors (≤ 64 each); return (n, left)."""
        q = self.tx_sock.queue if self.tx_sock is not None else 0
        while count > 0 and n < limit:
            m = min(count, 64)
            self._tx_done = (self._tx_done + m) & M32
            out[n] = (etype, sub, 0, q, 0, self._tx_done, 0, 0)
            n += 1
            count -= m
        return n, count

    def wait(self, timeout_ns: int | None) -> None:
        """Block in ``poll()`` on the RX sockets (≤ 1 ms while TX is outstanding)."""
        if self._sw or self._closed:
            return
        ms = -1 if timeout_ns is None else max(0, timeout_ns // 1_000_000)
        if self._runs:
            self._kick()
            ms = 1 if ms < 0 else min(ms, 1)
        if self._poller is None:
            time.sleep((ms if ms >= 0 else 1) / 1000)
            return
        self._poller.poll(ms)

    def sw_event(self, data: int) -> bool:
        if len(self._sw) >= self.evq:
            return False
        self._sw.append(data)
        return True

    def stats(self) -> dict[str, int]:
        """Own counters plus XDP_STATISTICS of every socket mapped to ``*_drops``."""
        raw: dict[str, int] = collections.Counter()
        for s in self.socks.values():
            raw.update(s.statistics())
        out = dict(self.counters)
        empty = raw.get("rx_fill_ring_empty_descs", 0)
        out["rx_nodesc_drops"] = empty
        out["rx_trunc_drops"] = max(0, raw.get("rx_dropped", 0) - empty)
        out["rx_ring_full_drops"] = raw.get("rx_ring_full", 0)
        out["rx_invalid_desc_drops"] = raw.get("rx_invalid_descs", 0)
        out["tx_invalid_desc_drops"] = raw.get("tx_invalid_descs", 0)
        for k, v in raw.items():
            out["xdp_" + k] = v
        out["zero_copy"] = int(self.zerocopy)
        out["queues"] = len(self.socks)
        return out

    # ---- lifecycle ------------------------------------------------------------------------
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
            if s in self.pd.sockets:
                self.pd.sockets.remove(s)
            s.close()
        self.socks.clear()
        self.rx_socks.clear()
        self._published = False
        self.tx_sock = None
        self._poller = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_sockets()
        self.prog.free_target(self.target)
        self.pd.vis.discard(self)
