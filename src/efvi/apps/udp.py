"""Accelerated UDP endpoints: a socket-like API over a VI (Onload's idea, ef_vi's parts).

An :class:`UdpEndpoint` is opened on any adapter URL with a local ``(ip, port)``,
optional multicast groups and an optional remote. Only its flows are steered to the
VI (``ip4_local``/``ip4_full`` filters); everything else stays with the kernel.

Underneath, every endpoint of one process on one adapter URL (interface and queue)
shares one :class:`UdpStack`: one driver, PD, memory region and VI. Arriving datagrams
are demultiplexed by the filter they matched — their destination ``(ip, port)`` — and
a multicast group joined by several endpoints is delivered to each (the one buffer is
shared, by reference count: user-space replication, because an AF_XDP queue has one
socket). Endpoints that share a stack must be used from one thread (ef_vi's rule for
a VI); endpoints on different URLs share nothing.

Receive:

* :meth:`UdpEndpoint.recv` → ``(payload, ts_ns, (src_ip, src_port))`` or ``None`` when
  nothing is waiting (``timeout`` 0, the default) — ``payload`` is a memoryview into
  the packet buffer, valid until the next ``recv`` on that endpoint (then the buffer
  goes back to the NIC);
* :meth:`UdpEndpoint.recv_batch` → a :class:`UdpBatch` of numpy columns (payload
  offset/length into a preallocated array, ``ts_ns``, source address and port);
* iteration (``for payload, ts, src in ep``) blocks for each datagram;
* :meth:`UdpEndpoint.fileno` is readable when events are waiting (the AF_XDP or packet
  socket; on ``sim`` an eventfd written by the sim's delivery), so ``selectors``,
  ``select.poll`` and ``asyncio`` work; :meth:`UdpEndpoint.arecv` and ``async for`` use
  ``loop.add_reader``. As with edge-triggered readiness, drain with ``recv()`` until
  it returns None before waiting again: one wake-up may cover several datagrams.

Send: :meth:`UdpEndpoint.sendto` / :meth:`UdpEndpoint.send` write the datagram after a
pre-built Ethernet/IPv4/UDP header template (destination MAC from the neighbour table,
resolved by asking the kernel to ARP — netlink ``NTF_USE`` — when missing); the IPv4
checksum is the template's precomputed sum plus the length, the UDP checksum the
pseudo-header sum plus one ``int.from_bytes`` over the payload.

PIO: a connected endpoint opened with ``pio=True`` on an adapter with PIO (sim, xdp)
keeps its header template in two slots of the VI's PIO area and :meth:`UdpEndpoint.send`
writes only the payload, lengths and checksums there, then one ``transmit_pio`` (one
doorbell); a slot is reused only after its TX completion (else the send takes the
DMA-buffer path, counted in ``tx_pio_fallbacks``). ``sendto`` another address,
``send_batch`` and payloads over 1472 bytes use TX buffers as usual.

TX timestamps: open with ``tx_timestamps=True`` (adapters declaring
``capabilities.tx_timestamps``: sim, packet — not xdp, whose veth and generic drivers
have no AF_XDP TX metadata) and each datagram's transmit time comes back with its TX
completion; :attr:`UdpEndpoint.last_tx_ts_ns` holds the newest one and
:meth:`UdpEndpoint.wait_sent` pumps until this endpoint's sends have completed.

Multicast: each endpoint keeps a kernel UDP socket bound to its port (so the kernel
answers nothing with ICMP port-unreachable and no other program takes the port) that
joins its groups (IGMP) with ``IP_MULTICAST_ALL`` off and a drop-everything socket
filter (on ``packet``, which only sniffs, the kernel's copies die there).

Drops are counted by cause in :meth:`UdpEndpoint.stats` (the VI's ``*_drops`` plus the
stack's ``rx_not_udp_drops``, ``rx_no_endpoint_drops``, ``rx_short_drops``,
``rx_discard_drops``, ``rx_chain_drops``, ``tx_error_drops``).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from efvi.adapters import parse_url
from efvi.constants import PIO_ALIGN, PIO_SIZE, PKT_BUF_SIZE
from efvi.driver import Driver, ProtectionDomain
from efvi.errors import ClosedError, EfviError, SetupError
from efvi.events import EventType, RxFlags
from efvi.filters import FilterSpec
from efvi.memory import MemoryRegion
from efvi.netutil import current_netns_inode
from efvi.vi import FilterCookie, ViFlags, VirtualInterface
from efvi.wire.checksum import ones_sum

if TYPE_CHECKING:
    from efvi.adapters.base import Adapter

__all__ = ["UdpBatch", "UdpEndpoint", "UdpStack", "open_endpoint"]

_RX = int(EventType.RX)
_TX = int(EventType.TX)
_DISCARD = int(EventType.RX_DISCARD)
_TXERR = int(EventType.TX_ERROR)
_NODESC_TRUNC = int(EventType.RX_NO_DESC_TRUNC)
_SOP = int(RxFlags.SOP)
_CONT = int(RxFlags.CONT)
_ETH_IP = struct.Struct("!H")
_IP4 = struct.Struct("!BxHxxHxBxxII")  # ver/ihl, total length, frag, proto, src, dst
_UDP = struct.Struct("!HHH")  # sport, dport, length
_U16 = struct.Struct("!H")
_HDR = 42  # Ethernet + IPv4 (no options) + UDP
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
SO_ATTACH_FILTER = 26
IFF_MULTICAST = 0x1000
_NTF_USE = 0x01
_NUD_NONE = 0x00
_RTM_NEWNEIGH = 28
_NDA_DST = 1
_MAX_STALL = 2000  # pumps a blocking send waits for a TX buffer before giving up
#: one PIO slot: a whole 1500-MTU frame (1514 bytes) rounded to the PIO alignment
_PIO_SLOT = (_HDR + 1472 + PIO_ALIGN - 1) // PIO_ALIGN * PIO_ALIGN
_JUMBO_BUFS = 5  # contiguous buffers of the jumbo TX area (10 KiB ≥ 9216 + headers)


def _ip_int(text: str, what: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except (ipaddress.AddressValueError, ValueError):
        raise SetupError(f"{what} {text!r} is not an IPv4 address", errno=errno.EINVAL,
                         hint="give a dotted quad such as 198.18.0.1") from None


def _check_port(port: object, what: str) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise SetupError(f"{what} {port!r} is not a UDP port", errno=errno.EINVAL,
                         hint="ports are integers 1..65535")
    return port


def multicast_mac(group: int) -> bytes:
    """The Ethernet address of IPv4 group ``group`` (RFC 1112: 01:00:5e + low 23 bits)."""
    return bytes((0x01, 0x00, 0x5E, (group >> 16) & 0x7F, (group >> 8) & 0xFF, group & 0xFF))


@dataclass
class UdpBatch:
    """Datagrams of one :meth:`UdpEndpoint.recv_batch` as numpy columns (no per-datagram
    object). Payload *i* is ``data[offset[i]:offset[i] + length[i]]``; the arrays are
    the endpoint's, valid until its next ``recv_batch``."""

    data: npt.NDArray[np.uint8]
    offset: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    src_ip: npt.NDArray[np.uint32]
    src_port: npt.NDArray[np.uint16]

    def __len__(self) -> int:
        return int(self.length.shape[0])

    def payload(self, i: int) -> memoryview:
        """Datagram ``i``'s payload (a view; convenience, not for the fast path)."""
        o = int(self.offset[i])
        return memoryview(self.data)[o:o + int(self.length[i])]  # type: ignore[arg-type]


class _TxTemplate:
    """Headers of one destination, prepared once (control path)."""

    __slots__ = ("hdr", "ip_sum", "udp_sum")

    def __init__(self, dst_mac: bytes, src_mac: bytes, src: int, dst: int, sport: int,
                 dport: int, ttl: int) -> None:
        eth = dst_mac + src_mac + b"\x08\x00"
        ip = struct.pack("!BBHHHBBHII", 0x45, 0, 0, 0, 0x4000, ttl, 17, 0, src, dst)
        udp = struct.pack("!HHHH", sport, dport, 0, 0)
        self.hdr = eth + ip + udp
        self.ip_sum = ones_sum(ip)  # without the total length (added per datagram)
        # pseudo-header (addresses, protocol) and the ports; the length is added twice
        self.udp_sum = ones_sum(struct.pack("!IIHHHH", src, dst, 17, sport, dport, 0))


def _drop_all(sock: socket.socket) -> None:
    """Attach a one-instruction classic BPF filter (``ret #0``): the socket keeps its port
    and group memberships but queues nothing."""
    import ctypes
    insn = ctypes.create_string_buffer(struct.pack("<HBBI", 0x06, 0, 0, 0), 8)
    prog = struct.pack("<HxxxxxxQ", 1, ctypes.addressof(insn))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def _arp_probe(ip: str, ifindex: int) -> None:
    """Ask the kernel to resolve ``ip`` on ``ifindex`` (``ip neigh replace IP dev IF use``:
    RTM_NEWNEIGH with NTF_USE), without sending anything ourselves."""
    from efvi import netutil
    nd = struct.pack("=BxxxiHBB", socket.AF_INET, ifindex, _NUD_NONE, _NTF_USE, 0)
    nd += netutil.nla(_NDA_DST, socket.inet_aton(ip))
    try:
        with netutil.Netlink() as nl:
            nl.request(_RTM_NEWNEIGH, netutil.NLM_F_REQUEST | netutil.NLM_F_ACK
                       | 0x100 | 0x400, nd)  # NLM_F_REPLACE | NLM_F_CREATE
    except (EfviError, OSError):
        pass


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
        self.pio_free = list(range(PIO_SIZE // _PIO_SLOT - 1, -1, -1))
        self.pio_busy = [False] * (PIO_SIZE // _PIO_SLOT)
        self.tx_owner: list[UdpEndpoint | None] = [None] * (self.pio_id_base
                                                             + len(self.pio_busy))
        # xdp sends one 2 KiB UMEM chunk per frame
        tx_max = PKT_BUF_SIZE if self.caps.adapter == "xdp" else _JUMBO_BUFS * PKT_BUF_SIZE
        self.max_payload = min(self.mtu - 28, tx_max - _HDR)
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
        if ln < _HDR or mv[b + 12] != 8 or mv[b + 13] != 0:
            self.counters["rx_not_udp_drops"] += 1
            self._rx_free.append(i)
            return
        vihl, _tot, frag, proto, src, dst = _IP4.unpack_from(mv, b + 14)
        hl = (vihl & 0xF) * 4
        if proto != 17 or frag & 0x3FFF or vihl >> 4 != 4 or hl < 20:
            self.counters["rx_not_udp_drops"] += 1
            self._rx_free.append(i)
            return
        u = b + 14 + hl
        sport, dport, ulen = _UDP.unpack_from(mv, u)
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
        if len(frame) < _HDR or frame[12:14] != b"\x08\x00":
            self.counters["rx_not_udp_drops"] += 1
            return
        vihl, _tot, frag, proto, src, dst = _IP4.unpack_from(frame, 14)
        hl = (vihl & 0xF) * 4
        if proto != 17 or frag & 0x3FFF:
            self.counters["rx_not_udp_drops"] += 1
            return
        sport, dport, ulen = _UDP.unpack_from(frame, 14 + hl)
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
            for _ in range(_MAX_STALL):
                if self._jumbo_free:
                    self._jumbo_free = False
                    return self.jumbo_id
                self.pump()
            self.counters["tx_no_buffer_drops"] += 1
            return -1
        free = self._tx_free
        if free:
            return free.pop()
        for _ in range(_MAX_STALL):
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


class UdpEndpoint:
    """A UDP endpoint whose datagrams bypass the kernel (see the module doc).

    ``local``: ``(ip, port)``, or a port (the interface's first IPv4 address), or
    ``(None, port)`` with ``groups`` (receive only the groups). ``groups``: IPv4
    multicast groups to join. ``remote``: ``(ip, port)`` to connect to (then
    :meth:`send` works and only that peer's datagrams are received). ``dst_mac``:
    the next hop's MAC when the neighbour table cannot give it. ``tx_timestamps``:
    stamp every send (see :attr:`last_tx_ts_ns`; the adapter must declare
    ``capabilities.tx_timestamps``, else UnsupportedError). ``pio``: :meth:`send` to
    the connected remote from PIO-staged frames (see the module doc; the adapter
    must declare ``capabilities.pio``, else UnsupportedError).
    """

    def __init__(self, url: str, local: tuple[str | None, int] | int,
                 *, groups: Iterable[str] = (), remote: tuple[str, int] | None = None,
                 dst_mac: bytes | str | None = None, ttl: int = 64,
                 rx_buffers: int = 1024, tx_buffers: int = 256,
                 tx_timestamps: bool = False, pio: bool = False) -> None:
        if isinstance(local, int):
            local = (None, local)
        lip, lport = local
        self.port = _check_port(lport, "local port")
        self.groups = [_ip_int(g, "multicast group") for g in groups]
        for g, text in zip(self.groups, groups):
            if not ipaddress.IPv4Address(g).is_multicast:
                raise SetupError(f"{text} is not a multicast group (224.0.0.0/4)",
                                 errno=errno.EINVAL,
                                 hint="groups are 224.0.0.0 .. 239.255.255.255")
        self.remote: tuple[str, int] | None = None
        if remote is not None:
            _ip_int(remote[0], "remote address")
            _check_port(remote[1], "remote port")
            self.remote = (remote[0], remote[1])
        self._closed = True
        self._dst_mac = dst_mac
        self._ttl = ttl
        #: transmit time (int ns, the adapter's clock) of this endpoint's newest send
        #: whose TX completion has been seen; 0 until then or without tx_timestamps
        self.last_tx_ts_ns = 0
        self._tx_inflight = 0
        self._pio = pio
        self._pio_slots: list[int] = []  # this endpoint's PIO slots
        self._pio_t: _TxTemplate | None = None  # the template staged in them
        self._pio_k = 0  # the slot the next PIO send uses
        self.stack = UdpStack.get(url, rx_buffers=rx_buffers, tx_buffers=tx_buffers,
                                  tx_timestamps=tx_timestamps)
        st = self.stack
        st.users += 1
        self._ksocks: list[socket.socket] = []
        self._specs: list[FilterSpec] = []
        self._keys: list[tuple[int, int]] = []
        self._q: deque[tuple[int, int | memoryview, int, int, int, int]] = deque()
        self._held = -1
        self._tx: dict[tuple[int, int], _TxTemplate] = {}
        self._src_cache: tuple[int, int, tuple[str, int]] = (-1, -1, ("", 0))
        self._batch_data = np.zeros(0, np.uint8)
        try:
            self._setup(lip)
            if pio:
                self._pio_setup()
        except BaseException:
            self._teardown()
            raise
        self._closed = False

    def _pio_setup(self) -> None:
        """Take two PIO slots of the shared VI (one if only one is left) and stage the
        remote's headers in them (control path)."""
        st = self.stack
        _ = st.vi.pio  # allocates the area; UnsupportedError without PIO
        if not st.pio_free:
            raise SetupError(f"the PIO area of {st.url} is taken by other endpoints "
                             f"({PIO_SIZE} bytes per VI, {_PIO_SLOT} per slot)",
                             errno=errno.ENOSPC, hint="open this endpoint with pio=False")
        for _ in range(2):
            if st.pio_free:
                self._pio_slots.append(st.pio_free.pop())
        if self.remote is not None:
            self._pio_stage(self._template(*self.remote))

    def _pio_stage(self, t: _TxTemplate) -> None:
        pio = self.stack.vi.pio
        for k in self._pio_slots:
            pio.copy(k * _PIO_SLOT, t.hdr)
        self._pio_t = t

    # ---- control path -----------------------------------------------------------------
    def _setup(self, lip: str | None) -> None:
        st = self.stack
        info = st.info
        ifaddr = info.ipv4[0] if info.ipv4 else None
        if lip is None or lip in ("", "0.0.0.0"):
            if self.groups:
                lip = None  # the groups only
            elif ifaddr is None:
                raise SetupError(f"interface {info.name} has no IPv4 address",
                                 errno=errno.EADDRNOTAVAIL,
                                 hint=f"add one (ip addr add ADDR/LEN dev {info.name}) "
                                      "or pass local=(ip, port)")
            else:
                lip = ifaddr
        self.local_ip = lip if lip is not None else (ifaddr or "0.0.0.0")
        self._lip = _ip_int(self.local_ip, "local address")
        if lip is not None and ipaddress.IPv4Address(lip).is_multicast:
            raise SetupError(f"local address {lip} is a multicast group",
                             errno=errno.EINVAL, hint="pass it in groups=[...] instead")
        if lip is not None and info.ipv4 and lip not in info.ipv4:
            raise SetupError(f"{lip} is not an address of {info.name} "
                             f"(it has {', '.join(info.ipv4)})", errno=errno.EADDRNOTAVAIL,
                             hint=f"bind one of {', '.join(info.ipv4)}, or add it: "
                                  f"ip addr add {lip}/24 dev {info.name}")
        if self.groups and st.caps.adapter != "sim":
            from efvi.netutil import link_info
            netns = getattr(st.adapter, "netns", None)
            if netns is not None:
                with netns.enter():
                    li = link_info(info.name)
            else:
                li = link_info(info.name)
            if not li.flags & IFF_MULTICAST:
                raise SetupError(f"interface {info.name} has multicast turned off",
                                 errno=errno.EADDRNOTAVAIL,
                                 hint=f"run: ip link set dev {info.name} multicast on")
        keys: list[tuple[int, int]] = []
        if lip is not None:
            keys.append((self._lip, self.port))
        keys += [(g, self.port) for g in self.groups]
        for k in keys:
            if k[0] not in self.groups and st.endpoints.get(k):
                raise SetupError(
                    f"{ipaddress.IPv4Address(k[0])}:{k[1]} already has an endpoint on "
                    f"{st.url} in this process", errno=errno.EADDRINUSE,
                    hint="close it first, or use another port")
        self._kernel_sockets(lip)
        for k in keys:
            if self.remote is not None and k[0] == self._lip:
                spec = FilterSpec.ip4_full("udp", ipaddress.IPv4Address(k[0]).exploded, k[1],
                                           self.remote[0], self.remote[1])
            else:
                spec = FilterSpec.ip4_local("udp", ipaddress.IPv4Address(k[0]).exploded, k[1])
            if st.caps.adapter == "packet":
                spec = spec.sniff()
            st.add_filter(spec)
            self._specs.append(spec)
            st.endpoints.setdefault(k, []).append(self)
            self._keys.append(k)
        if self.remote is not None:
            self._template(self.remote[0], self.remote[1])

    def _kernel_sockets(self, lip: str | None) -> None:
        """The kept kernel sockets: the port (and IGMP memberships) for this endpoint."""
        st = self.stack
        if st.caps.adapter == "sim":
            return
        netns = getattr(st.adapter, "netns", None)
        ifindex = st.info.ifindex

        def make(bind_ip: str, reuse: bool) -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._ksocks.append(s)
            if reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            except OSError:
                pass
            _drop_all(s)
            try:
                s.bind((bind_ip, self.port))
            except OSError as exc:
                raise SetupError(f"cannot bind UDP {bind_ip}:{self.port} in the kernel: "
                                 f"{exc.strerror}", errno=exc.errno or errno.EADDRINUSE,
                                 hint="another socket (or another process's endpoint) "
                                      "holds the port; close it or use another port"
                                 ) from None
            return s

        def body() -> None:
            if lip is not None:
                make(lip, False)
            for g in self.groups:
                gtext = str(ipaddress.IPv4Address(g))
                s = make(gtext, True)
                mreqn = (socket.inet_aton(gtext) + socket.inet_aton("0.0.0.0")
                         + ifindex.to_bytes(4, "little"))
                try:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                except OSError as exc:
                    raise SetupError(f"cannot join {gtext} on {st.info.name}: {exc.strerror}",
                                     errno=exc.errno or errno.EINVAL,
                                     hint="check the interface has multicast on and a "
                                          "route; net.ipv4.igmp_max_memberships") from None

        if netns is not None:
            with netns.enter():
                body()
        else:
            body()

    def _template(self, ip: str, port: int) -> _TxTemplate:
        dst = _ip_int(ip, "destination address")
        _check_port(port, "destination port")
        st = self.stack
        if ipaddress.IPv4Address(dst).is_multicast:
            mac = multicast_mac(dst)
        elif self._dst_mac is not None:
            from efvi.filters import parse_mac
            mac = parse_mac(self._dst_mac)
        else:
            mac = self._resolve(ip)
        src = self._lip if self._lip and not ipaddress.IPv4Address(self._lip).is_multicast \
            else _ip_int(st.info.ipv4[0], "source") if st.info.ipv4 else 0
        t = _TxTemplate(mac, st.info.mac, src, dst, self.port, port, self._ttl)
        self._tx[(dst, port)] = t
        return t

    def _resolve(self, ip: str) -> bytes:
        st = self.stack
        mac = st.adapter.resolve_neighbour(ip)
        if mac is not None:
            return mac
        if st.caps.adapter != "sim":
            netns = getattr(st.adapter, "netns", None)
            deadline = time.monotonic() + 1.0
            while mac is None and time.monotonic() < deadline:
                if netns is not None:
                    with netns.enter():
                        _arp_probe(ip, st.info.ifindex)
                else:
                    _arp_probe(ip, st.info.ifindex)
                time.sleep(0.02)
                mac = st.adapter.resolve_neighbour(ip)
        if mac is None:
            raise SetupError(f"no MAC address for {ip} on {st.info.name} (ARP got no answer)",
                             errno=errno.EHOSTUNREACH,
                             hint=f"check {ip} is on the link, or add it: ip neigh replace "
                                  f"{ip} lladdr MAC dev {st.info.name} (or pass dst_mac=)")
        return mac

    def connect(self, remote: tuple[str, int]) -> None:
        """Set the default destination for :meth:`send` (control path; receive filters
        stay as they are)."""
        self._check()
        t = self._template(remote[0], remote[1])
        self.remote = (remote[0], remote[1])
        if self._pio_slots:
            self._pio_stage(t)

    # ---- receive ----------------------------------------------------------------------
    def _release_held(self) -> None:
        h = self._held
        if h >= 0:
            self._held = -1
            self.stack.release(h)

    def recv(self, timeout: float | None = 0.0
             ) -> tuple[memoryview, int, tuple[str, int]] | None:
        """The next datagram: ``(payload, ts_ns, (src_ip, src_port))``, or None.

        ``timeout``: 0 polls once (the default), None busy-polls until one arrives,
        else seconds to busy-poll. ``payload`` is valid until the next ``recv``.
        Cost (one datagram waiting): one pump of the VI and ~3 µs of Python.
        """
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        if self._held >= 0:
            self._release_held()
        q = self._q
        if not q:
            st = self.stack
            st.pump()
            if not q:
                if timeout == 0:
                    return None
                end = None if timeout is None else time.perf_counter() + timeout
                pump = st.pump
                while not q:
                    pump()
                    if end is not None and not q and time.perf_counter() >= end:
                        return None
                if self._closed:
                    raise ClosedError("UDP endpoint is closed")
        i, at, n, ts, src, sport = q.popleft()
        c = self._src_cache
        if c[0] == src and c[1] == sport:
            addr = c[2]
        else:
            addr = (socket.inet_ntoa(src.to_bytes(4, "big")), sport)
            self._src_cache = (src, sport, addr)
        if isinstance(at, memoryview):
            return at, ts, addr
        self._held = i
        return self.stack.mv[at:at + n], ts, addr

    def recv_batch(self, max_datagrams: int = 256) -> UdpBatch:
        """Up to ``max_datagrams`` waiting datagrams as numpy columns (:class:`UdpBatch`),
        without waiting. Payloads are copied into the endpoint's preallocated array
        (``max_datagrams`` × 2 KiB), so the buffers go straight back to the NIC.
        Cost: one pump plus ~1 µs per datagram (a slice copy each)."""
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        self._release_held()
        st = self.stack
        q = self._q
        if len(q) < max_datagrams:
            st.pump(max(64, max_datagrams))
        k = min(len(q), max_datagrams)
        stride = PKT_BUF_SIZE
        need = max(max_datagrams, 1) * stride
        if self._batch_data.shape[0] < need:
            self._batch_data = np.zeros(need, np.uint8)
        data = self._batch_data
        length = np.zeros(k, np.int64)
        ts = np.zeros(k, np.int64)
        sip = np.zeros(k, np.uint32)
        sport = np.zeros(k, np.uint16)
        if k:
            items = [q.popleft() for _ in range(k)]
            buf = st.buf
            dmv = memoryview(data)  # type: ignore[arg-type]
            for j, (i, at, n, _t, _s, _p) in enumerate(items):
                o = j * stride
                m = min(n, stride)
                if isinstance(at, memoryview):
                    dmv[o:o + m] = at[:m]
                else:
                    data[o:o + m] = buf[at:at + m]
                    st.release(i)
            cols = list(zip(*[(n, t, s, p) for (_, _, n, t, s, p) in items]))
            length[:] = cols[0]
            ts[:] = cols[1]
            sip[:] = cols[2]
            sport[:] = cols[3]
        return UdpBatch(data, np.arange(k, dtype=np.int64) * stride, length, ts, sip, sport)

    def __iter__(self) -> Iterator[tuple[memoryview, int, tuple[str, int]]]:
        """Blocking iteration (busy-polls); stops when the endpoint is closed."""
        while not self._closed:
            r = self.recv(timeout=None)
            if r is not None:
                yield r

    def fileno(self) -> int:
        """An fd that becomes readable when datagrams (events) are waiting."""
        self._check()
        return self.stack.fileno()

    def pending(self) -> int:
        """Datagrams already taken from the VI and queued for this endpoint."""
        return len(self._q)

    async def arecv(self) -> tuple[memoryview, int, tuple[str, int]]:
        """Await the next datagram (``loop.add_reader`` on :meth:`fileno`)."""
        r = self.recv()
        if r is not None:
            return r
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        while True:
            fut: asyncio.Future[None] = loop.create_future()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(fd, ready)
            try:
                # re-check after registering: a datagram may have come in between
                r = self.recv()
                if r is not None:
                    return r
                await fut
            finally:
                loop.remove_reader(fd)
            self.stack._sim_clear()
            r = self.recv()
            if r is not None:
                return r

    def __aiter__(self) -> AsyncIterator[tuple[memoryview, int, tuple[str, int]]]:
        return self._agen()

    async def _agen(self) -> AsyncIterator[tuple[memoryview, int, tuple[str, int]]]:
        while not self._closed:
            yield await self.arecv()

    # ---- send -------------------------------------------------------------------------
    def sendto(self, payload: bytes | bytearray | memoryview, addr: tuple[str, int]) -> int:
        """Send one datagram to ``addr``; returns its length, or 0 if no TX buffer came
        free in time (counted: ``tx_no_buffer_drops``). Raises only for misuse: a
        closed endpoint, a payload larger than the MTU allows, a bad address.
        Cost: a header copy, a payload copy, one checksum sum, one doorbell."""
        t = self._tx.get((_ip_int(addr[0], "destination address")
                          if addr[0].__class__ is str else addr[0], addr[1]))  # type: ignore[arg-type]
        if t is None:
            self._check()
            t = self._template(addr[0], addr[1])
        return self._send(t, payload)

    def send(self, payload: bytes | bytearray | memoryview) -> int:
        """Send to the connected remote (see :meth:`sendto`)."""
        if self.remote is None:
            self._check()
            raise SetupError("send() on an endpoint with no remote", errno=errno.EDESTADDRREQ,
                             hint="pass remote=(ip, port) when opening, call connect(), "
                                  "or use sendto()")
        return self.sendto(payload, self.remote)

    def send_batch(self, payloads: Iterable[bytes | bytearray | memoryview],
                   addr: tuple[str, int] | None = None) -> int:
        """Send several datagrams (to ``addr`` or the remote); one doorbell for all.
        Returns how many were queued."""
        dest = addr or self.remote
        if dest is None:
            raise SetupError("send_batch() needs addr= or a connected remote",
                             errno=errno.EDESTADDRREQ, hint="pass addr=(ip, port)")
        key = (_ip_int(dest[0], "destination address"), dest[1])
        t = self._tx.get(key) or self._template(dest[0], dest[1])
        n = 0
        for p in payloads:
            if self._send(t, p, push=False) == 0:
                break
            n += 1
        self.stack.vi.transmit_push()
        return n

    def _send(self, t: _TxTemplate, payload: bytes | bytearray | memoryview,
              push: bool = True) -> int:
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        st = self.stack
        n = len(payload)
        if n > st.max_payload:
            raise SetupError(
                f"a {n}-byte payload does not fit the {st.mtu}-byte MTU of {st.info.name} "
                f"(at most {st.max_payload} bytes)", errno=errno.EMSGSIZE,
                hint="send smaller datagrams, or raise the MTU (ip link set dev "
                     f"{st.info.name} mtu N) on both ends")
        if t is self._pio_t and push and n <= _PIO_SLOT - _HDR:
            r = self._send_pio(t, payload, n)
            if r >= 0:
                return r
        i = st.take_tx(_HDR + n)
        if i < 0:
            return 0
        mv = st.mv
        b = i * PKT_BUF_SIZE
        mv[b:b + _HDR] = t.hdr
        mv[b + _HDR:b + _HDR + n] = memoryview(payload).cast("B")
        tot = 28 + n
        s = t.ip_sum + tot
        s = (s & 0xFFFF) + (s >> 16)
        _U16.pack_into(mv, b + 16, tot)
        _U16.pack_into(mv, b + 24, ~s & 0xFFFF)
        ulen = 8 + n
        s = ones_sum(payload, t.udp_sum + ulen + ulen)
        _U16.pack_into(mv, b + 38, ulen)
        _U16.pack_into(mv, b + 40, ~s & 0xFFFF or 0xFFFF)
        vi = st.vi
        ln = _HDR + n if n >= 18 else 60  # pad to the Ethernet minimum
        if n < 18:
            mv[b + _HDR + n:b + 60] = bytes(18 - n)
        rc = vi.transmit_init(st.base + b, ln, i)
        if rc:
            if i == st.jumbo_id:
                st._jumbo_free = True
            else:
                st._tx_free.append(i)
            st.counters["tx_no_buffer_drops"] += 1
            return 0
        if st.tx_timestamps:
            st.tx_owner[i] = self
            self._tx_inflight += 1
        if push:
            vi.transmit_push()
        st.counters["tx_datagrams"] += 1
        return n

    def _send_pio(self, t: _TxTemplate, payload: bytes | bytearray | memoryview,
                  n: int) -> int:
        """The PIO send: payload, two lengths and two checksums written into the staged
        frame, one ``transmit_pio`` (one doorbell). Returns ``n``, 0 when the TX ring
        is full (counted), or -1 when both slots are still in flight after a bounded
        wait (the caller then uses a TX buffer; counted in ``tx_pio_fallbacks``)."""
        st = self.stack
        busy = st.pio_busy
        slots = self._pio_slots
        k = slots[self._pio_k]
        if busy[k]:
            self._pio_k = (self._pio_k + 1) % len(slots)
            k = slots[self._pio_k]
            if busy[k]:
                for _ in range(_MAX_STALL):
                    st.pump()
                    if not busy[k]:
                        break
                else:
                    st.counters["tx_pio_fallbacks"] += 1
                    return -1
        pio = st.vi.pio
        mv = pio.mv
        b = k * _PIO_SLOT
        mv[b + _HDR:b + _HDR + n] = memoryview(payload).cast("B")
        tot = 28 + n
        s = t.ip_sum + tot
        s = (s & 0xFFFF) + (s >> 16)
        _U16.pack_into(mv, b + 16, tot)
        _U16.pack_into(mv, b + 24, ~s & 0xFFFF)
        ulen = 8 + n
        s = ones_sum(payload, t.udp_sum + ulen + ulen)
        _U16.pack_into(mv, b + 38, ulen)
        _U16.pack_into(mv, b + 40, ~s & 0xFFFF or 0xFFFF)
        ln = _HDR + n if n >= 18 else 60
        if n < 18:
            mv[b + _HDR + n:b + 60] = bytes(18 - n)
        rid = st.pio_id_base + k
        if st.vi.transmit_pio(b, ln, rid):
            st.counters["tx_no_buffer_drops"] += 1
            return 0
        busy[k] = True
        self._pio_k = (self._pio_k + 1) % len(slots)
        if st.tx_timestamps:
            st.tx_owner[rid] = self
            self._tx_inflight += 1
        st.counters["tx_datagrams"] += 1
        st.counters["tx_pio"] += 1
        return n

    def wait_sent(self, timeout: float = 1.0) -> int:
        """Pump the shared VI until every datagram this endpoint sent has completed (or
        ``timeout`` s passed); return :attr:`last_tx_ts_ns`. With ``tx_timestamps`` that
        is the newest send's transmit time; 0 without them or when the kernel gave
        none. Cost: one pump per round, busy; RX that arrives meanwhile is queued for
        ``recv`` as usual. Never raises on an open endpoint."""
        self._check()
        st = self.stack
        deadline = time.monotonic() + timeout
        while True:
            st.pump()
            # without timestamps completions are not tracked per endpoint: the whole VI
            busy = (self._tx_inflight > 0 if st.tx_timestamps
                    else st.vi.transmit_fill_level() > 0)
            if not busy or time.monotonic() >= deadline:
                break
        return self.last_tx_ts_ns

    # ---- stats and lifecycle ------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """The shared VI's counters and drops by cause, plus this endpoint's queue."""
        self._check()
        s = self.stack.stats()
        s["queued"] = len(self._q)
        return s

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("UDP endpoint is closed",)

    def _teardown(self) -> None:
        st = self.stack
        for k in self._keys:
            lst = st.endpoints.get(k, [])
            if self in lst:
                lst.remove(self)
            if not lst:
                st.endpoints.pop(k, None)
        self._keys.clear()
        while self._q:
            i = self._q.popleft()[0]
            if i >= 0:
                st.release(i)
        self._release_held()
        for spec in self._specs:
            try:
                st.del_filter(spec)
            except EfviError:
                pass
        self._specs.clear()
        st.pio_free.extend(self._pio_slots)
        self._pio_slots.clear()
        self._pio_t = None
        for s in self._ksocks:
            s.close()
        self._ksocks.clear()
        st.close_endpoint()

    def close(self) -> None:
        """Remove the filters, leave the groups, free the buffers (idempotent); the VI
        closes with the last endpoint of the stack."""
        if self._closed:
            return
        self._closed = True
        self._teardown()

    def __enter__(self) -> "UdpEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"UdpEndpoint({self.stack.url!r}, {self.local_ip}:{self.port}, "
                f"groups={[str(ipaddress.IPv4Address(g)) for g in self.groups]}, {state})")


def open_endpoint(url: str, local: tuple[str | None, int] | int, **kw: object
                  ) -> UdpEndpoint:
    """``UdpEndpoint(url, local, **kw)`` (the facade's ``efvi.udp.open``)."""
    return UdpEndpoint(url, local, **kw)  # type: ignore[arg-type]


def wait_readable(fds: list[int], timeout: float) -> bool:
    """select() helper for tools: True when one of ``fds`` is readable."""
    r, _, _ = select.select(fds, [], [], timeout)
    return bool(r)
