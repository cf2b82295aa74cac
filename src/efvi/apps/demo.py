"""A market-data-like UDP multicast feed through three VIs (what ``efvi demo`` runs).

An exchange VI publishes sequenced messages to a multicast group; a trader VI holds an
``ip4_local`` filter for the group; a capture VI sniffs every frame on the port. The
receive side checks order and gaps and measures one-way latency on the adapter clock
(send timestamp in the message, RX timestamp from the event).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface)
from efvi.adapters.sim.adapter import SimAdapter
from efvi.events import EventBatch
from efvi.constants import PKT_BUF_SIZE
from efvi.wire.address import multicast_mac
from efvi.wire.build import udp_frame

if TYPE_CHECKING:  # the writer is imported by whoever captures (start-up)
    from efvi.pcap import PcapNgWriter

#: message: seq u64, send_ts_ns i64, symbol 8s, price i64 (1e-4), qty u32, side u8, pad
MESSAGE = struct.Struct("!Qq8sqIB3x")
PAYLOAD_OFF = 42  # Ethernet 14 + IPv4 20 + UDP 8
_RX = int(EventType.RX)
_SW = int(EventType.SW)


@dataclass
class FeedResult:
    sent: int = 0
    received: int = 0
    sniffed: int = 0
    gaps: int = 0
    out_of_order: int = 0
    drops: int = 0
    wall_s: float = 0.0
    latencies_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    clock: str = ""
    drop_causes: dict[str, int] = field(default_factory=dict)

    @property
    def pps(self) -> float:
        return self.received / self.wall_s if self.wall_s > 0 else 0.0

    def latency_summary(self) -> dict[str, int]:
        lat = self.latencies_ns
        if lat.size == 0:
            return {}
        p = np.percentile(lat, [50, 90, 99, 99.9], method="lower")
        return {"min": int(lat.min()), "p50": int(p[0]), "p90": int(p[1]), "p99": int(p[2]),
                "p99_9": int(p[3]), "max": int(lat.max()), "mean": int(lat.mean())}


class _Ring:
    """An endpoint: PD + memory + VI, buffers posted by index."""

    def __init__(self, driver: Driver, nbuf: int, rxq: int, txq: int) -> None:
        self.pd = ProtectionDomain(driver)
        self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
        self.vi = VirtualInterface(self.pd, rxq=rxq, txq=txq)
        self.rows = self.mr.buf.reshape(nbuf, PKT_BUF_SIZE)
        self.addrs = self.mr.dma_addrs()

    def post_all(self) -> None:
        n = self.vi.receive_space()
        self.vi.receive_post_batch(self.addrs[:n], np.arange(n, dtype=np.uint32))


def _trade(tr: _Ring, b: EventBatch, res: FeedResult, expect: int,
           lat_parts: list[npt.NDArray[np.int64]]) -> tuple[int, int]:
    """The trader's work on one poll: check sequence numbers, measure one-way latency
    (RX timestamp − the send timestamp in the message), repost the buffers. Returns
    (messages taken, next expected sequence number)."""
    if not len(b):
        return 0, expect
    rxm = b.type == _RX
    ids = b.rq_id[rxm].astype(np.int64)
    got = int(ids.size)
    if got:
        rows = tr.rows[ids]
        seqs = rows[:, 42:50].copy().view(">u8").reshape(-1).astype(np.int64)
        sent_ts = rows[:, 50:58].copy().view(">i8").reshape(-1).astype(np.int64)
        lat_parts.append(b.ts_ns[rxm].astype(np.int64) - sent_ts)
        d = np.diff(np.concatenate(([expect - 1], seqs)))
        res.gaps += int(np.count_nonzero(d > 1))
        res.out_of_order += int(np.count_nonzero(d < 1))
        expect = int(seqs[-1]) + 1
        res.received += got
        tr.vi.receive_post_batch(tr.addrs[ids], ids.astype(np.uint32))
    return got, expect


#: data of the software event the capture-fed port queues at the end of the file
EOF_EVENT = 0xE0F


@dataclass
class ReplayedFeed(FeedResult):
    """:func:`run_from` results: a :class:`FeedResult` plus the capture feed's counters."""

    feed: dict[str, int] = field(default_factory=dict)
    feed_error: str | None = None
    first_seq: int = -1


def run_from(path: str, *, group: str = "239.100.0.1", port: int = 30001, speed: int = 1,
             progress: Callable[[FeedResult], None] | None = None,
             port_name: str = "trader-replay") -> ReplayedFeed:
    """Replay a recorded feed (``efvi demo -w`` output, or any capture of it) through
    the demo's trader, unchanged: the trader's port is ``sim:PORT?pcap=FILE`` so the
    recorded frames reach the trader VI through its ``ip4_local`` filter with their
    recorded RX timestamps (``speed=1``) or as fast as it polls (``speed=0``); the
    latencies are then the recorded ones, the same on every run. Ends at the capture
    feed's end-of-file event."""
    res = ReplayedFeed()
    url = (f"sim:{port_name}?pcap={path}&speed={speed}&eof_event={EOF_EVENT}")
    with Driver.open(url) as drx:
        tr = _Ring(drx, 4096, rxq=4096, txq=0)
        tr.vi.filter_add(FilterSpec.ip4_local("udp", group, port))
        tr.post_all()
        res.clock = tr.vi.clock_source
        lat_parts: list[npt.NDArray[np.int64]] = []
        expect = -1
        t0 = time.perf_counter()
        last_report = t0
        done = False
        while not done:
            b = tr.vi.poll()
            if len(b) and bool((b.type == _SW).any()):
                done = bool((b.len[b.type == _SW] == EOF_EVENT).any())
            if expect < 0 and len(b) and bool((b.type == _RX).any()):
                first = tr.rows[int(b.rq_id[b.type == _RX][0]), 42:50].tobytes()
                expect = res.first_seq = int.from_bytes(first, "big")
            _, expect = _trade(tr, b, res, expect, lat_parts)
            now_wall = time.perf_counter()
            if progress is not None and now_wall - last_report >= 1.0:
                last_report = now_wall
                res.wall_s = now_wall - t0
                progress(res)
        res.wall_s = time.perf_counter() - t0
        st = tr.vi.stats()
        res.drops = st["drops"]
        res.drop_causes = {f"trader_{k}": v for k, v in st.items() if k.endswith("_drops")}
        res.feed = {k: v for k, v in st.items() if k.startswith("feed_")}
        if isinstance(drx.adapter, SimAdapter) and drx.adapter.port.feed is not None:
            res.feed_error = drx.adapter.port.feed.error
        res.sent = res.feed.get("feed_packets", 0)
        res.latencies_ns = (np.concatenate(lat_parts) if lat_parts
                            else np.empty(0, np.int64))
    return res


def run_feed(messages: int = 100_000, *, batch: int = 1024, group: str = "239.100.0.1",
             port: int = 30001, url_tx: str = "sim:exchange?wire=demo-feed",
             url_rx: str = "sim:trader?wire=demo-feed", capture: "PcapNgWriter | None" = None,
             progress: Callable[[FeedResult], None] | None = None) -> FeedResult:
    """Publish ``messages`` through the feed and measure what arrives (see module doc)."""
    res = FeedResult()
    with Driver.open(url_tx) as dtx, Driver.open(url_rx) as drx:
        ex = _Ring(dtx, 2048, rxq=0, txq=2048)
        tr = _Ring(drx, 4096, rxq=4096, txq=0)
        cap = _Ring(drx, 4096, rxq=4096, txq=0)
        tr.vi.filter_add(FilterSpec.ip4_local("udp", group, port))
        cap.vi.filter_add(FilterSpec.port_sniff(promiscuous=True))
        tr.post_all()
        cap.post_all()
        res.clock = tr.vi.clock_source
        ifidx = -1
        if capture is not None:
            ifidx = capture.add_interface(name=drx.interface.name, mac=drx.interface.mac,
                                          description="efvi demo: sniff VI on the trader port")
        src = dtx.interface
        template = udp_frame(multicast_mac(group), src.mac, src.ipv4[0], group, 40001, port,
                             MESSAGE.pack(0, 0, b"EFVI", 1_000_000, 100, 0))
        flen = len(template)
        tpl = np.frombuffer(template, np.uint8)
        ex.rows[:, :flen] = tpl
        # UDP checksum 0 ("none") so per-message fields can change without recomputing it
        ex.rows[:, 40:42] = 0
        nslots = ex.rows.shape[0]
        lens = np.full(batch, flen, dtype=np.uint32)
        lat_parts: list[npt.NDArray[np.int64]] = []
        expect = 0
        next_seq = 0
        t0 = time.perf_counter()
        last_report = t0
        idle = 0
        while res.received + res.drops < messages and idle < 1000:
            if next_seq < messages and ex.vi.transmit_space() >= batch:
                n = min(batch, messages - next_seq)
                slots = (np.arange(next_seq, next_seq + n) % nslots).astype(np.int64)
                seq = np.arange(next_seq, next_seq + n, dtype=np.uint64)
                ex.rows[slots, 42:50] = seq.astype(">u8").view(np.uint8).reshape(n, 8)
                now = np.full(n, dtx.now_ns(), dtype=">i8")
                ex.rows[slots, 50:58] = now.view(np.uint8).reshape(n, 8)
                sent = ex.vi.transmit_batch(ex.addrs[slots], lens[:n], slots.astype(np.uint32))
                if sent > 0:
                    next_seq += sent
                    res.sent += sent
            ex.vi.transmit_completed(ex.vi.poll())
            got, expect = _trade(tr, tr.vi.poll(), res, expect, lat_parts)
            b = cap.vi.poll()
            if len(b):
                rxm = b.type == _RX
                ids = b.rq_id[rxm].astype(np.int64)
                res.sniffed += int(ids.size)
                if capture is not None and ids.size:
                    capture.write_batch(cap.rows[ids, :flen], b.len[rxm], b.ts_ns[rxm], ifidx)
                cap.vi.receive_post_batch(cap.addrs[ids], ids.astype(np.uint32))
            if got == 0 and next_seq >= messages:
                idle += 1
                res.drops = tr.vi.stats()["drops"]
            else:
                idle = 0
            now_wall = time.perf_counter()
            if progress is not None and now_wall - last_report >= 1.0:
                last_report = now_wall
                res.wall_s = now_wall - t0
                res.drops = tr.vi.stats()["drops"]
                progress(res)
        res.wall_s = time.perf_counter() - t0
        st_tr, st_cap = tr.vi.stats(), cap.vi.stats()
        res.drop_causes = {f"trader_{k}": v for k, v in st_tr.items() if k.endswith("_drops")}
        res.drop_causes.update({f"capture_{k}": v for k, v in st_cap.items()
                                if k.endswith("_drops")})
        res.drops = st_tr["drops"] + st_cap["drops"] + (res.sent - res.received - st_tr["drops"])
        if capture is not None:
            capture.set_stats(ifidx, st_cap["rx_packets"], st_cap["drops"])
        res.latencies_ns = (np.concatenate(lat_parts) if lat_parts
                            else np.empty(0, np.int64))
    return res
