"""Receive and count (ef_vi's ``efsink``): filters in, packets, bytes and drops out.

Buffers are posted up to the fill limit, refilled as events return them; the loop
polls in batches and, when idle, waits on the adapter rather than spinning.

Wake-ups (``latency_ms``, ``efvi sink --latency-ms``): a counting sink trades per-frame
latency for CPU. It lets frames wait up to ``latency_ms`` before it handles them, so a
steady stream costs a few dozen wake-ups a second instead of one per handful of frames:
on ``packet`` through the TPACKET_V3 block retire timeout (``retire_ms``, unless the URL
sets it), elsewhere by sleeping after a small batch for as long as the stream, at the
rate just measured, takes to bring a quarter of the posted buffers (never longer than
``latency_ms``, the next progress tick or the deadline). ``latency_ms=0`` handles frames
as they come (one wake-up per ``poll()`` that finds them). The risk of waiting: a burst
much faster than the rate just measured can use up the posted buffers during a sleep
(those frames are dropped and counted, as any frame finding no buffer is) — give
``latency_ms=0`` for bursty traffic that must not lose frames.

``run(count=N)`` stops at exactly N packets. A poll returns whatever batch was ready,
so the batch holding the Nth packet may hold more: those later events are harvested
(their buffers go back to the ring) but are not counted in ``rx_packets``/``rx_bytes``/
``rx_discards`` nor handed to ``on_packet``; the packets among them are counted in
``rx_after_limit``. Frames the poll did not return stay in the ring, not harvested.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from efvi import (Driver, EventBatch, EventType, FilterSpec, MemoryRegion,
                  ProtectionDomain, VirtualInterface)
from efvi.apps._link import link_lost
from efvi.apps.common import StopFlag
from efvi.constants import EF_VI_RX_EVENT_MERGE, PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterKind

_RX = int(EventType.RX)
_DISCARD = int(EventType.RX_DISCARD)
_CONT = 0x2
_NOT_WHOLE_RX = 0xFFFF | (_CONT << 16)  # a type, a subtype or CONT in the first word


@dataclass
class SinkStats:
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_discards: int = 0
    rx_after_limit: int = 0  # packets harvested in the batch that reached -n, not counted
    elapsed_s: float = 0.0
    drops: int = 0
    drop_causes: dict[str, int] = field(default_factory=dict)
    clock: str = ""
    first_s: float | None = None  # perf_counter when the first RX batch arrived
    last_s: float = 0.0  # and when the last one had been handled
    error: str = ""  # why it stopped early (the interface went away), else empty

    @property
    def pps(self) -> float:
        """Packets per second between the first and the last packet received."""
        if self.first_s is None or self.last_s <= self.first_s:
            return 0.0
        return self.rx_packets / (self.last_s - self.first_s)


PacketHook = Callable[[int, bytes, int], None]  # (ts_ns, frame, flags)


class Sink:
    """A VI on ``url`` with ``filters``; :meth:`run` counts what arrives."""

    def __init__(self, url: str, filters: Sequence[FilterSpec], *, nbuf: int = 16384,
                 rxq: int = 16384, fill: int | None = None, join: bool = False,
                 merge: bool = True, latency_ms: float = 50.0) -> None:
        if fill is not None and fill < 1:
            raise SetupError(f"fill level {fill} posts no buffers", errno=errno.EINVAL,
                             hint="give a fill level >= 1, or None for the ring's capacity")
        if not 0 <= latency_ms <= 1000:
            raise SetupError(f"latency budget {latency_ms} ms is outside 0..1000",
                             errno=errno.EINVAL,
                             hint="give 0 (handle frames as they come) up to 1000 ms")
        self.latency_s = latency_ms / 1e3
        if latency_ms and merge and url.startswith("packet:") and "retire_ms=" not in url:
            # the V3 block ring's retire timeout is the latency budget (whole ms, >= 1)
            url += ("&" if "?" in url else "?") + f"retire_ms={max(1, int(latency_ms))}"
        self.driver = Driver.open(url)
        try:
            self.pd = ProtectionDomain(self.driver)
            self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
            # a counting sink trades per-frame latency for throughput: merged RX events
            # (on packet, a TPACKET_V3 block ring: one wake-up per block)
            self.vi = VirtualInterface(self.pd, rxq=rxq, txq=0,
                                       flags=EF_VI_RX_EVENT_MERGE if merge else 0)
            self.cookies = [self.vi.filter_add(f) for f in filters]
            self._joins: list[socket.socket] = []
            if join:
                self._join(filters)
        except BaseException:
            self.driver.close()
            raise
        self.fill = min(fill or self.vi.receive_capacity(), self.vi.receive_capacity(), nbuf)
        self.addrs = self.mr.dma_addrs()
        self.rows = self.mr.buf.reshape(nbuf, PKT_BUF_SIZE)
        self.vi.receive_post_batch(self.addrs[:self.fill],
                                   np.arange(self.fill, dtype=np.uint32))

    def _join(self, filters: Sequence[FilterSpec]) -> None:
        """Join the multicast groups of the filters with kernel sockets (IGMP), as efsink -j."""
        if self.driver.adapter.name == "sim":
            raise UnsupportedError(
                "joining multicast groups (-j) goes through the kernel and needs a real "
                "interface; the sim adapter has none — use xdp:IFNAME or packet:IFNAME, or "
                "drop -j (sim delivers multicast to the filters without joins)")
        info = self.driver.interface
        for f in filters:
            if f.kind in (FilterKind.IP_LOCAL, FilterKind.IP_FULL) and f.ip_version == 4 \
                    and f.is_multicast:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                mreqn = (ipaddress.IPv4Address(f.local_ip).packed + bytes(4)
                         + info.ifindex.to_bytes(4, "little"))
                try:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                except OSError as exc:
                    s.close()
                    raise SetupError(
                        f"cannot join {ipaddress.IPv4Address(f.local_ip)} on {info.name}: "
                        f"{exc.strerror}", errno=exc.errno or errno.EINVAL,
                        hint="the interface needs an IPv4 address and multicast; see "
                             f"`ip addr show {info.name}`") from None
                self._joins.append(s)

    def run(self, count: int | None = None, duration_s: float | None = None,
            on_packet: PacketHook | None = None,
            on_second: Callable[[SinkStats], None] | None = None,
            stop: StopFlag | None = None) -> SinkStats:
        st = SinkStats(clock=self.vi.clock_source)
        vi = self.vi
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        if duration_s is not None and not duration_s > 0:
            raise SetupError(f"duration {duration_s} s never elapses", errno=errno.EINVAL,
                             hint="give a duration > 0, or None to run until stopped")
        if count is not None and count < 1:
            raise SetupError(f"count {count} is not positive", errno=errno.EINVAL,
                             hint="give a count >= 1, or None to run until stopped")
        deadline = t0 + duration_s if duration_s is not None else None
        target = max(1, self.fill // 4)  # frames a coalesced wake-up aims for
        nap = 0.0  # the last coalescing sleep (0: none since the last idle wait)
        t_nap = t0  # when it started
        while True:
            b = vi.poll()
            if len(b):
                if st.first_s is None:
                    st.first_s = time.perf_counter()
                self._handle(b, st, on_packet, None if count is None else count - st.rx_packets)
                st.last_s = now = time.perf_counter()
                k = len(b)
                if self.latency_s and k < target and (count is None or st.rx_packets < count):
                    # a small batch: sleep while the stream fills buffers. The first nap
                    # after an idle wait is a 1 ms probe; later ones last as long as the
                    # rate seen over the last nap takes to bring `target` frames
                    nap = min(self.latency_s, target * (now - t_nap) / k if nap else 0.001)
                    t_nap = now
                    until = min(now + nap, next_tick)
                    if deadline is not None:
                        until = min(until, deadline)
                    if until > now and not (stop is not None and stop.is_set()):
                        time.sleep(until - now)
                else:
                    nap = 0.0
            elif count is None or st.rx_packets < count:
                # sleep until traffic, the next progress tick or the deadline (≤ 100 ms so a
                # stop flag set by a signal is seen): an idle or slow stream costs a few
                # wake-ups a second, not one per timeout
                nap = 0.0
                until = next_tick if deadline is None else min(next_tick, deadline)
                vi.eventq_wait(max(1, min(100_000_000,
                                          int((until - time.perf_counter()) * 1e9))))
            now = time.perf_counter()
            if count is not None and st.rx_packets >= count:
                break
            if deadline is not None and now >= deadline:
                break
            if stop is not None and stop.is_set():
                break
            if now >= next_tick:
                next_tick += 1.0
                st.elapsed_s = now - t0
                st.error = link_lost(self.driver)  # control path, once a second
                if st.error:
                    break
                if on_second is not None:
                    on_second(st)
        st.elapsed_s = time.perf_counter() - t0
        s = vi.stats()
        st.drops = s["drops"]
        st.drop_causes = {k: v for k, v in s.items() if k.endswith("_drops")}
        return st

    def _handle(self, b: EventBatch, st: SinkStats, on_packet: PacketHook | None,
                limit: int | None = None) -> None:
        """Count one polled batch; with ``limit``, count at most that many packets.

        Events after the ``limit``-th packet are harvested (buffers re-posted) and their
        packets added to ``rx_after_limit`` only.
        """
        # type | subtype << 8 | flags << 16 of each record as one u32 word: all zero but
        # SOP/MULTICAST/OUTGOING/HW_TS means every event is a whole good frame
        recs = b.records
        if limit is None and on_packet is None and recs.flags.c_contiguous \
                and not (recs.view(np.uint32)[::6] & _NOT_WHOLE_RX).any():
            # all whole good frames: count, repost
            ids32 = b.rq_id
            st.rx_packets += ids32.shape[0]
            st.rx_bytes += int(b.len.sum())
            self.vi.receive_post_batch(self.addrs[ids32], ids32)
            return
        t = b.type
        rxish = (t == _RX) | (t == _DISCARD)
        if not rxish.any():
            return
        ids = b.rq_id[rxish].astype(np.int64)
        flags = b.flags[rxish]
        lens = b.len[rxish]
        ends = (flags & _CONT) == 0
        kinds = t[rxish]
        good = (kinds == _RX) & ends
        counted = np.ones(len(good), dtype=bool)
        if limit is not None:
            at = np.flatnonzero(good)
            if len(at) > limit:
                cut = int(at[limit - 1]) + 1 if limit > 0 else 0
                counted[cut:] = False
                st.rx_after_limit += len(at) - max(limit, 0)
                good = good & counted
        st.rx_packets += int(np.count_nonzero(good))
        st.rx_bytes += int(lens[good].sum())
        st.rx_discards += int(np.count_nonzero((kinds == _DISCARD) & counted))
        if on_packet is not None:
            ofs = b.ofs[rxish]
            ts = b.ts_ns[rxish]
            for i in np.flatnonzero(good).tolist():
                row = int(ids[i])
                o = int(ofs[i])
                on_packet(int(ts[i]), self.rows[row, o:o + min(int(lens[i]), PKT_BUF_SIZE - o)]
                          .tobytes(), int(flags[i]))
        self.vi.receive_post_batch(self.addrs[ids], ids.astype(np.uint32))

    def close(self) -> None:
        for s in self._joins:
            s.close()
        self.driver.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
