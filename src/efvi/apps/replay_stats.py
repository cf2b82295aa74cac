"""What a replay did: :class:`ReplayStats` (counts, failures by cause, rates, the
``--json`` object), the :class:`LatencyHistogram` of each record's lateness, and
:class:`ReplayError`, which carries the stats up to a fault."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from efvi.errors import EfviError

__all__ = ["LatencyHistogram", "ReplayError", "ReplayStats"]

I64 = npt.NDArray[np.int64]


class ReplayError(EfviError):
    """The replay stopped early: a corrupt file, a stalled interface. The stats up to
    the fault are in :attr:`stats`."""

    def __init__(self, message: str, stats: ReplayStats) -> None:
        super().__init__(message)
        self.stats = stats


class LatencyHistogram:
    """Lateness samples in int ns: exact min/max/count, percentiles from 100 ns bins up
    to 10 ms and 1 % wide log bins beyond (constant memory however long the run).

    Cost per :meth:`add`: a few µs for a doorbell's worth of samples (``np.add.at``).
    """

    FINE_NS = 100
    FINE_BINS = 100_000  # 10 ms of 100 ns bins

    def __init__(self) -> None:
        self.fine = np.zeros(self.FINE_BINS, np.int64)
        self.coarse = np.zeros(2400, np.int64)  # log1.01 of ns/10ms, up to ~1e10 x
        self.count = 0
        self.min_ns = 0
        self.max_ns = 0
        self.negative = 0  # sent before the deadline (clamped to 0 in the bins)

    def add(self, samples: I64) -> None:
        if samples.shape[0] == 0:
            return
        lo, hi = int(samples.min()), int(samples.max())
        if self.count == 0:
            self.min_ns, self.max_ns = lo, hi
        else:
            self.min_ns, self.max_ns = min(self.min_ns, lo), max(self.max_ns, hi)
        self.count += int(samples.shape[0])
        s = samples
        if lo < 0:
            self.negative += int(np.count_nonzero(s < 0))
            s = np.maximum(s, 0)
        b = s // self.FINE_NS
        if hi < self.FINE_NS * self.FINE_BINS:
            self._count(b)
            return
        small = b < self.FINE_BINS
        self._count(b[small])
        big = s[~small].astype(np.float64) / (self.FINE_NS * self.FINE_BINS)
        cb = np.minimum(np.log(big) / np.log(1.01), self.coarse.shape[0] - 1).astype(np.int64)
        self.coarse += np.bincount(cb, minlength=self.coarse.shape[0])

    def _count(self, b: I64) -> None:
        # a full-width bincount allocates 800 KB: only worth it for big batches
        if b.shape[0] < 2048:
            np.add.at(self.fine, b, 1)
        else:
            self.fine += np.bincount(b, minlength=self.FINE_BINS)

    def percentile(self, q: float) -> int:
        """The ``q``-th percentile (0..100) in ns (bin upper edge, clamped to max)."""
        if self.count == 0:
            return 0
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        cf = np.cumsum(self.fine)
        if int(cf[-1]) >= rank:
            i = int(np.searchsorted(cf, rank))
            return max(min((i + 1) * self.FINE_NS, self.max_ns), self.min_ns)
        cc = np.cumsum(self.coarse) + int(cf[-1])
        i = int(np.searchsorted(cc, rank))
        v = int(self.FINE_NS * self.FINE_BINS * 1.01 ** (i + 1))
        return max(min(v, self.max_ns), self.min_ns)

    def summary_us(self) -> dict[str, float]:
        """``{"min", "p50", "p99", "max"}`` in µs (rounded to 0.1)."""
        if self.count == 0:
            return {}
        return {"min": round(self.min_ns / 1000, 1), "p50": round(self.percentile(50) / 1000, 1),
                "p99": round(self.percentile(99) / 1000, 1), "max": round(self.max_ns / 1000, 1)}


@dataclass
class ReplayStats:
    """What a replay did. ``attempted == successful + failed`` once the sender drained;
    ``failed_causes`` splits ``failed`` (``too_big``: over the MTU, ``over_buffer``: over
    2048 bytes, ``runt``: under 14 bytes, ``tx_error``: the adapter refused it,
    ``unsent``: still queued when the replay stopped on a fault)."""

    attempted: int = 0
    successful: int = 0
    bytes_sent: int = 0
    failed: int = 0
    failed_causes: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    retried: int = 0
    loops_done: int = 0
    elapsed_ns: int = 0
    mode: str = "original"
    lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    device: str = ""
    error: str | None = None
    vi_stats: dict[str, int] = field(default_factory=dict)

    def fail(self, cause: str, n: int) -> None:
        if n:
            self.failed += n
            self.failed_causes[cause] = self.failed_causes.get(cause, 0) + n

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_ns / 1e9

    def rates(self) -> tuple[float, float, float]:
        """(bytes/s, Mbit/s, packets/s) over the elapsed time."""
        s = self.elapsed_s or 1e-9
        return self.bytes_sent / s, self.bytes_sent * 8 / s / 1e6, self.successful / s

    def as_dict(self) -> dict[str, Any]:
        bps, mbps, pps = self.rates()
        return {"device": self.device, "mode": self.mode, "packets": self.successful,
                "bytes": self.bytes_sent, "seconds": round(self.elapsed_s, 6),
                "Bps": round(bps, 1), "Mbps": round(mbps, 2), "pps": round(pps, 2),
                "attempted": self.attempted, "successful": self.successful,
                "failed": self.failed, "failed_causes": dict(self.failed_causes),
                "truncated": self.truncated, "retried_eagain": self.retried,
                "loops_done": self.loops_done,
                "lateness_us": self.lateness.summary_us() or None,
                "vi_stats": self.vi_stats, "error": self.error}
