"""Spread receive over a VI set and show it is by flow (ef_vi's ``efrss``): ``efvi rss``.

A :class:`~efvi.vi.VISet` of ``n`` VIs gets the set filters (efrss's ``unicast_all`` +
``multicast_all`` by default; sniffed on ``packet``); the adapter spreads matching
frames over the members by flow — on ``xdp`` member *i* owns RX queue *i* (the NIC's
RSS, or on veth the sender's TX queue choice), on ``packet`` a ``PACKET_FANOUT_HASH``
group (the kernel's symmetric flow hash), on ``sim`` the symmetric flow hash of the
filter table. :class:`RssCounter` counts packets per VI and classifies every frame
(:func:`efvi.wire.classify.classify`, batch) into its flow — IP version, protocol,
addresses and ports — to show the spread is by flow: each flow's frames must all land
on one VI (``split_flows`` counts flows seen on more than one; a correct spread keeps
it at 0). Non-IP frames count per VI but belong to no flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain, VISet,
                  VirtualInterface)
from efvi.constants import PKT_BUF_SIZE
from efvi.wire.classify import classify

__all__ = ["RssCounter", "RssRunner", "RssStats", "default_filters", "flow_keys", "poll_count"]

_RX = int(EventType.RX)
_DISCARD = int(EventType.RX_DISCARD)
_HEAD = 96  # bytes of each frame classified (Ethernet, 2 tags, IPv6 + ports)
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)


def default_filters(adapter: str) -> list[FilterSpec]:
    """efrss's set filters: ``unicast_all`` + ``multicast_all`` (sniffs on ``packet``)."""
    specs = [FilterSpec.unicast_all(), FilterSpec.multicast_all()]
    return [s.sniff() for s in specs] if adapter == "packet" else specs


def flow_keys(frames: npt.NDArray[np.uint8], lens: npt.NDArray[np.integer]
              ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """A 64-bit key per frame for its 5-tuple (direction-sensitive) and whether the
    frame is IP at all. ``frames`` is (N, S) uint8, frame *i* from column 0. Numpy
    only: a few dozen vectorised operations per call."""
    c = classify(frames, lens)
    is_ip = (c.ip_version == 4) | (c.ip_version == 6)
    u = np.uint64
    k = (c.src_ip4.astype(u) << u(32)) | c.dst_ip4.astype(u)
    if (c.ip_version == 6).any():
        s6 = np.ascontiguousarray(c.src_ip6).view("<u8")
        d6 = np.ascontiguousarray(c.dst_ip6).view("<u8")
        k6 = (s6[:, 0] * _M1) ^ (s6[:, 1] * _M2) ^ (d6[:, 0] * _M2) ^ (d6[:, 1] * _M1)
        k = np.where(c.ip_version == 6, k6, k)
    ports = ((c.src_port.astype(u) << u(16)) | c.dst_port.astype(u)
             | (c.proto.astype(u) << u(32)) | (c.ip_version.astype(u) << u(40)))
    return k ^ (ports * _M1), is_ip


@dataclass
class RssStats:
    """Packets per VI, flows per VI and the flows that were split over VIs."""

    per_vi: list[int]
    flows_per_vi: list[int]
    flows: int = 0
    split_flows: int = 0
    non_ip: int = 0
    discards: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "signal"
    vi_drops: list[dict[str, int]] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return sum(self.per_vi)

    def as_dict(self) -> dict[str, object]:
        return {"packets": self.packets, "per_vi": self.per_vi,
                "flows": self.flows, "flows_per_vi": self.flows_per_vi,
                "split_flows": self.split_flows, "non_ip": self.non_ip,
                "discards": self.discards, "elapsed_s": round(self.elapsed_s, 3),
                "stopped_by": self.stopped_by, "vi_drops": self.vi_drops}


class RssCounter:
    """Sans-I/O: feed each VI's received frames; it keeps the counts (see module doc)."""

    def __init__(self, n: int) -> None:
        self.stats = RssStats([0] * n, [0] * n)
        self._home: dict[int, int] = {}  # flow key -> first VI
        self._split: set[int] = set()
        #: flow keys first seen since the last :meth:`take_new_flows` (workers report them)
        self.new_flows: list[int] = []

    def add(self, vi: int, frames: npt.NDArray[np.uint8], lens: npt.NDArray[np.integer]) -> None:
        """Count ``len(frames)`` frames received by VI ``vi``. Cost: one
        :func:`flow_keys` call plus a dict lookup per *distinct* flow in the batch."""
        st = self.stats
        n = int(frames.shape[0])
        st.per_vi[vi] += n
        if not n:
            return
        keys, is_ip = flow_keys(frames, lens)
        st.non_ip += n - int(np.count_nonzero(is_ip))
        home, split = self._home, self._split
        for k in np.unique(keys[is_ip]).tolist():
            h = home.get(k)
            if h is None:
                home[k] = vi
                self.new_flows.append(k)
                st.flows += 1
                st.flows_per_vi[vi] += 1
            elif h != vi and k not in split:
                split.add(k)
                st.split_flows += 1

    def take_new_flows(self) -> list[int]:
        """The flow keys first seen since the last call (and forget them)."""
        out, self.new_flows = self.new_flows, []
        return out

    def merge(self, vi: int, keys: Sequence[int]) -> None:
        """Count flows another counter saw on VI ``vi`` (its :meth:`take_new_flows`):
        how a parent joins its workers' flows to find the ones split over VIs."""
        home, split, st = self._home, self._split, self.stats
        for k in keys:
            h = home.get(k)
            if h is None:
                home[k] = vi
                st.flows += 1
                st.flows_per_vi[vi] += 1
            elif h != vi and k not in split:
                split.add(k)
                st.split_flows += 1


def poll_count(vi: VirtualInterface, index: int, rows: npt.NDArray[np.uint8],
               addrs: npt.NDArray[np.uint64], cols: npt.NDArray[np.int64],
               counter: RssCounter) -> int:
    """Poll ``vi`` once, count its frames as VI ``index`` and repost their buffers
    (buffer id *k* is row *k* of ``rows`` at DMA address ``addrs[k]``). Returns the
    events handled. Cost: one poll, one :meth:`RssCounter.add`, one batch post."""
    b = vi.poll()
    if not len(b):
        return 0
    t = b.type
    rxish = (t == _RX) | (t == _DISCARD)
    if not rxish.any():
        return len(b)
    ids = b.rq_id[rxish].astype(np.int64)
    good = t[rxish] == _RX
    counter.stats.discards += int(np.count_nonzero(~good))
    gi = ids[good]
    if gi.size:
        ofs = b.ofs[rxish][good].astype(np.int64)
        lens = b.len[rxish][good].astype(np.int64)
        idx = np.minimum(ofs[:, None] + cols, PKT_BUF_SIZE - 1)
        counter.add(index, rows[gi[:, None], idx], np.minimum(lens, _HEAD))
    vi.receive_post_batch(addrs[ids], ids.astype(np.uint32))
    return len(b)


class RssRunner:
    """A VI set of ``n`` on ``url`` with the set filters; :meth:`run` counts."""

    def __init__(self, url: str, n: int, filters: Sequence[FilterSpec] | None = None,
                 *, rxq: int = 1024) -> None:
        self.driver = Driver.open(url)
        try:
            self.pd = ProtectionDomain(self.driver)
            self.per = rxq
            self.mr = MemoryRegion(self.pd, n * rxq * PKT_BUF_SIZE)
            self.set = VISet(self.pd, n, rxq=rxq, txq=0)
            self.filters = list(filters) if filters else default_filters(
                self.driver.capabilities.adapter)
            for f in self.filters:
                self.set.filter_add(f)
        except BaseException:
            self.driver.close()
            raise
        self.n = n
        self.addrs = self.mr.dma_addrs()
        self.rows = self.mr.buf.reshape(-1, PKT_BUF_SIZE)
        for i, vi in enumerate(self.set.vis):
            ids = np.arange(i * rxq, (i + 1) * rxq, dtype=np.uint32)[:vi.receive_capacity()]
            vi.receive_post_batch(self.addrs[ids], ids)
        self.counter = RssCounter(n)
        self._cols = np.arange(_HEAD, dtype=np.int64)

    def poll_once(self) -> int:
        """Poll every VI once, count and repost. Returns the events handled."""
        total = 0
        for i, vi in enumerate(self.set.vis):
            total += poll_count(vi, i, self.rows, self.addrs, self._cols, self.counter)
        return total

    def run(self, duration_s: float | None = None, count: int | None = None,
            on_second: Callable[[RssStats], None] | None = None,
            stop: list[bool] | None = None, idle_exit_s: float | None = None) -> RssStats:
        """Count until ``stop[0]``, ``count`` packets, ``duration_s``, or ``idle_exit_s``
        seconds without a frame after the first."""
        st = self.counter.stats
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        last = None
        vis = self.set.vis
        while True:
            n = self.poll_once()
            now = time.perf_counter()
            if n:
                last = now
            else:
                vis[0].eventq_wait(1_000_000)
                now = time.perf_counter()
            if stop is not None and stop[0]:
                break
            if count is not None and st.packets >= count:
                st.stopped_by = "count"
                break
            if duration_s is not None and now - t0 >= duration_s:
                st.stopped_by = "duration"
                break
            if idle_exit_s is not None and last is not None and now - last > idle_exit_s:
                st.stopped_by = "idle"
                break
            if now >= next_tick:
                next_tick = now + 1.0
                st.elapsed_s = now - t0
                if on_second is not None:
                    on_second(st)
        st.elapsed_s = time.perf_counter() - t0
        st.vi_drops = [{k: v for k, v in vi.stats().items() if k.endswith("_drops")}
                       for vi in vis]
        return st

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> RssRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
