"""The shared VI under :mod:`efvi.apps.udp`'s endpoints: one :class:`UdpStack` per
process, adapter URL (interface and queue) and network namespace.

A stack owns the driver, PD, memory region and VI, and its buffers: RX buffer ids
``0..nrx-1`` (reference-counted: a multicast datagram joined by several endpoints is
queued to each and freed with the last release — user-space replication, because an
AF_XDP queue has one socket), TX ids ``nrx..nrx+ntx-1``, one contiguous jumbo TX area
and the PIO slots. :meth:`UdpStack.pump` is the dispatcher: one poll of the VI, each
RX frame demultiplexed by its destination ``(ip, port)`` — the filter it matched —
into the endpoint queues, SOP/CONT chains (jumbo frames over several buffers)
reassembled, TX completions returned to their pools (and their timestamps to the
endpoint that sent), free RX buffers reposted with one doorbell. Every frame that
reaches no endpoint is counted by cause. Endpoints that share a stack must be used
from one thread (ef_vi's rule for a VI).

:meth:`UdpStack.fileno` is the readiness fd (the AF_XDP or packet socket; on ``sim``
an eventfd written by the sim's delivery).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, ClassVar

from efvi.adapters import parse_url
from efvi.apps.udp_frames import HDR, IP4, PIO_SLOT, UDP
from efvi.constants import PIO_SIZE, PKT_BUF_SIZE
from efvi.driver import Driver, ProtectionDomain
from efvi.errors import SetupError
from efvi.events import EventType, RxFlags
from efvi.filters import FilterSpec
from efvi.memory import MemoryRegion
from efvi.netutil import current_netns_inode
from efvi.vi import FilterCookie, ViFlags, VirtualInterface

if TYPE_CHECKING:
    from efvi.adapters.base import Adapter
    from efvi.apps.udp import UdpEndpoint
    from efvi.apps.udp_send import UdpSender

__all__ = ["MAX_STALL", "UdpStack"]

_RX = int(EventType.RX)
_TX = int(EventType.TX)
_DISCARD = int(EventType.RX_DISCARD)
_TXERR = int(EventType.TX_ERROR)
_NODESC_TRUNC = int(EventType.RX_NO_DESC_TRUNC)
_SOP = int(RxFlags.SOP)
_CONT = int(RxFlags.CONT)
MAX_STALL = 2000  # pumps a blocking send waits for a TX buffer before giving up
_JUMBO_BUFS = 5  # contiguous buffers of the jumbo TX area (10 KiB ≥ 9216 + headers)


class UdpStack:
    """The VI (and its buffers) every endpoint of this process on one URL shares.

    Control path: :meth:`get` creates or reuses; endpoints register their receive keys.
    Data path: :meth:`pump` polls the VI once, demultiplexes RX into endpoint queues,
    frees completed TX buffers and reposts RX buffers (one doorbell per pump).
    """

    _stacks: ClassVar[dict[tuple[str, str, int | None, int], UdpStack]] = {}

    @classmethod
    def get(cls, url: str, *, rx_buffers: int = 1024, tx_buffers: int = 256,
            tx_timestamps: bool = False) -> UdpStack:
        """The stack of ``url``'s interface and queue in this namespace (options of a
        later URL are ignored when one exists: the first opener configured it; asking
        for ``tx_timestamps`` from a stack opened without them raises SetupError)."""
        scheme, iface, queue, _opts = parse_url(url)
        key = (scheme, iface or "", queue, current_netns_inode())
        st = cls._stacks.get(key)
        if st is None or st.closed:
            st = cls(url, rx_buffers=rx_buffers, tx_buffers=tx_buffers,
                     tx_timestamps=tx_timestamps)
            st._key = key
            cls._stacks[key] = st
        elif tx_timestamps and not st.tx_timestamps:
            raise SetupError(f"the endpoints already open on {url} were opened without "
                             "TX timestamps (they share one VI)", errno=errno.EBUSY,
                             hint="open the first endpoint on this URL with "
                                  "tx_timestamps=True")
        return st

    def __init__(self, url: str, *, rx_buffers: int = 1024, tx_buffers: int = 256,
                 tx_timestamps: bool = False) -> None:
        self.url = url
        self._key: tuple[str, str, int | None, int] | None = None
        self.closed = False
        self.driver = Driver.open(url)
        try:
            self.adapter: Adapter = self.driver.adapter
            self.info = self.driver.interface
            self.caps = self.driver.capabilities
            self.pd = ProtectionDomain(self.driver)
            rxq = 1 << max(6, (rx_buffers // 2 - 1).bit_length())
            txq = 1 << max(6, (tx_buffers - 1).bit_length())
            self.nrx, self.ntx = rx_buffers, tx_buffers
            # RX buffers, TX buffers, then one contiguous jumbo TX area (5 buffers)
            self.mr = MemoryRegion(self.pd, (rx_buffers + tx_buffers + _JUMBO_BUFS)
                                   * PKT_BUF_SIZE)
            self.vi = VirtualInterface(self.pd, rxq=min(rxq, 4096), txq=min(txq, 4096),
                                       flags=ViFlags.TX_TIMESTAMPS if tx_timestamps else 0)
        except BaseException:
            self.driver.close()
            raise
        self.mv = self.mr.mv
        self.buf = self.mr.buf
        self.base = self.mr.dma_base
        # sim: an eventfd the stack writes when a pump found more than it handed out
        self._efd = -1
        # RX: buffer ids 0..nrx-1; TX: nrx..nrx+ntx-1
        self._rx_free: list[int] = list(range(rx_buffers))
        self._refs = [0] * rx_buffers
        self._tx_free: list[int] = list(range(rx_buffers, rx_buffers + tx_buffers))
        self.endpoints: dict[tuple[int, int], list[UdpEndpoint]] = {}
        self._filters: dict[str, tuple[FilterCookie, int]] = {}
        self._chain: list[tuple[int, int, int]] = []  # (id, ofs, bytes in it) of a chain
        self._chain_buf = bytearray()
        self.counters = dict.fromkeys(
            ("rx_datagrams", "tx_datagrams", "rx_not_udp_drops", "rx_no_endpoint_drops",
             "rx_short_drops", "rx_discard_drops", "rx_chain_drops", "tx_error_drops",
             "tx_no_buffer_drops", "rx_jumbo", "tx_pio", "tx_pio_fallbacks"), 0)
        self.users = 0
        self.mtu = self.info.mtu
        self.jumbo_id = rx_buffers + tx_buffers
        self._jumbo_free = True
        #: TX completions carry each frame's transmit time (ViFlags.TX_TIMESTAMPS)
        self.tx_timestamps = tx_timestamps
        #: with TX timestamps: the endpoint that sent from each TX buffer id
        #: PIO slots (request id = pio_id_base + slot): free list and in-flight flags
        self.pio_id_base = self.jumbo_id + 1
        self.pio_free = list(range(PIO_SIZE // PIO_SLOT - 1, -1, -1))
        self.pio_busy = [False] * (PIO_SIZE // PIO_SLOT)
        self.tx_owner: list[UdpSender | None] = [None] * (self.pio_id_base
                                                           + len(self.pio_busy))
        # xdp sends one 2 KiB UMEM chunk per frame
        tx_max = PKT_BUF_SIZE if self.caps.adapter == "xdp" else _JUMBO_BUFS * PKT_BUF_SIZE
        self.max_payload = min(self.mtu - 28, tx_max - HDR)
        self.refill()

    # ---- control ---------------------------------------------------------------------
    def add_filter(self, spec: FilterSpec) -> None:
        key = str(spec)
        have = self._filters.get(key)
        if have is not None:
            self._filters[key] = (have[0], have[1] + 1)
            return
        self._filters[key] = (self.vi.filter_add(spec), 1)

    def del_filter(self, spec: FilterSpec) -> None:
        key = str(spec)
        have = self._filters.get(key)
        if have is None:
            return
        if have[1] > 1:
            self._filters[key] = (have[0], have[1] - 1)
            return
        del self._filters[key]
        if not self.vi.closed:
            self.vi.filter_del(have[0])

    def fileno(self) -> int:
        """An fd readable when the VI has events (see the module doc)."""
        hw = self.vi._hw
        for attr in ("rx_socks",):  # xdp: the (first) RX queue's AF_XDP socket
            socks = getattr(hw, attr, None)
            if socks:
                return int(socks[0][1].fd)
        s = getattr(hw, "_s", None)  # packet: the packet socket
        if s is not None:
            return int(s.fileno())
        if self._efd < 0:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            if hasattr(hw, "on_event"):  # sim: events queued or a doorbell rung
                hw.on_event = self._sim_signal
                fab = getattr(getattr(hw, "port", None), "fabric", None)
                if fab is not None:
                    fab.wakers.add(self._sim_signal)
                    self._fabric = fab
        return self._efd

    def _sim_signal(self) -> None:
        if self._efd >= 0:
            try:
                os.eventfd_write(self._efd, 1)
            except BlockingIOError:
                pass

    def _sim_clear(self) -> None:
        if self._efd >= 0:
            try:
                os.eventfd_read(self._efd)
            except BlockingIOError:
                pass

    def close_endpoint(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._key is not None and UdpStack._stacks.get(self._key) is self:
            del UdpStack._stacks[self._key]
        if self._efd >= 0:
            fab = getattr(self, "_fabric", None)
            if fab is not None:
                fab.wakers.discard(self._sim_signal)
            os.close(self._efd)
            self._efd = -1
        self.driver.close()

    # ---- data path -------------------------------------------------------------------
    def refill(self) -> None:
        """Post free RX buffers while the ring has room; one doorbell. Cost: one
        ``receive_init`` per buffer."""
        free = self._rx_free
        if not free:
            return
        vi = self.vi
        room = vi.receive_space()
        base = self.base
        k = 0
        while free and k < room:
            i = free.pop()
            vi.receive_init(base + i * PKT_BUF_SIZE, i)
            k += 1
        if k:
            vi.receive_push()

    def release(self, i: int) -> None:
        """Drop one reference to RX buffer ``i``; free it when the last one goes."""
        r = self._refs[i] - 1
        self._refs[i] = r
        if r <= 0:
            self._refs[i] = 0
            self._rx_free.append(i)

    def pump(self, max_events: int = 64) -> int:
        """Poll the VI once: RX into endpoint queues, TX completions freed, RX buffers
        reposted. Returns the number of events. Never raises for per-packet conditions.
        Cost: one harvest, one ``tolist`` and ~2 µs of Python per datagram."""
        if self._rx_free:
            self.refill()
        b = self.vi.poll(max_events)
        n = len(b)
        if not n:
            return 0
        for t, _sub, fl, _q, ofs, rq, ln, ts in b.records.tolist():
            if t == _RX:
                if fl & _CONT or self._chain:
                    self._chain_piece(rq, ofs, ln, ts, fl)
                else:
                    self.deliver(rq, ofs, ln, ts)
            elif t == _TX or t == _TXERR:
                for i in self.vi._unbundle_to(rq).tolist():
                    if self.tx_timestamps:
                        ep = self.tx_owner[i]
                        if ep is not None:
                            self.tx_owner[i] = None
                            ep._tx_inflight -= 1
                            if t == _TX and ts:
                                ep.last_tx_ts_ns = ts
                    if i == self.jumbo_id:
                        self._jumbo_free = True
                    elif i >= self.pio_id_base:
                        self.pio_busy[i - self.pio_id_base] = False
                    else:
                        self._tx_free.append(i)
                if t == _TXERR:
                    self.counters["tx_error_drops"] += 1
            elif t == _DISCARD:
                self.counters["rx_discard_drops"] += 1
                self._chain_abort()
                self._rx_free.append(rq)
            elif t == _NODESC_TRUNC:
                self._chain_abort()
        if self._rx_free:
            self.refill()
        return n

    def deliver(self, i: int, ofs: int, ln: int, ts: int) -> None:
        """Demultiplex one frame in buffer ``i`` to the endpoint(s) it was filtered for."""
        mv = self.mv
        b = i * PKT_BUF_SIZE + ofs
        if ln < HDR or mv[b + 12] != 8 or mv[b + 13] != 0:
            self.counters["rx_not_udp_drops"] += 1
            self._rx_free.append(i)
            return
        vihl, _tot, frag, proto, src, dst = IP4.unpack_from(mv, b + 14)
        hl = (vihl & 0xF) * 4
        if proto != 17 or frag & 0x3FFF or vihl >> 4 != 4 or hl < 20:
            self.counters["rx_not_udp_drops"] += 1
            self._rx_free.append(i)
            return
        u = b + 14 + hl
        sport, dport, ulen = UDP.unpack_from(mv, u)
        plen = ulen - 8
        if plen < 0 or u + ulen > b + ln:
            self.counters["rx_short_drops"] += 1
            self._rx_free.append(i)
            return
        eps = self.endpoints.get((dst, dport))
        if not eps:
            self.counters["rx_no_endpoint_drops"] += 1
            self._rx_free.append(i)
            return
        self.counters["rx_datagrams"] += 1
        item = (i, u + 8, plen, ts, src, sport)
        if len(eps) == 1:
            self._refs[i] = 1
            eps[0]._q.append(item)
        else:
            self._refs[i] = len(eps)
            for ep in eps:
                ep._q.append(item)

    # -- SOP/CONT chains (jumbo frames over several buffers) --
    def _chain_piece(self, i: int, ofs: int, ln: int, ts: int, fl: int) -> None:
        ch = self._chain
        if fl & _SOP:
            if ch:
                self._chain_abort()
            got = ln
        else:
            if not ch:  # a continuation without its start
                self.counters["rx_chain_drops"] += 1
                self._rx_free.append(i)
                return
            got = ln - sum(c[2] for c in ch)
        ch.append((i, ofs, got))
        if fl & _CONT:
            return
        # the last piece: copy the frame into one buffer-like area and deliver it
        total = sum(c[2] for c in ch)
        data = bytearray(total)
        at = 0
        for j, o, m in ch:
            s = j * PKT_BUF_SIZE + o
            data[at:at + m] = self.mv[s:s + m]
            at += m
            self._rx_free.append(j)
        ch.clear()
        self.counters["rx_jumbo"] += 1
        self._deliver_bytes(data, ts)

    def _chain_abort(self) -> None:
        if self._chain:
            self.counters["rx_chain_drops"] += 1
            for j, _, _ in self._chain:
                self._rx_free.append(j)
            self._chain.clear()

    def _deliver_bytes(self, frame: bytearray, ts: int) -> None:
        """A reassembled frame: parsed like :meth:`deliver`, the payload copied out."""
        if len(frame) < HDR or frame[12:14] != b"\x08\x00":
            self.counters["rx_not_udp_drops"] += 1
            return
        vihl, _tot, frag, proto, src, dst = IP4.unpack_from(frame, 14)
        hl = (vihl & 0xF) * 4
        if proto != 17 or frag & 0x3FFF:
            self.counters["rx_not_udp_drops"] += 1
            return
        sport, dport, ulen = UDP.unpack_from(frame, 14 + hl)
        if ulen < 8 or 14 + hl + ulen > len(frame):
            self.counters["rx_short_drops"] += 1
            return
        eps = self.endpoints.get((dst, dport))
        if not eps:
            self.counters["rx_no_endpoint_drops"] += 1
            return
        self.counters["rx_datagrams"] += 1
        payload = memoryview(frame)[14 + hl + 8:14 + hl + ulen]
        for ep in eps:
            ep._q.append((-1, payload, ulen - 8, ts, src, sport))

    def take_tx(self, nbytes: int = 0) -> int:
        """A free TX buffer id (reaping completions if needed), or -1 after a bounded
        wait. ``nbytes`` > 2048 asks for the jumbo area. Cost: a list pop when one is
        free."""
        if nbytes > PKT_BUF_SIZE:
            for _ in range(MAX_STALL):
                if self._jumbo_free:
                    self._jumbo_free = False
                    return self.jumbo_id
                self.pump()
            self.counters["tx_no_buffer_drops"] += 1
            return -1
        free = self._tx_free
        if free:
            return free.pop()
        for _ in range(MAX_STALL):
            self.pump()
            if free:
                return free.pop()
        self.counters["tx_no_buffer_drops"] += 1
        return -1

    def stats(self) -> dict[str, int]:
        s = self.vi.stats() if not self.vi.closed else {}
        s.update(self.counters)
        s["drops"] = sum(v for k, v in s.items() if k.endswith("_drops"))
        return s
