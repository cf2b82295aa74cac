"""The ``packet`` adapter: ef_vi over AF_PACKET ``TPACKET_V2``/``V3`` rings (sniff semantics).

``Driver.open("packet:IFNAME[?ring=N&snaplen=N&ts=auto|sw|hw&qdisc=0|1&dir=in|out|inout``
``&rx_ring=auto|v2|v3&retire_ms=N]")``.

Ring kind, per VI, by what it asks for: a VI allocated with ``ViFlags.RX_EVENT_MERGE``
(ef_vi's ``EF_VI_RX_EVENT_MERGE``: "events may come late and batched") gets a
``TPACKET_V3`` block ring — the kernel wakes it once per block, a block being handed
over when full or ``retire_ms`` (default 20) after its first frame, so a steady-rate
receiver wakes a few dozen times a second (``efvi sink`` asks for this). Every other VI
gets ``TPACKET_V2`` slots: a frame is the VI's the moment the kernel writes it, which is
what per-slot latency needs. ``rx_ring=v2|v3`` forces one kind for every VI. Blocks
hold at most half the VI's RX ring of minimum-size frames, so the frames of a block
find buffers when the application re-posts as it goes (frames finding none are
``rx_nodesc_drops``, as with slots).

``dir`` picks which frames the VIs' filters see: received ones (``in``, the default,
what a NIC's RX filters see), the ones this host sends (``out``: ``PACKET_OUTGOING``,
as ``tcpdump -Q out``) or both; sent frames carry :data:`efvi.events.RX_FLAG_OUTGOING` in their
RX events' ``flags``.

Each VI owns one AF_PACKET socket bound to the interface, with an mmap'ed RX ring
(``ring`` slots; by default 4 MiB of them — 2048 for a 1500-byte MTU — or as many as
the VI's RX ring size if that is larger) and a TX ring (one slot per TX descriptor).
The VI's filters are compiled into **one** classic BPF program that OR-s them
(:mod:`.filter_prog`) and is attached with ``SO_ATTACH_FILTER``, so the kernel drops frames
no filter wants before copying them. The kernel keeps its own copy of
every frame: filters *sniff*; asking to steal raises UnsupportedError naming ``xdp``.

Ownership rule (RX)
    ``packet`` copies. A frame lives in the kernel's ring slot until the VI takes it;
    taking it copies it into the next posted RX buffer(s) and hands the slot straight
    back to the kernel. From ``receive_post`` until its RX/RX_DISCARD event a buffer
    belongs to the VI (the adapter may write any byte of it up to its capacity); after
    the event it is the application's, and no view into the ring is ever exposed.
    A buffer's capacity is ``min(rx_buffer_len, bytes to the end of its 2 KiB
    buffer)``; longer frames span SOP/CONT buffers (``len`` cumulative) and run out as
    RX_NO_DESC_TRUNC; frames the ring truncated (longer than ``snaplen``) are an
    RX_DISCARD with reason TRUNC. The outer VLAN tag the kernel stripped (ring
    ``tp_vlan_tci``/``tp_vlan_tpid``) is put back in the copy, so captures are what
    was on the wire.

Arrival
    A frame "arrives" when the kernel writes it into the ring. The VI takes frames
    from the ring whenever it runs (``poll`` and ``receive_push``): before new
    buffers are posted, frames already waiting take the buffers posted before them
    and the rest are dropped as ``rx_nodesc_drops`` — as on a NIC, a frame finds a
    descriptor or is lost. Each call takes the run of frames ready when it looks and
    returns: frames landing while it copies wait for the next call, so a consumer
    that keeps up gets its buffers back between polls (chasing a stream would hold
    them all and then drop). A full ring drops in the kernel (``rx_ring_drops``, from
    PACKET_STATISTICS, which resets on read, so the VI accumulates). So, as on ef_vi,
    the buffering that rides out a stalled consumer is the number of buffers posted:
    size the RX ring (up to 65536) for the longest stall to survive.

TX
    Frames are copied from registered memory into TX ring slots, the slot status set
    to SEND_REQUEST, and one non-blocking ``send()`` asks the kernel to transmit them
    (``PACKET_QDISC_BYPASS`` unless ``qdisc=1``). A slot is complete when the kernel
    frees the skb (status back to AVAILABLE); completions are reported strictly in
    submission order, ≤ 64 frames per TX event, ``rq_id`` = cumulative descriptors.
    A frame longer than the interface MTU (+ header, + 4 if VLAN-tagged) completes as
    TX_ERROR/TOO_BIG (``tx_too_big_drops``) without reaching the kernel. A frame the
    link cannot carry (``send()`` fails and the interface has no carrier, is down or
    gone) is handed to the kernel once and completes as TX_ERROR/LINK_DOWN
    (``tx_link_down_drops``), with every frame queued behind it.

VI sets
    One socket per VI, joined into one ``PACKET_FANOUT_HASH`` group. The kernel's
    fanout hash is ``__skb_get_hash_symmetric`` (``net/packet/af_packet.c``), so both
    directions of a flow go to the same VI. Non-first IP fragments carry no ports and
    hash on addresses only. Every member should carry the same filters: the kernel
    picks a member by hash first and only then runs that member's filter.

Promiscuous mode
    ``port_sniff(promiscuous=True)``, ``.sniff(promiscuous=True)``, ``unicast_all``,
    ``unicast_mismatch`` and ``eth_local`` of a foreign unicast MAC hold a
    PACKET_MR_PROMISC membership, ``multicast_all``/``multicast_mismatch`` a
    PACKET_MR_ALLMULTI one, while installed; the kernel counts references, and
    closing (or a crash: the socket goes away) restores the interface.

Timestamps
    RX ``ts_ns`` comes from the slot's ``tp_sec``/``tp_nsec``: CLOCK_REALTIME ns
    (``clock_source == "sw"``), or the NIC's raw hardware clock (``"hw"``) with
    ``ts=hw`` (or ``auto``, the default) on a NIC whose ``ethtool -T`` lists raw
    hardware RX stamps and a PHC; ``now_ns`` then reads that PHC.

Modules
    This one holds :class:`PacketAdapter` (setup, shared filter state); ``pd.py``
    memory and filters; ``vibase.py`` a VI's socket and queues; ``rx.py`` and
    ``tx.py`` the data path; ``vi.py`` assembles the VI; ``filter_prog.py`` compiles
    filters to classic BPF (:mod:`efvi.bpf.cbpf`); ``ring.py`` the socket and rings.

Network namespaces
    The adapter remembers the namespace of the thread that opened it and creates
    every socket there, whatever thread allocates VIs later.
"""


from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import time
import weakref
from collections.abc import Sequence

from efvi import hwts, netutil
from efvi.adapters.base import Adapter, Capabilities, HwVI, InterfaceInfo
from efvi.adapters.packet import ring
from efvi.adapters.packet.filter_prog import DIRECTIONS, MISMATCH_KINDS
from efvi.adapters.packet.brokered import PacketBroker
from efvi.adapters.packet.pd import PacketPD, _FilterHandle
from efvi.adapters.packet.vi import PacketVI
from efvi.constants import MAX_TX_FRAME
from efvi.broker.client import use_broker
from efvi.linkstate import LinkProbe
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterKind, FilterSpec

__all__ = ["FILTER_KINDS", "PacketAdapter", "PacketPD", "PacketVI"]

FILTER_KINDS = frozenset(k.name.lower() for k in FilterKind if k != FilterKind.NONE)


class PacketAdapter(Adapter):
    """``packet:IFNAME`` — see the module doc."""

    name = "packet"
    rx_user_copies = 1  # ring slot -> posted buffer
    tx_user_copies = 1  # registered memory -> TX ring slot

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        super().__init__(iface, queue, options)
        if not iface:
            raise SetupError("the packet adapter needs an interface", errno=errno.EINVAL,
                             hint="write packet:IFNAME, e.g. packet:eth0")
        self._closed = False
        #: efvid makes this driver's sockets when the process lacks CAP_NET_RAW (URL
        #: option broker=auto|0|1, EFVI_BROKER); None: direct
        self.broker: PacketBroker | None = None
        self._msock: socket.socket | None = None
        try:  # first: without CAP_NET_RAW nothing else matters
            if use_broker("packet", options.get("broker", "auto")):
                self.broker = PacketBroker(iface, {k: v for k, v in options.items()
                                                   if k != "broker"})
            else:
                self._msock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise SetupError("cannot open an AF_PACKET socket", errno=errno.EPERM,
                             hint="needs CAP_NET_RAW: run as root, grant it (`setcap "
                                  "cap_net_raw,cap_net_admin+ep` on the python binary), or "
                                  "start the broker: systemctl enable --now efvid") from None
        try:
            self._ns = netutil.NetnsHandle()
        except OSError as exc:
            if self._msock is not None:
                self._msock.close()
            raise SetupError("cannot open this thread's network namespace",
                             errno=exc.errno or errno.EACCES,
                             hint="run with access to /proc/thread-self/ns/net") from None
        self._vis: "weakref.WeakSet[PacketVI]" = weakref.WeakSet()
        self._handles: list[_FilterHandle] = []
        self._members: dict[int, int] = {}  # mr_type → references
        self._ptp: tuple[int, int] | None = None
        self._hw_saved: bytes | None = None
        self._probe: LinkProbe | None = None
        try:
            self._open(options)
        except BaseException:
            self.close()
            raise

    def _open(self, options: dict[str, str]) -> None:
        self._link = netutil.link_info(self.iface)
        if not self._link.up:
            raise SetupError(f"interface {self.iface!r} is down", errno=errno.ENETDOWN,
                             hint=f"run: ip link set {self.iface} up")
        self.ifindex = self._link.ifindex
        self.mac = self._link.mac if len(self._link.mac) == 6 else bytes(6)
        self.mtu = self._link.mtu
        self.max_frame = min(self.mtu + 14, MAX_TX_FRAME - 4)
        self.snaplen = _int_opt(options, "snaplen", min(self.mtu, 9216) + 18, 64, 65535 + 18)
        self.ring_slots = _int_opt(options, "ring", 0, 2, 1 << 22)
        self.qdisc_bypass = options.get("qdisc", "0") not in ("1", "yes", "true")
        self.direction = options.get("dir", "in")
        if self.direction not in DIRECTIONS:
            raise SetupError(f"bad dir={self.direction!r}", errno=errno.EINVAL,
                             hint="use dir=in (received frames), out (sent) or inout")
        self.rx_ring = options.get("rx_ring", "auto")
        self.retire_ms = _int_opt(options, "retire_ms", 20, 1, 1000)
        ts = options.get("ts", "auto")
        if ts not in ("auto", "sw", "hw"):
            raise SetupError(f"bad ts={ts!r}", errno=errno.EINVAL, hint="use ts=auto|sw|hw")
        self.hw_ts = False
        if ts != "sw":
            info = hwts.ts_info(self.iface)
            if info.hw_rx:
                self.hw_ts = self._enable_hw_timestamps(info.phc_index)
            if ts == "hw" and not self.hw_ts:
                raise UnsupportedError(
                    f"{self.iface} gives no raw hardware RX timestamps (see `ethtool -T "
                    f"{self.iface}`); use ts=sw, or a NIC with a PTP clock")

    def _enable_hw_timestamps(self, phc: int) -> bool:
        saved = hwts.hwtstamp(self.iface, None)
        cfg = struct.pack("=iii", 0, 0, hwts.HWTSTAMP_FILTER_ALL)
        if hwts.hwtstamp(self.iface, cfg) is None:
            return False
        self._hw_saved = saved
        self._ptp = hwts.phc_clock_id(phc)
        return True

    # ---- contract ----------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            adapter="packet", steal=False, sniff=True, zero_copy=False,
            rx_timestamps=True, tx_timestamps=True, hw_timestamps=self.hw_ts, pio=False,
            vi_sets=True, multi_region=True, rx_queues=1, filter_kinds=FILTER_KINDS)

    def interface_info(self) -> InterfaceInfo:
        with self._ns.enter():
            return netutil.interface_info(self.iface)

    def resolve_neighbour(self, ip: str) -> bytes | None:
        with self._ns.enter():
            return netutil.neighbour(ip, self.iface)

    def alloc_pd(self) -> "PacketPD":
        if self._closed:
            raise SetupError("the packet adapter is closed", errno=errno.EBADF)
        return PacketPD(self)

    def now_ns(self) -> int:
        if self._ptp is not None:
            return time.clock_gettime_ns(self._ptp[1])
        return time.time_ns()

    @property
    def clock_source(self) -> str:
        return "hw" if self.hw_ts else "sw"

    # ---- filters shared by every VI of the interface ------------------------------------
    def _others_for(self, vi: HwVI) -> list[FilterSpec]:
        return [h.spec for h in self._handles if vi not in h.targets]

    def _recompile(self, vis: Sequence["PacketVI"]) -> None:
        mism = [v for v in self._vis if any(s.kind in MISMATCH_KINDS for s in v.specs)]
        for v in dict.fromkeys([*vis, *mism]):
            v._apply_filter()

    def _hold(self, mr_type: int, add: bool) -> None:
        if mr_type and add and self.broker is not None:
            raise UnsupportedError(
                f"promiscuous or all-multicast reception on {self.iface} is not available "
                "through efvid; filter on this host's own addresses, or run as root")
        if not mr_type or self._msock is None:
            return
        n = self._members.get(mr_type, 0)
        if add:
            if n == 0:
                try:
                    ring.membership(self._msock, self.ifindex, mr_type, True)
                except OSError as exc:
                    raise SetupError(f"cannot make {self.iface} promiscuous: {exc.strerror}",
                                     errno=exc.errno or errno.EPERM,
                                     hint="needs CAP_NET_RAW in the interface's "
                                          "namespace") from None
            self._members[mr_type] = n + 1
        elif n > 0:
            self._members[mr_type] = n - 1
            if n == 1:
                with contextlib.suppress(OSError):
                    ring.membership(self._msock, self.ifindex, mr_type, False)

    def kernel_mcast(self) -> list[bytes]:
        with self._ns.enter():
            return netutil.multicast_macs(self.iface)

    def link_state(self) -> str:
        """``up`` | ``no-carrier`` | ``down`` | ``gone`` (two ioctls; see the base)."""
        if self._closed:
            return "gone"
        if self._probe is None:
            with self._ns.enter():
                self._probe = LinkProbe(self.ifindex)
        return self._probe.state()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._probe is not None:
            self._probe.close()
        for vi in list(self._vis):
            vi.close()
        if self._msock is not None:
            self._msock.close()  # drops promiscuous/allmulti references
            self._msock = None
        if self.broker is not None:
            self.broker.close()
        if self._hw_saved is not None:
            with self._ns.enter():
                hwts.hwtstamp(self.iface, self._hw_saved)
            self._hw_saved = None
        if self._ptp is not None:
            os.close(self._ptp[0])
            self._ptp = None
        self._ns.close()


def _int_opt(options: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        v = int(raw, 0)
    except ValueError:
        raise SetupError(f"bad {key}={raw!r}", errno=errno.EINVAL,
                         hint=f"{key} takes an integer") from None
    if not lo <= v <= hi:
        raise SetupError(f"{key}={v} outside {lo}..{hi}", errno=errno.EINVAL,
                         hint=f"choose {key} in {lo}..{hi}")
    return v
