"""The ``packet`` adapter: ef_vi over AF_PACKET ``TPACKET_V2`` rings (sniff semantics).

``Driver.open("packet:IFNAME[?ring=N&snaplen=N&ts=auto|sw|hw&qdisc=0|1]")``.

Each VI owns one AF_PACKET socket bound to the interface, with an mmap'ed RX ring
(``ring`` slots; by default 4 MiB of them — 2048 for a 1500-byte MTU — or as many as
the VI's RX ring size if that is larger) and a TX ring (one slot per TX descriptor).
The VI's filters are compiled into **one** classic BPF program that OR-s them
(:mod:`.cbpf`) and is attached with ``SO_ATTACH_FILTER``, so the kernel drops frames
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
    TX_ERROR/TOO_BIG (``tx_too_big_drops``) without reaching the kernel.

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

Network namespaces
    The adapter remembers the namespace of the thread that opened it and creates
    every socket there, whatever thread allocates VIs later.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import socket
import struct
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi import netutil
from efvi.adapters.base import (Adapter, Capabilities, EventArray, HwProtectionDomain, HwVI,
                                InterfaceInfo, U32Array, U64Array)
from efvi.adapters.packet import cbpf, ring
from efvi.adapters.packet.ring import PacketSocket
from efvi.adapters.sim.dma import scatter
from efvi.constants import EF_VI_TRANSMIT_BATCH, MAX_TX_FRAME, PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.events import DiscardReason, EventType, RxFlags, TxErrorType, event_array
from efvi.filters import FilterKind, FilterSpec

if TYPE_CHECKING:
    from efvi.memory import MemoryRegion

_RX = int(EventType.RX)
_RXD = int(EventType.RX_DISCARD)
_NODESC = int(EventType.RX_NO_DESC_TRUNC)
_TX = int(EventType.TX)
_TXERR = int(EventType.TX_ERROR)
_SW = int(EventType.SW)
_SOP = int(RxFlags.SOP)
_CONT = int(RxFlags.CONT)
_MCAST = int(RxFlags.MULTICAST)
_MASK = 0xFFFFFFFF
_REGION_SHIFT = 40
_OFF_MASK = (1 << _REGION_SHIFT) - 1
_SCAN = 1024  # ring slots examined per step

FILTER_KINDS = frozenset(k.name.lower() for k in FilterKind if k != FilterKind.NONE)

_fanout_ids = itertools.count((os.getpid() * 7919) & 0xFFFF)


def _needs_promisc(spec: FilterSpec, own_mac: bytes) -> int:
    """0, PACKET_MR_PROMISC or PACKET_MR_ALLMULTI for ``spec``."""
    k = spec.kind
    if spec.promisc or k in (FilterKind.UNICAST_ALL, FilterKind.UNICAST_MISMATCH):
        return ring.PACKET_MR_PROMISC
    if k == FilterKind.ETH and not spec.mac[0] & 1 and spec.mac != own_mac:
        return ring.PACKET_MR_PROMISC
    if k in (FilterKind.MULTICAST_ALL, FilterKind.MULTICAST_MISMATCH):
        return ring.PACKET_MR_ALLMULTI
    return 0


class PacketAdapter(Adapter):
    """``packet:IFNAME`` — see the module doc."""

    name = "packet"

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        super().__init__(iface, queue, options)
        if not iface:
            raise SetupError("the packet adapter needs an interface", errno=errno.EINVAL,
                             hint="write packet:IFNAME, e.g. packet:eth0")
        self._closed = False
        try:  # first: without CAP_NET_RAW nothing else matters
            self._msock: socket.socket | None = socket.socket(socket.AF_PACKET,
                                                              socket.SOCK_RAW, 0)
        except PermissionError:
            raise SetupError("cannot open an AF_PACKET socket", errno=errno.EPERM,
                             hint="needs CAP_NET_RAW: run as root, or grant it with "
                                  "`setcap cap_net_raw,cap_net_admin+ep` on the python "
                                  "binary") from None
        try:
            self._ns = netutil.NetnsHandle()
        except OSError as exc:
            self._msock.close()
            raise SetupError("cannot open this thread's network namespace",
                             errno=exc.errno or errno.EACCES,
                             hint="run with access to /proc/thread-self/ns/net") from None
        self._vis: "weakref.WeakSet[PacketVI]" = weakref.WeakSet()
        self._handles: list[_FilterHandle] = []
        self._members: dict[int, int] = {}  # mr_type → references
        self._ptp: tuple[int, int] | None = None
        self._hw_saved: bytes | None = None
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
        ts = options.get("ts", "auto")
        if ts not in ("auto", "sw", "hw"):
            raise SetupError(f"bad ts={ts!r}", errno=errno.EINVAL, hint="use ts=auto|sw|hw")
        self.hw_ts = False
        if ts != "sw":
            info = ring.ts_info(self.iface)
            if info.hw_rx:
                self.hw_ts = self._enable_hw_timestamps(info.phc_index)
            if ts == "hw" and not self.hw_ts:
                raise UnsupportedError(
                    f"{self.iface} gives no raw hardware RX timestamps (see `ethtool -T "
                    f"{self.iface}`); use ts=sw, or a NIC with a PTP clock")

    def _enable_hw_timestamps(self, phc: int) -> bool:
        saved = ring.hwtstamp(self.iface, None)
        cfg = struct.pack("=iii", 0, 0, ring.HWTSTAMP_FILTER_ALL)
        if ring.hwtstamp(self.iface, cfg) is None:
            return False
        self._hw_saved = saved
        self._ptp = ring.phc_clock_id(phc)
        return True

    # ---- contract ----------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            adapter="packet", steal=False, sniff=True, zero_copy=False,
            rx_timestamps=True, tx_timestamps=False, hw_timestamps=self.hw_ts, pio=False,
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
    def _others_for(self, vi: "PacketVI") -> list[FilterSpec]:
        return [h.spec for h in self._handles if vi not in h.targets]

    def _recompile(self, vis: Sequence["PacketVI"]) -> None:
        mism = [v for v in self._vis if any(s.kind in cbpf.MISMATCH_KINDS for s in v.specs)]
        for v in dict.fromkeys([*vis, *mism]):
            v._apply_filter()

    def _hold(self, mr_type: int, add: bool) -> None:
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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for vi in list(self._vis):
            vi.close()
        if self._msock is not None:
            self._msock.close()  # drops promiscuous/allmulti references
            self._msock = None
        if self._hw_saved is not None:
            with self._ns.enter():
                ring.hwtstamp(self.iface, self._hw_saved)
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


class _FilterHandle:
    def __init__(self, spec: FilterSpec, targets: list["PacketVI"], mr_type: int) -> None:
        self.spec = spec
        self.targets = targets
        self.mr_type = mr_type
        self.live = True


class PacketPD(HwProtectionDomain):
    """A PD: registered regions at DMA bases ``(k + 1) << 40``."""

    def __init__(self, adapter: PacketAdapter) -> None:
        self.adapter = adapter
        self._regions: dict[int, "MemoryRegion"] = {}
        self._next = 0

    def register_memory(self, region: "MemoryRegion") -> int:
        k = self._next
        self._next += 1
        self._regions[k] = region
        return (k + 1) << _REGION_SHIFT

    def unregister_memory(self, region: "MemoryRegion") -> None:
        for k, r in list(self._regions.items()):
            if r is region:
                del self._regions[k]

    def resolve(self, addr: int) -> tuple[npt.NDArray[np.uint8], int] | None:
        mr = self._regions.get((addr >> _REGION_SHIFT) - 1)
        return None if mr is None else (mr.buf, addr & _OFF_MASK)

    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int,
                 queue: int | None) -> "PacketVI":
        a = self.adapter
        with a._ns.enter():
            vi = PacketVI(self, rxq, txq, evq, queue)
        a._vis.add(vi)
        return vi

    def filter_add(self, spec: FilterSpec, targets: Sequence[HwVI]) -> object:
        a = self.adapter
        if not spec.sniff_mode:  # the core checks this too
            raise UnsupportedError("the packet adapter only sniffs; use the xdp adapter "
                                   "to steal frames")
        vis = [t for t in targets if isinstance(t, PacketVI)]
        if len(vis) > 1:
            self._fanout(vis)
        mr_type = _needs_promisc(spec, a.mac)
        a._hold(mr_type, True)
        h = _FilterHandle(spec, vis, mr_type)
        a._handles.append(h)
        for v in vis:
            v.specs.append(spec)
        try:
            a._recompile(vis)
        except BaseException:
            self.filter_del(h)
            raise
        return h

    def filter_del(self, handle: object) -> None:
        assert isinstance(handle, _FilterHandle)
        if not handle.live:
            return
        handle.live = False
        a = self.adapter
        with contextlib.suppress(ValueError):
            a._handles.remove(handle)
        for v in handle.targets:
            with contextlib.suppress(ValueError):
                v.specs.remove(handle.spec)
        a._hold(handle.mr_type, False)
        a._recompile([v for v in handle.targets if not v.closed])

    def _fanout(self, vis: list["PacketVI"]) -> None:
        groups = {v.fanout for v in vis}
        if groups == {None}:
            for _ in range(64):
                gid = next(_fanout_ids) & 0xFFFF
                try:
                    for v in vis:
                        v.join_fanout(gid)
                    return
                except OSError:
                    continue  # id in use (or half-joined): try another one
            raise SetupError("cannot create a PACKET_FANOUT group", errno=errno.EBUSY,
                             hint="close other fanout users or retry")
        if len(groups) != 1 or None in groups:
            raise SetupError("these VIs are not one VI set", errno=errno.EINVAL,
                             hint="add set filters with VISet.filter_add")

    def close(self) -> None:
        self._regions.clear()


class PacketVI(HwVI):
    """One VI: a socket, its RX and TX rings, a descriptor FIFO and pending events."""

    rx_buffer_len = PKT_BUF_SIZE
    rx_prefix_len = 0

    def __init__(self, pd: PacketPD, rxq: int, txq: int, evq: int, queue: int | None) -> None:
        a = pd.adapter
        self.pd = pd
        self.adapter = a
        self.q_id = queue or 0
        self.clock_source = a.clock_source
        self.specs: list[FilterSpec] = []
        self.fanout: int | None = None
        self.closed = False
        # the kernel ring holds at least as many frames as the VI can have buffers
        # posted (a burst the VI could take must not overflow the ring first)
        slots = a.ring_slots or max(256, (4 << 20) // max(2048, _pow2(a.snaplen + 72)),
                                    _pow2(rxq))
        self._s = PacketSocket(a.iface, slots if rxq else 0, a.snaplen, txq, a.max_frame + 4,
                               qdisc_bypass=a.qdisc_bypass, hw_timestamps=a.hw_ts,
                               reject_all=cbpf.compile_filters([]))
        self._rx = self._s.rx
        self._tx = self._s.tx
        self._cur = 0
        # posted RX descriptors (FIFO)
        rs = max(rxq, 2)
        self._d_addr = np.zeros(rs, np.uint64)
        self._d_id = np.zeros(rs, np.uint32)
        self._d_mask = rs - 1
        self._d_head = self._d_tail = 0
        # events made while taking frames, handed out by harvest
        self._pend = event_array(2 * rs + 64)
        self._np = 0  # pending events are self._pend[self._ph:self._np]
        self._ph = 0
        # TX completion FIFO: one entry per frame
        ts_ = max(txq, 2)
        self._c_slot = np.zeros(ts_, np.int64)
        self._c_ndesc = np.zeros(ts_, np.uint32)
        self._c_len = np.zeros(ts_, np.uint32)
        self._c_mask = ts_ - 1
        self._c_head = self._c_tail = 0
        self._slot_next = 0
        self._desc_done = 0
        self._kick_err = 0
        self.c: dict[str, int] = dict.fromkeys(
            ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_nodesc_drops",
             "rx_trunc_drops", "rx_nodesc_trunc_drops", "rx_ring_drops", "tx_too_big_drops",
             "rx_kernel_packets", "tx_kick_errors"), 0)
        self._poller = select.poll()
        self._poller.register(self._s.fileno(), select.POLLIN)

    # ---- control -------------------------------------------------------------------------
    def _apply_filter(self) -> None:
        if self.closed or self._rx is None:
            return
        a = self.adapter
        others = a._others_for(self) if any(s.kind in cbpf.MISMATCH_KINDS
                                            for s in self.specs) else []
        prog = cbpf.compile_filters(self.specs, others=others, snaplen=a.snaplen,
                                    kernel_mcast=a.kernel_mcast() if others or any(
                                        s.kind == FilterKind.MULTICAST_MISMATCH
                                        for s in self.specs) else ())
        self._s.set_filter(prog)

    def join_fanout(self, gid: int) -> None:
        if self.fanout is not None:
            raise OSError(errno.EALREADY, "already in a fanout group")
        self._s.join_fanout(gid)
        self.fanout = gid

    # ---- RX --------------------------------------------------------------------------------
    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        """Take waiting frames with the buffers posted so far, then queue these.

        Cost: one ring scan (a strided numpy read) plus the copies it does; O(n) stores.
        """
        if self.closed:
            return
        self._take()
        n = int(addrs.shape[0])
        idx = (self._d_tail + np.arange(n, dtype=np.int64)) & self._d_mask
        self._d_addr[idx] = addrs
        self._d_id[idx] = ids
        self._d_tail += n

    def _room(self) -> int:
        """Free pending-event slots (compacting the queue to its front if that helps)."""
        free = self._pend.shape[0] - self._np
        if self._ph and free < self._pend.shape[0] // 2:
            n = self._np - self._ph
            self._pend[:n] = self._pend[self._ph:self._np].copy()
            self._ph, self._np = 0, n
            free = self._pend.shape[0] - n
        return int(free)

    def _take(self, budget: int | None = None) -> None:
        """Move ready ring frames into posted buffers (events into the pending queue).

        ``budget`` bounds the frames delivered (frames with no buffer are dropped
        whatever the budget: a drop costs no event). A call takes the run of frames
        that is ready when it looks and returns where that run ends: it never chases
        frames that arrive while it copies. (Chasing a steady stream costs a scan per
        few frames and keeps the caller from reposting buffers until all are used, so
        a busy consumer would drop frames while it still had time to spare.)
        """
        r = self._rx
        if r is None:
            return
        ns = r.nslots
        left = budget if budget is not None else 1 << 62
        while left > 0:
            cur = self._cur
            w = min(ns - cur, _SCAN)
            ready = (r.status[cur:cur + w] & ring.TP_STATUS_USER).astype(bool)
            nready = w if ready.all() else int(ready.argmin())
            if nready == 0:
                return
            run_ends = nready < w  # later frames arrived after we looked: next call's
            while nready > 0:  # the run seen in this window, without looking again
                avail = self._d_tail - self._d_head
                if avail == 0:  # nowhere to put them: dropped, as on a NIC
                    self.c["rx_nodesc_drops"] += nready
                    r.status[cur:cur + nready] = ring.TP_STATUS_KERNEL
                    cur += nready
                    self._cur = cur % ns
                    break
                take = min(nready, avail, self._room(), left)
                if take <= 0:
                    return
                done = self._take_fast(cur, take)
                if done == 0:
                    done = self._take_slow(cur, take)
                    if done == 0:
                        return
                cur += done
                self._cur = cur % ns
                nready -= done
                left -= done
                if left <= 0:
                    return
            if run_ends:
                return

    def _take_fast(self, cur: int, n: int) -> int:
        """n frames from slot ``cur``, one buffer each, vectorised; 0 if not applicable."""
        r = self._rx
        assert r is not None
        sl = slice(cur, cur + n)
        status = r.status[sl]
        lens = r.length[sl].astype(np.int64)
        if (status & ring.TP_STATUS_VLAN_VALID).any() or (r.snaplen[sl] != r.length[sl]).any():
            return 0
        didx = (self._d_head + np.arange(n, dtype=np.int64)) & self._d_mask
        addrs = self._d_addr[didx]
        region = addrs >> np.uint64(_REGION_SHIFT)
        if (region != region[0]).any():
            return 0
        res = self.pd.resolve(int(addrs[0]))
        if res is None:
            return 0
        mem, _ = res
        offs = (addrs & np.uint64(_OFF_MASK)).astype(np.int64)
        cap = np.minimum(self.rx_buffer_len, PKT_BUF_SIZE - (offs % PKT_BUF_SIZE))
        if (lens > cap).any():
            return 0
        soffs = np.arange(cur, cur + n, dtype=np.int64) * r.fs + r.mac[sl]
        scatter(mem, offs, r.mem, soffs, lens)
        ts = r.sec[sl].astype(np.int64) * 1_000_000_000 + r.nsec[sl]
        first = r.mem[soffs]
        r.status[sl] = ring.TP_STATUS_KERNEL  # the slots go back to the kernel
        ev = self._pend[self._np:self._np + n]
        ev["type"] = _RX
        ev["subtype"] = 0
        ev["flags"] = _SOP | ((first & 1).astype(np.uint16) * _MCAST)
        ev["q_id"] = self.q_id
        ev["ofs"] = 0
        ev["rq_id"] = self._d_id[didx]
        ev["len"] = lens
        ev["ts_ns"] = ts
        self._np += n
        self._d_head += n
        self.c["rx_packets"] += n
        self.c["rx_bytes"] += int(lens.sum())
        return n

    def _event(self, etype: int, flags: int, rq_id: int, length: int, ts: int,
               subtype: int = 0) -> None:
        e = self._pend[self._np]
        e["type"], e["subtype"], e["flags"], e["q_id"] = etype, subtype, flags, self.q_id
        e["ofs"], e["rq_id"], e["len"], e["ts_ns"] = 0, rq_id, length, ts
        self._np += 1

    def _next_desc(self) -> tuple[int, int] | None:
        if self._d_head == self._d_tail:
            return None
        i = self._d_head & self._d_mask
        self._d_head += 1
        return int(self._d_addr[i]), int(self._d_id[i])

    def _take_slow(self, cur: int, n: int) -> int:
        """Frame by frame: VLAN re-insertion, chains, truncation. Returns frames taken."""
        r = self._rx
        assert r is not None
        c = self.c
        taken = 0
        for slot in range(cur, cur + n):
            st = int(r.status[slot])
            length, snap, mac = int(r.length[slot]), int(r.snaplen[slot]), int(r.mac[slot])
            ts = int(r.sec[slot]) * 1_000_000_000 + int(r.nsec[slot])
            base = slot * r.fs + mac
            frame = r.mem[base:base + snap]
            if st & ring.TP_STATUS_VLAN_VALID:
                tpid = int(r.vlan_tpid[slot]) if st & ring.TP_STATUS_VLAN_TPID_VALID else 0
                tag = np.frombuffer(struct.pack(">HH", tpid or 0x8100, int(r.vlan_tci[slot])),
                                    np.uint8)
                frame = np.concatenate((frame[:12], tag, frame[12:]))
                length += 4
                snap += 4
            # worst case events: one per buffer (≥ 64 bytes each) + a NO_DESC_TRUNC
            if self._room() < min(length // 64 + 2, self._d_tail - self._d_head + 1):
                break
            desc = self._next_desc()
            if desc is None:
                c["rx_nodesc_drops"] += 1
                r.status[slot] = ring.TP_STATUS_KERNEL
                taken += 1
                continue
            mcast = _MCAST if snap and frame[0] & 1 else 0
            if snap < length:  # the ring cut it (longer than snaplen): TRUNC discard
                addr, rq_id = desc
                self._copy(addr, frame, 0)
                self._event(_RXD, _SOP | mcast, rq_id, length, ts, int(DiscardReason.TRUNC))
                c["rx_trunc_drops"] += 1
            else:
                self._chain(desc, frame, length, mcast, ts)
            r.status[slot] = ring.TP_STATUS_KERNEL
            taken += 1
        return taken

    def _copy(self, addr: int, frame: npt.NDArray[np.uint8], start: int) -> int:
        """Copy from ``frame[start:]`` into the buffer at ``addr``; return bytes copied."""
        res = self.pd.resolve(addr)
        if res is None:
            return 0
        mem, off = res
        cap = min(self.rx_buffer_len, PKT_BUF_SIZE - off % PKT_BUF_SIZE)
        piece = frame[start:start + cap]
        mem[off:off + piece.shape[0]] = piece
        return int(piece.shape[0])

    def _chain(self, desc: tuple[int, int], frame: npt.NDArray[np.uint8], total: int,
               mcast: int, ts: int) -> None:
        c = self.c
        done = 0
        flags = _SOP | mcast
        while True:
            addr, rq_id = desc
            done += self._copy(addr, frame, done)
            if done >= total:
                self._event(_RX, flags, rq_id, total, ts)
                c["rx_packets"] += 1
                c["rx_bytes"] += total
                return
            self._event(_RX, flags | _CONT, rq_id, done, ts)
            flags = mcast
            nxt = self._next_desc()
            if nxt is None:
                self._event(_NODESC, 0, 0, done, ts)
                c["rx_nodesc_trunc_drops"] += 1
                return
            desc = nxt

    # ---- TX --------------------------------------------------------------------------------
    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """Copy frames into TX slots, mark them SEND_REQUEST, one non-blocking send().

        Cost: one vectorised gather/scatter for single-buffer frames in one region
        (else a loop of slice copies), three strided stores, one system call.
        """
        t = self._tx
        if self.closed or t is None:
            return
        n = int(ids.shape[0])
        ln64 = lens.astype(np.int64)
        if n and bool((ids != _MASK).all()) and int(ln64.max()) <= self.adapter.max_frame:
            region = addrs >> np.uint64(_REGION_SHIFT)
            res = self.pd.resolve(int(addrs[0]))
            if res is not None and not (region != region[0]).any():
                mem, _ = res
                offs = (addrs & np.uint64(_OFF_MASK)).astype(np.int64)
                slots = (self._slot_next + np.arange(n, dtype=np.int64)) % t.nslots
                scatter(t.mem, slots * t.fs + ring.TX_DATA_OFFSET, mem, offs, ln64)
                t.length[slots] = lens
                t.status[slots] = ring.TP_STATUS_SEND_REQUEST
                self._slot_next += n
                cidx = (self._c_tail + np.arange(n, dtype=np.int64)) & self._c_mask
                self._c_slot[cidx] = slots
                self._c_ndesc[cidx] = 1
                self._c_len[cidx] = lens
                self._c_tail += n
                self._kick()
                return
        # general path: gather each frame's pieces
        pieces: list[npt.NDArray[np.uint8]] = []
        nd = 0
        sent = False
        for a_, l_, i_ in zip(addrs.tolist(), lens.tolist(), ids.tolist()):
            res = self.pd.resolve(a_)
            if res is not None:
                mem, off = res
                pieces.append(mem[off:off + l_])
            nd += 1
            if i_ == _MASK:
                continue
            sent |= self._queue_frame(pieces, nd)
            pieces, nd = [], 0
        if sent:
            self._kick()

    def _queue_frame(self, pieces: list[npt.NDArray[np.uint8]], ndesc: int) -> bool:
        t = self._tx
        assert t is not None
        total = sum(int(p.shape[0]) for p in pieces)
        ci = self._c_tail & self._c_mask
        self._c_ndesc[ci] = ndesc
        self._c_len[ci] = total
        self._c_tail += 1
        frame = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if total > self.adapter.max_frame + 4 or (
                total > self.adapter.max_frame and not _tagged(frame)):
            self._c_slot[ci] = -1  # TOO_BIG: completes as a TX_ERROR, never sent
            return False
        slot = self._slot_next % t.nslots
        self._slot_next += 1
        o = slot * t.fs + ring.TX_DATA_OFFSET
        t.mem[o:o + total] = frame
        t.length[slot] = total
        t.status[slot] = ring.TP_STATUS_SEND_REQUEST
        self._c_slot[ci] = slot
        return True

    def _kick(self) -> None:
        err = self._s.kick()
        if err and err not in (errno.EAGAIN, errno.ENOBUFS):
            self.c["tx_kick_errors"] += 1
        self._kick_err = err

    def _tx_complete(self, out: EventArray, pos: int, room: int) -> int:
        """Write TX/TX_ERROR events for completed frames, in order; return events written."""
        t = self._tx
        h, tl = self._c_head, self._c_tail
        if t is None or h == tl or room <= 0:
            return 0
        idx = np.arange(h, tl, dtype=np.int64) & self._c_mask
        slots = self._c_slot[idx]
        done = (slots < 0) | (t.status[np.maximum(slots, 0)] == ring.TP_STATUS_AVAILABLE)
        k = int(done.size) if done.all() else int(done.argmin())
        if k < done.size and t.status[max(int(slots[k]), 0)] == ring.TP_STATUS_SEND_REQUEST \
                and self._kick_err:
            self._kick()  # an earlier send() gave up (e.g. ENOBUFS): ask again
        if k == 0:
            return 0
        ndesc = self._c_ndesc[idx[:k]].astype(np.int64)
        cum = np.cumsum(ndesc)
        err = slots[:k] < 0
        if not err.any():  # the common case, vectorised: one TX event per 64 frames
            ends = np.arange(EF_VI_TRANSMIT_BATCH, k + EF_VI_TRANSMIT_BATCH,
                             EF_VI_TRANSMIT_BATCH, dtype=np.int64)
            ends[-1] = k
            m = min(int(ends.shape[0]), room)
            ends = ends[:m]
            ev = out[pos:pos + m]
            ev["type"] = _TX
            ev["subtype"] = 0
            ev["flags"] = 0
            ev["q_id"] = self.q_id
            ev["ofs"] = 0
            ev["rq_id"] = (self._desc_done + cum[ends - 1]) & _MASK
            ev["len"] = 0
            ev["ts_ns"] = 0
            j = int(ends[-1])
            self.c["tx_packets"] += j
            self.c["tx_bytes"] += int(self._c_len[idx[:j]].sum())
            self._desc_done += int(cum[j - 1])
            self._c_head = h + j
            return m
        written = 0
        i = 0
        while i < k and written < room:
            kind_err = bool(err[i])
            j = i + 1
            lim = min(k, i + EF_VI_TRANSMIT_BATCH)
            while j < lim and bool(err[j]) == kind_err:
                j += 1
            e = out[pos + written]
            e["type"] = _TXERR if kind_err else _TX
            e["subtype"] = int(TxErrorType.TOO_BIG) if kind_err else 0
            e["flags"] = 0
            e["q_id"] = self.q_id
            e["ofs"] = 0
            e["rq_id"] = (self._desc_done + int(cum[j - 1])) & _MASK
            e["len"] = 0
            e["ts_ns"] = 0
            if kind_err:
                self.c["tx_too_big_drops"] += j - i
            else:
                self.c["tx_packets"] += j - i
                self.c["tx_bytes"] += int(self._c_len[idx[i:j]].sum())
            written += 1
            i = j
        if i:
            self._desc_done += int(cum[i - 1])
            self._c_head = h + i
        return written

    # ---- events ----------------------------------------------------------------------------
    def harvest(self, out: EventArray, max_events: int) -> int:
        """Pending RX/SW events, TX completions, then frames waiting in the ring.

        Never blocks; takes only frames ready when it looks (never chases arrivals).
        Cost: a strided status scan of the ring (1024 slots per step) and of the TX
        FIFO, the copies of the frames taken (vectorised when each fits one buffer),
        and ``O(events)`` record stores.
        """
        if self.closed:
            return 0
        n = self._drain(out, 0, max_events)
        n += self._tx_complete(out, n, max_events - n)
        if n < max_events:
            self._take(max_events - n)
            n += self._drain(out, n, max_events - n)
        return n

    def _drain(self, out: EventArray, pos: int, room: int) -> int:
        h = self._ph
        k = min(self._np - h, room)
        if k <= 0:
            return 0
        out[pos:pos + k] = self._pend[h:h + k]
        h += k
        if h == self._np:
            self._ph = self._np = 0
        else:
            self._ph = h
        return k

    def wait(self, timeout_ns: int | None) -> None:
        """Sleep in poll(2) until the ring has a frame or ``timeout_ns`` passes."""
        if self.closed or self._np > self._ph:
            return
        if self._c_head != self._c_tail:
            timeout_ns = min(timeout_ns if timeout_ns is not None else 1_000_000, 1_000_000)
        r = self._rx
        if r is not None and r.status[self._cur] & ring.TP_STATUS_USER:
            return
        ms = -1 if timeout_ns is None else max(0, (timeout_ns + 999_999) // 1_000_000)
        if r is None and ms < 0:
            ms = 1
        with contextlib.suppress(InterruptedError):
            self._poller.poll(ms)

    def sw_event(self, data: int) -> bool:
        if self.closed or self._room() <= 0:
            return False
        self._event(_SW, 0, 0, data & 0xFFFF, 0)
        return True

    def stats(self) -> dict[str, int]:
        """Counters; reads (and so resets) PACKET_STATISTICS into the running totals."""
        if not self.closed and self._rx is not None:
            with contextlib.suppress(OSError):
                packets, drops = self._s.statistics()
                self.c["rx_kernel_packets"] += packets
                self.c["rx_ring_drops"] += drops
        return dict(self.c)

    def close(self) -> None:
        if self.closed:
            return
        self.stats()
        self.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(self._s.fileno())
        self._rx = self._tx = None
        self._s.close()
        self.adapter._vis.discard(self)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _tagged(frame: npt.NDArray[np.uint8]) -> bool:
    return frame.shape[0] >= 14 and (int(frame[12]) << 8 | int(frame[13])) in cbpf.VLAN_TPIDS
