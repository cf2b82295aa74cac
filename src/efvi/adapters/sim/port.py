"""Ports of the software NIC and the virtual wires between them.

A :class:`SimPort` is one NIC port: a MAC, addresses, a filter table
(:class:`~efvi.adapters.sim.filter_table.FilterTable`), a kernel side that gets
what no filter steals, and a link to the ports on the same wire (or to itself, with
``loopback``). Ports live in a process-wide :class:`Fabric`, named, created on first
use, so ``Driver.open("sim:a?wire=w")`` and ``Driver.open("sim:b?wire=w")`` are two
ends of one wire. A wire named ``@NAME`` joins two *processes* instead
(:class:`RemoteWire`): ``efvi send sim:a?wire=@w ...`` in one shell reaches
``efvi sink sim:b?wire=@w ...`` in another.

Data movement is batch first: a TX doorbell hands a :class:`FrameBatch` (offsets and
lengths into one flat byte array) to :meth:`SimPort.receive` of each port on the
wire, which classifies frames by flow, asks the filter table once per flow, and DMAs
each target VI's share with a few numpy operations.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.dma import gather_rows, gather_words
from efvi.adapters.sim.clock import Clock, RealClock, VirtualClock
from efvi.adapters.sim.filter_table import Decision, FilterEntry, FilterTable
from efvi.adapters.sim.frames import (_AR_KEY, _CANON_ZERO, _HASH_MULT, _ONE_FLOW_MASK,
                                      KEY_BYTES, FrameBatch, scalar_key)
from efvi.constants import EF_VI_TRANSMIT_BATCH
from efvi.wire.classify import classify_one

if TYPE_CHECKING:
    from efvi.adapters.sim.remote import RemoteWire
    from efvi.adapters.sim.feed import CaptureFeed
    from efvi.adapters.sim.vi import SimVI

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: per-frame wire overhead: preamble 8 + FCS 4 + inter-frame gap 12
WIRE_OVERHEAD = 24
#: propagation + PHY/MAC latency of a virtual wire, ns
WIRE_LATENCY_NS = 350
#: TX doorbells (or runs of one VI's doorbells) of at most this many single-descriptor
#: frames are run frame by frame in plain Python (SimVI._tx_scalar, receive_list,
#: SimVI.dma_in_list), which beats the numpy batch path's fixed cost up to about here;
#: the events, stamps and counters are the same either way. At most
#: EF_VI_TRANSMIT_BATCH (one TX event per doorbell).
SCALAR_MAX = EF_VI_TRANSMIT_BATCH
class SimPort:
    """One port of the software NIC (see the module doc)."""

    def __init__(self, fabric: "Fabric", name: str, mac: bytes, ipv4: tuple[str, ...],
                 mtu: int, clock: Clock) -> None:
        self.fabric = fabric
        self.name = name
        self.mac = mac
        self.mac_int = int.from_bytes(mac, "big")
        self.ipv4 = ipv4
        self.mtu = mtu
        self.clock = clock
        self.ifindex = fabric.next_ifindex()
        self.table = FilterTable()
        self.wire: str | None = None
        self.remote: RemoteWire | None = None
        #: a capture file playing into this port (``pcap=FILE``), pumped by its VIs' polls
        self.feed: CaptureFeed | None = None
        #: the VIs allocated on this port (the feed waits until they have drained)
        self.vis: list[SimVI] = []
        self.loopback = False
        self.link_up = True
        self.kernel_groups: frozenset[int] = frozenset()
        self.wire_free_at = 0
        self._cache: dict[bytes, Decision] = {}
        self._cache_version = -1
        self.users = 0
        #: counters of the port (kernel side and wire)
        self.counters: dict[str, int] = collections.defaultdict(int)
        #: the last frames the kernel side got (for tests and tools)
        self.kernel_rx: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=256)
        #: fault injection for tests: the next TX doorbell completes with this TX_ERROR
        self.fail_next_tx: int | None = None

    # ---- topology ------------------------------------------------------------------
    def peers(self) -> list["SimPort"]:
        """Ports that receive what this port transmits."""
        out = [self] if self.loopback else []
        if self.wire is not None:
            out += [p for p in self.fabric.wires.get(self.wire, ()) if p is not self]
        return out

    @property
    def max_frame(self) -> int:
        """Longest frame the MAC accepts: MTU + Ethernet header + two VLAN tags."""
        return self.mtu + 14 + 8

    def join_group(self, group_mac: bytes) -> None:
        """Let the kernel side accept a multicast MAC (an IGMP join, in effect)."""
        self.kernel_groups = self.kernel_groups | {int.from_bytes(group_mac, "big")}

    # ---- transmit ---------------------------------------------------------------------
    def serialise(self, lens: I64, ready_ns: int) -> I64:
        """Wire timestamps (start of each frame) for frames queued at ``ready_ns``.

        Frames leave back to back at the port's line rate; the clock moves to the end of
        the last one (virtual clock) — cost: one cumsum.
        """
        clock = self.clock
        if isinstance(clock, RealClock):
            now = clock.now_ns()
            return np.full(lens.shape[0], now, dtype=np.int64)
        start = max(ready_ns, self.wire_free_at)
        ser = ((lens + WIRE_OVERHEAD) * 8 * 1000) // self.fabric.rate_mbps
        ends = start + np.cumsum(ser)
        ts = ends - ser
        self.wire_free_at = int(ends[-1]) if ends.shape[0] else start
        return ts

    def serialise_list(self, lens: list[int]) -> list[int]:
        """:meth:`serialise` of a few frames from plain ints (no numpy; the same
        stamps: back to back from ``max(now, wire free)``)."""
        clock = self.clock
        if isinstance(clock, RealClock):
            return [clock.now_ns()] * len(lens)
        t = max(clock.now_ns(), self.wire_free_at)
        rate = self.fabric.rate_mbps
        out: list[int] = []
        add = out.append
        for ln in lens:
            add(t)
            t += ((ln + WIRE_OVERHEAD) * 8000) // rate
        self.wire_free_at = t
        return out

    def _send_remote(self, frames: list[bytes], stamps: list[int]) -> None:
        assert self.remote is not None
        for cause, n in self.remote.send(frames, stamps).items():
            self.counters[f"tx_{cause}_drops"] += n

    def pump(self, max_frames: int = 256) -> int:
        """Receive what the other process put on a remote wire (called by harvest)."""
        if self.remote is None:
            return 0
        frames, stamps = self.remote.recv(max_frames)
        if frames:
            self.receive(FrameBatch.from_frames(frames, np.array(stamps, dtype=np.int64)))
        return len(frames)

    def deliver_list(self, frames: list[bytes], stamps: list[int]) -> None:
        """:meth:`deliver` of a few frames (plain bytes and ints; no numpy)."""
        n = len(frames)
        c = self.counters
        if not self.link_up:
            c["tx_link_down_drops"] += n
            return
        c["tx_packets"] += n
        if self.remote is not None:
            self._send_remote(frames, stamps)
        peers = self.peers()
        if not peers and self.remote is None:
            c["tx_no_peer_drops"] += n
        for p in peers:
            p.receive_list(frames, stamps)

    def receive_one(self, frame: bytes, ts: int, *, exact_ts: bool = False) -> None:
        """:meth:`receive` for one frame (see :meth:`receive_list`)."""
        self.receive_list([frame], [ts], exact_ts=exact_ts)

    def receive_list(self, frames: list[bytes], stamps: list[int], *,
                     exact_ts: bool = False) -> None:
        """:meth:`receive` for a few frames, no numpy: the same stamps, routing (one
        cached decision per flow, reused while the first 42 bytes repeat), events and
        counters. Frames of one decision go to each target VI in one call. With bpf
        filters installed the batch path runs (the programs run over batches)."""
        n = len(frames)
        if n == 0:
            return
        table = self.table
        if table.version != self._cache_version:
            self._cache.clear()
            self._cache_version = table.version
        if table.has_bpf:
            self.receive(FrameBatch.from_frames(frames, np.array(stamps, dtype=np.int64)),
                         exact_ts=exact_ts)
            return
        clock = self.clock
        if not isinstance(clock, VirtualClock):
            tss = [clock.now_ns()] * n
        else:
            if exact_ts:
                tss = stamps
            else:
                rate = self.fabric.rate_mbps
                tss = [t + WIRE_LATENCY_NS + ((len(f) + WIRE_OVERHEAD) * 8000) // rate
                       for f, t in zip(frames, stamps)]
            clock.advance_to(tss[-1])
        c = self.counters
        c["rx_packets"] += n
        last = b""
        d: Decision | None = None
        d0: Decision | None = None
        ds: list[Decision] = []
        for frame in frames:
            h = frame[:42]
            if h != last or d is None:
                key = scalar_key(frame)
                d = self._decide_frame(key, frame)
                # the flow key covers the first 42 bytes: a repeat of them routes alike
                last = h if key is not None else b""
                if d0 is None:
                    d0 = d
            ds.append(d)
        if all(x is d0 for x in ds):  # one decision (one flow): each target in one call
            assert d0 is not None
            for e in d0.steal + d0.sniff:
                _pick(e, d0.flow_hash).dma_in_list(frames, tss)
            if d0.to_kernel:
                c["kernel_rx_packets"] += n
                c["kernel_rx_bytes"] += sum(map(len, frames))
                self.kernel_rx.extend(zip(tss, frames))
            elif d0.filter_miss:
                c["rx_filter_miss_drops"] += n
            return
        per_vi: dict[int, tuple["SimVI", list[bytes], list[int]]] = {}
        for frame, ts, d in zip(frames, tss, ds):
            for e in d.steal + d.sniff:
                vi = _pick(e, d.flow_hash)
                slot = per_vi.get(id(vi))
                if slot is None:
                    slot = per_vi[id(vi)] = (vi, [], [])
                slot[1].append(frame)
                slot[2].append(ts)
            if d.to_kernel:
                c["kernel_rx_packets"] += 1
                c["kernel_rx_bytes"] += len(frame)
                self.kernel_rx.append((ts, frame))
            elif d.filter_miss:
                c["rx_filter_miss_drops"] += 1
        for vi, fs, ts_ in per_vi.values():
            vi.dma_in_list(fs, ts_)

    def deliver(self, batch: FrameBatch) -> None:
        """Put a transmitted batch on the wire: every peer port receives it."""
        if not self.link_up:
            self.counters["tx_link_down_drops"] += len(batch)
            return
        self.counters["tx_packets"] += len(batch)
        if self.remote is not None:
            self._send_remote([batch.frame(i) for i in range(len(batch))], batch.ts.tolist())
        peers = self.peers()
        if not peers and self.remote is None:
            self.counters["tx_no_peer_drops"] += len(batch)
        for p in peers:
            p.receive(batch)

    # ---- receive ----------------------------------------------------------------------
    def receive(self, batch: FrameBatch, *, exact_ts: bool = False) -> None:
        """Route a batch of arriving frames (cost: O(n) numpy + one decision per flow).

        A batch of one flow (the common case) costs about a dozen numpy calls here plus
        the DMA of each target VI; several flows add one ``np.unique``. ``exact_ts``:
        ``batch.ts`` are the RX timestamps as they are (a capture feed on the virtual
        clock), not the far end's TX times plus wire latency.
        """
        n = len(batch)
        if n == 0:
            return
        if self.table.version != self._cache_version:
            self._cache.clear()
            self._cache_version = self.table.version
        ts = batch.ts
        if exact_ts and isinstance(self.clock, VirtualClock):
            self.clock.advance_to(int(ts[-1]))
        elif isinstance(self.clock, VirtualClock):
            ts = ts + (WIRE_LATENCY_NS + ((batch.lens + WIRE_OVERHEAD) * 8 * 1000)
                       // self.fabric.rate_mbps)
            self.clock.advance_to(int(ts[-1]))
        else:
            ts = np.full(n, self.clock.now_ns(), dtype=np.int64)
        self.counters["rx_packets"] += n
        too_long = batch.lens > self.max_frame if int(batch.lens.max()) > self.max_frame \
            else None
        groups, decisions = self._route(batch)
        if self.table.has_bpf:
            self._receive_bpf(batch, ts, too_long, groups, decisions)
            return
        if groups is None:  # one flow
            d = decisions[0]
            mcast = bool(batch.mem[int(batch.offs[0])] & 1)
            for entry in d.steal + d.sniff:
                _pick(entry, d.flow_hash).dma_in(batch, None, ts, too_long, mcast)
            if d.to_kernel:
                self._to_kernel(batch, np.arange(n, dtype=np.int64), ts)
            elif d.filter_miss:
                self.counters["rx_filter_miss_drops"] += n
            return
        # several flows: target VI -> mask over groups
        per_vi: dict[int, tuple["SimVI", npt.NDArray[np.bool_]]] = {}
        kernel = np.zeros(len(decisions), dtype=bool)
        miss = np.zeros(len(decisions), dtype=bool)
        for g, d in enumerate(decisions):
            kernel[g] = d.to_kernel
            miss[g] = d.filter_miss
            for entry in d.steal + d.sniff:
                vi = _pick(entry, d.flow_hash)
                slot = per_vi.get(id(vi))
                if slot is None:
                    slot = (vi, np.zeros(len(decisions), dtype=bool))
                    per_vi[id(vi)] = slot
                slot[1][g] = True
        for vi, gmask in per_vi.values():
            sel = np.flatnonzero(gmask[groups])
            if sel.size:
                vi.dma_in(batch, sel, ts, too_long)
        if kernel.any():
            self._to_kernel(batch, np.flatnonzero(kernel[groups]), ts)
        if miss.any():
            self.counters["rx_filter_miss_drops"] += int(np.count_nonzero(miss[groups]))

    def _receive_bpf(self, batch: FrameBatch, ts: I64, too_long: npt.NDArray[np.bool_] | None,
                     groups: I64 | None, decisions: list[Decision]) -> None:
        """:meth:`receive` when bpf filters are installed: table decisions per flow, then
        every bpf program over the whole batch (:meth:`FilterTable.bpf_matches`)."""
        n = len(batch)
        g = np.zeros(n, dtype=np.int64) if groups is None else groups
        stolen = np.array([bool(d.steal) for d in decisions], dtype=bool)[g]
        kernel = np.array([d.to_kernel for d in decisions], dtype=bool)[g]
        miss = np.array([d.filter_miss for d in decisions], dtype=bool)[g]
        per_vi: dict[int, tuple["SimVI", npt.NDArray[np.bool_]]] = {}

        def give(vi: "SimVI", mask: npt.NDArray[np.bool_]) -> None:
            slot = per_vi.get(id(vi))
            if slot is None:
                per_vi[id(vi)] = (vi, mask.copy())
            else:
                slot[1][:] |= mask

        for j, d in enumerate(decisions):
            for entry in d.steal + d.sniff:
                give(_pick(entry, d.flow_hash), g == j)
        taken = stolen.copy()
        fh: npt.NDArray[np.int64] | None = None
        for entry, hit in self.table.bpf_matches(batch.mem, batch.offs, batch.lens, taken):
            if len(entry.targets) == 1:
                give(entry.targets[0], hit)
                continue
            if fh is None:
                fh = np.array([d.flow_hash for d in decisions], dtype=np.int64)[g]
            pick = fh % len(entry.targets)
            for t, vi in enumerate(entry.targets):
                give(vi, hit & (pick == t))
        bpf_stole = taken & ~stolen
        kernel &= ~bpf_stole
        miss &= ~bpf_stole
        for vi, mask in per_vi.values():
            sel = np.flatnonzero(mask)
            if sel.size:
                vi.dma_in(batch, sel, ts, too_long)
        if kernel.any():
            self._to_kernel(batch, np.flatnonzero(kernel), ts)
        if miss.any():
            self.counters["rx_filter_miss_drops"] += int(np.count_nonzero(miss))

    def _to_kernel(self, batch: FrameBatch, ksel: I64, ts: I64) -> None:
        self.counters["kernel_rx_packets"] += int(ksel.size)
        self.counters["kernel_rx_bytes"] += int(batch.lens[ksel].sum())
        keep = self.kernel_rx.maxlen or 0
        for i in ksel[-keep:].tolist():
            self.kernel_rx.append((int(ts[i]), batch.frame(i)))

    def _decide(self, key: bytes | None, frame: Callable[[], bytes]) -> Decision:
        """The routing decision for a flow key (cached), classifying ``frame()`` on a miss."""
        d = self._cache.get(key) if key is not None else None
        if d is None:
            d = self.table.decide(classify_one(frame()), self.mac_int, self.kernel_groups)
            if key is not None and len(self._cache) < 65536:
                self._cache[key] = d
        return d

    def _decide_frame(self, key: bytes | None, frame: bytes) -> Decision:
        """:meth:`_decide` for a frame at hand."""
        d = self._cache.get(key) if key is not None else None
        if d is None:
            d = self.table.decide(classify_one(frame), self.mac_int, self.kernel_groups)
            if key is not None and len(self._cache) < 65536:
                self._cache[key] = d
        return d

    def _one_flow(self, batch: FrameBatch) -> Decision | None:
        """The decision if every frame is the same plain IPv4/UDP flow, else None.

        The quick test of :meth:`_route`'s common case: the first 40 bytes of every
        frame, as five 8-byte words with the per-packet fields (IP id, TTL, header
        checksum) masked out, equal those of the first frame, and every frame holds its
        UDP header. Cost: ~6 numpy calls over n × 5 words, no copy of the headers.
        """
        words = gather_words(batch.mem, batch.offs, KEY_BYTES // 8)
        if words is None or int(batch.lens.min()) < 42:
            return None
        masked = words & _ONE_FLOW_MASK
        if not (masked == masked[0]).all():
            return None
        h0 = bytes(words[0].tobytes())
        if h0[12:15] != b"\x08\x00\x45" or h0[23] != 17 or h0[20] & 0x3F or h0[21] \
                or ((h0[16] << 8) | h0[17]) < 28:
            return None
        key = scalar_key(h0 + b"\x00\x00")  # the key format of _route / receive_one
        assert key is not None
        return self._decide(key, functools.partial(batch.frame, 0))

    def _route(self, batch: FrameBatch) -> tuple[I64 | None, list[Decision]]:
        """Group frames by flow and decide once per flow.

        Returns (group of each frame, decisions), or (None, [decision]) when every frame
        is of the one flow. The flow key is the first 40 bytes with the fields that do
        not change routing zeroed — valid only for plain IPv4/UDP frames, so any other
        frame is decided on its own.
        """
        n = len(batch)
        lens = batch.lens
        one = self._one_flow(batch)
        if one is not None:
            return None, [one]
        hdr = np.array(gather_rows(batch.mem, batch.offs, KEY_BYTES), copy=True)
        if int(lens.min()) < KEY_BYTES:
            hdr[_AR_KEY[None, :] >= lens[:, None]] = 0
        tot = (hdr[:, 16].astype(np.int64) << 8) | hdr[:, 17]
        hdr[:, _CANON_ZERO] = 0
        h0 = hdr[0]
        row0_canon = (h0[12] == 8 and h0[13] == 0 and h0[14] == 0x45 and h0[23] == 17
                      and not (h0[20] & 0x3F) and not h0[21])
        if row0_canon and (hdr == h0).all():
            udp_ok = (lens >= 42) & (tot >= 28)
            if udp_ok.all() or not udp_ok.any():
                key = bytes(h0)
                key = key[:16] + (b"\x01" if udp_ok[0] else b"\x00") + key[17:]
                return None, [self._decide(key, lambda: batch.frame(0))]
        canon = ((hdr[:, 12] == 8) & (hdr[:, 13] == 0) & (hdr[:, 14] == 0x45)
                 & (hdr[:, 23] == 17) & ((hdr[:, 20] & 0x3F) == 0) & (hdr[:, 21] == 0))
        hdr[:, 16] = (lens >= 42) & (tot >= 28)
        decisions: list[Decision] = []
        groups = np.empty(n, dtype=np.int64)
        all_canon = bool(canon.all())
        if all_canon or canon.any():
            ci = np.arange(n, dtype=np.int64) if all_canon else np.flatnonzero(canon)
            keys = hdr if all_canon else hdr[ci]
            words = np.ascontiguousarray(keys).view(np.uint64)  # (m, 5)
            h = (words * _HASH_MULT).sum(axis=1, dtype=np.uint64)
            _, first, inv = np.unique(h, return_index=True, return_inverse=True)
            if not (keys == keys[first[inv]]).all():  # a hash collision: be exact
                _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            for j in first.tolist():
                decisions.append(self._decide(keys[j].tobytes(),
                                              functools.partial(batch.frame, int(ci[j]))))
            groups[ci] = inv.reshape(-1)
        if not all_canon:
            for i in np.flatnonzero(~canon).tolist():
                groups[i] = len(decisions)
                decisions.append(self._decide(None, functools.partial(batch.frame, i)))
        return groups, decisions


def _ints(x: npt.NDArray[np.unsignedinteger] | list[int]) -> list[int]:
    return x if isinstance(x, list) else x.tolist()


def _pick(entry: FilterEntry, fhash: int) -> "SimVI":
    targets = entry.targets
    if len(targets) == 1:
        return targets[0]  # type: ignore[no-any-return]
    return targets[fhash % len(targets)]  # type: ignore[no-any-return]


class Fabric:
    """Every sim port and wire of this process, and the TX doorbells not yet run."""

    #: run the pending doorbells once this many descriptors wait
    PENDING_LIMIT = 16384

    def __init__(self) -> None:
        #: doorbells not yet run: (VI, addresses, lengths, ids), arrays or (one frame's)
        #: lists of ints
        self.pending: list[tuple["SimVI", npt.NDArray[np.uint64] | list[int],
                                 npt.NDArray[np.uint32] | list[int],
                                 npt.NDArray[np.uint32] | list[int]]] = []
        self.pending_desc = 0
        #: called on every TX doorbell (fd-readiness hooks; see SimVI.on_event)
        self.wakers: set[Callable[[], None]] = set()
        self.ports: dict[str, SimPort] = {}
        self.wires: dict[str, list[SimPort]] = {}
        self.clock = VirtualClock()
        self.rate_mbps = 10_000
        self._ifindex = 100

    def flush(self) -> None:
        """Run every pending TX doorbell, in the order rung; consecutive doorbells of one
        VI run as one batch (cost: one concatenate per run of doorbells)."""
        while self.pending:
            pend, self.pending = self.pending, []
            self.pending_desc = 0
            i = 0
            while i < len(pend):
                vi = pend[i][0]
                j = i + 1
                while j < len(pend) and pend[j][0] is vi:
                    j += 1
                if j - i == 1:
                    _, a, ln, ids = pend[i]
                    vi.tx_run(a, ln, ids)
                else:
                    run = pend[i:j]
                    if sum(len(p[3]) for p in run) <= SCALAR_MAX:  # a few: plain ints
                        vi.tx_run([x for p in run for x in _ints(p[1])],
                                  [x for p in run for x in _ints(p[2])],
                                  [x for p in run for x in _ints(p[3])])
                    else:
                        vi.tx_run(np.concatenate([np.asarray(p[1], np.uint64) for p in run]),
                                  np.concatenate([np.asarray(p[2], np.uint32) for p in run]),
                                  np.concatenate([np.asarray(p[3], np.uint32) for p in run]))
                i = j

    def next_ifindex(self) -> int:
        self._ifindex += 1
        return self._ifindex

    def port(self, name: str, options: dict[str, str]) -> SimPort:
        """The port called ``name``, created with ``options`` on first use."""
        port = self.ports.get(name)
        if port is None:
            h = zlib.crc32(name.encode())
            mac = bytes.fromhex(options["mac"].replace(":", "")) if "mac" in options else \
                bytes([0x02, 0x00, 0x5E, (h >> 16) & 0xFF, (h >> 8) & 0xFF, h & 0xFF])
            ip = options.get("ip") or f"198.18.{100 + (h >> 8) % 100}.{1 + h % 250}"
            ipaddress.IPv4Address(ip)
            clock: Clock = RealClock() if options.get("clock") == "real" else self.clock
            port = SimPort(self, name, mac, (ip,), int(options.get("mtu", 1500)), clock)
            self.ports[name] = port
        if options.get("loopback") in ("1", "true", "yes"):
            port.loopback = True
        wire = options.get("wire")
        if wire and wire.startswith("@"):
            if port.remote is None:
                from efvi.adapters.sim.remote import RemoteWire  # only for @wires (start-up)

                port.remote = RemoteWire(wire[1:])
        elif wire and port.wire != wire:
            ends = self.wires.setdefault(wire, [])
            ends.append(port)
            port.wire = wire
        return port

    def release(self, port: SimPort) -> None:
        """Forget a port no driver uses any more (its wire end is freed)."""
        if port.users > 0:
            return
        if port.feed is not None:
            port.feed.close()
            port.feed = None
        if port.remote is not None:
            port.remote.close()
            port.remote = None
        if port.wire is not None:
            ends = self.wires.get(port.wire, [])
            if port in ends:
                ends.remove(port)
            if not ends:
                self.wires.pop(port.wire, None)
        self.ports.pop(port.name, None)

    def reset(self) -> None:
        """Drop every port and wire and restart the virtual clock (tests)."""
        for p in self.ports.values():
            if p.remote is not None:
                p.remote.close()
            if p.feed is not None:
                p.feed.close()
        self.pending.clear()
        self.pending_desc = 0
        self.ports.clear()
        self.wires.clear()
        self.clock = VirtualClock()


#: The process-wide fabric.
FABRIC = Fabric()
