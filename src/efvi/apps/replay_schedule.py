"""The replay scheduler: records in, (deadline, batch) out — no clock, no socket, no file.

:class:`Scheduler` turns the records of one or more capture files, read as
:class:`~efvi.pcap.RecordBatch` columns, into :class:`Chunk` objects whose
``deadline_ns`` column says when each record is due, in int nanoseconds *after the
start of the replay*. Whoever sends (:mod:`efvi.apps.replay`) owns the clock; tests
check a schedule by feeding batches and reading deadlines.

Pacing follows tcpreplay (``-x``, ``-p``, ``-M``, ``-t``):

* original timing (``Pacing()``): record *i* of a file is due at
  ``base + (ts[i] - ts[0]) / multiplier``; a timestamp that goes backwards is due
  with the record before it (deadlines never decrease);
* ``pps``: record *j* of a segment at ``base + j * 1e9 / pps``;
* ``mbps``: record *j* when the bits of the records before it would have left at that
  rate, ``base + 8000 * sum(len[:j]) / mbps``;
* ``topspeed``: every deadline is 0 (send as fast as the ring drains).

Every deadline is computed from its segment's ``base`` (not from the previous
record's deadline), so rounding never accumulates: no drift over long files. A
*segment* is one file in one pass. The next segment starts where the previous one
would have put its next record (original timing: at its last record's deadline), plus
``loopdelay_ns`` at the start of each new pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from efvi.pcap.record import RecordBatch

__all__ = ["Chunk", "Pacing", "Scheduler"]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast to replay: exactly one of the rate fields, or none (original timing).

    ``multiplier`` scales the recorded gaps (2.0 = twice as fast); ``pps`` and ``mbps``
    pace at a fixed rate; ``topspeed`` sends as fast as possible.
    """

    multiplier: float = 1.0
    pps: float = 0.0
    mbps: float = 0.0
    topspeed: bool = False

    def __post_init__(self) -> None:
        modes = sum((self.multiplier != 1.0, self.pps > 0, self.mbps > 0, self.topspeed))
        if modes > 1:
            raise ValueError("choose one of multiplier, pps, mbps, topspeed")
        for name in ("multiplier", "pps", "mbps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.multiplier <= 0:
            raise ValueError(f"multiplier must be > 0, got {self.multiplier}")

    @property
    def mode(self) -> str:
        """``"topspeed"``, ``"pps"``, ``"mbps"``, ``"multiplier"`` or ``"original"``."""
        if self.topspeed:
            return "topspeed"
        if self.pps > 0:
            return "pps"
        if self.mbps > 0:
            return "mbps"
        return "multiplier" if self.multiplier != 1.0 else "original"

    @property
    def timed(self) -> bool:
        """True when deadlines mean something (everything but top speed)."""
        return not self.topspeed


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one segment with their deadlines (all columns length N).

    Frame ``i`` is ``buf[data_offset[i]:data_offset[i] + caplen[i]]``.
    """

    deadline_ns: I64
    ts_ns: I64
    caplen: I64
    orig_len: I64
    data_offset: I64
    buf: U8
    file_index: int
    pass_index: int

    def __len__(self) -> int:
        return int(self.deadline_ns.shape[0])

    def frame(self, i: int) -> bytes:
        off = int(self.data_offset[i])
        return self.buf[off:off + int(self.caplen[i])].tobytes()

    def slots(self) -> Iterator[tuple[int, slice]]:
        """``(deadline_ns, records)`` per run of records sharing one deadline, in order:
        the batches a perfect clock would send with one doorbell each."""
        d = self.deadline_ns
        n = len(self)
        if n == 0:
            return
        cuts = np.flatnonzero(d[1:] != d[:-1]) + 1
        starts = [0, *cuts.tolist()]
        ends = [*cuts.tolist(), n]
        for a, b in zip(starts, ends):
            yield int(d[a]), slice(a, b)


class Scheduler:
    """Assigns deadlines to records (see the module doc). Sans-I/O: call :meth:`add`
    with each batch read, :meth:`end_file` after each file and :meth:`end_pass` after
    each pass over the files.

    ``loops``: passes over the files (0: forever); ``limit``: records to schedule in
    all (0: no limit); ``duration_ns``: for timed pacing, records due later are not
    scheduled (0: no limit); ``max_chunk``: records per :class:`Chunk`.
    """

    def __init__(self, pacing: Pacing | None = None, *, loops: int = 1,
                 loopdelay_ns: int = 0, limit: int = 0, duration_ns: int = 0,
                 max_chunk: int = 1024) -> None:
        if loops < 0 or loopdelay_ns < 0 or limit < 0 or duration_ns < 0 or max_chunk < 1:
            raise ValueError("loops, loopdelay_ns, limit and duration_ns must be >= 0, "
                             "max_chunk >= 1")
        self.pacing = pacing or Pacing()
        self.loops = loops
        self.loopdelay_ns = loopdelay_ns
        self.limit = limit
        self.duration_ns = duration_ns
        self.max_chunk = max_chunk
        #: records scheduled so far
        self.scheduled = 0
        #: current pass (0-based) and file index within it
        self.pass_index = 0
        self.file_index = 0
        #: True once the limit or the duration is reached, or the last pass ended
        self.done = False
        self._base = 0          # deadline of the segment's first record
        self._seg_n = 0         # records so far in this segment
        self._seg_bytes = 0     # their bytes (mbps)
        self._seg_ts0: int | None = None  # first timestamp of the segment (original)
        self._last = 0          # last deadline given
        self._pass_start = 0    # records scheduled before the current pass
        self._period = 1e9 / self.pacing.pps if self.pacing.pps > 0 else 0.0
        self._ns_per_byte = 8000.0 / self.pacing.mbps if self.pacing.mbps > 0 else 0.0
        self._scale = 1.0 / self.pacing.multiplier

    # ---- input ----------------------------------------------------------------------
    def add(self, batch: RecordBatch) -> list[Chunk]:
        """Deadlines for the records of ``batch`` (in file order), as chunks of at most
        ``max_chunk`` records; fewer records (or none) once the limit or the duration
        is reached. Cost: a few numpy operations per batch."""
        n = len(batch)
        if self.done or n == 0:
            return []
        if self.limit:
            n = min(n, self.limit - self.scheduled)
        ts = batch.ts_ns[:n].astype(np.int64, copy=False)
        caplen = batch.caplen[:n].astype(np.int64)
        dl = self._deadlines(ts, caplen)
        if self.duration_ns and self.pacing.timed:
            keep = int(np.searchsorted(dl, self.duration_ns, side="right"))
            if keep < n:
                n = keep
                self.done = True
                dl, ts, caplen = dl[:n], ts[:n], caplen[:n]
        if n == 0:
            return []
        self._seg_n += n
        self._seg_bytes += int(caplen.sum())
        self._last = int(dl[-1])
        self.scheduled += n
        if self.limit and self.scheduled >= self.limit:
            self.done = True
        orig = batch.orig_len[:n].astype(np.int64)
        offs = batch.data_offset[:n].astype(np.int64, copy=False)
        out = []
        for a in range(0, n, self.max_chunk):
            b = min(n, a + self.max_chunk)
            out.append(Chunk(dl[a:b], ts[a:b], caplen[a:b], orig[a:b], offs[a:b], batch.buf,
                             self.file_index, self.pass_index))
        return out

    def _deadlines(self, ts: I64, caplen: I64) -> I64:
        n = ts.shape[0]
        p = self.pacing
        j = np.arange(self._seg_n, self._seg_n + n, dtype=np.int64)
        if p.topspeed:
            return np.zeros(n, np.int64)
        if p.pps > 0:
            return self._base + np.floor(j * self._period).astype(np.int64)
        if p.mbps > 0:
            before = self._seg_bytes + np.concatenate(([0], np.cumsum(caplen)[:-1]))
            return self._base + np.floor(before * self._ns_per_byte).astype(np.int64)
        if self._seg_ts0 is None:
            self._seg_ts0 = int(ts[0])
        rel = ts - self._seg_ts0
        if self._scale != 1.0:
            rel = np.floor(rel * self._scale).astype(np.int64)
        dl = np.maximum(rel + self._base, self._last)
        np.maximum.accumulate(dl, out=dl)
        return dl

    def _next_base(self) -> int:
        """Where the segment would have put its next record."""
        p = self.pacing
        if p.topspeed:
            return 0
        if p.pps > 0:
            return self._base + int(np.floor(self._seg_n * self._period))
        if p.mbps > 0:
            return self._base + int(np.floor(self._seg_bytes * self._ns_per_byte))
        return self._last

    def end_file(self) -> None:
        """The current file ended: the next records start a new segment."""
        if self._seg_n:
            self._base = self._next_base()
            self._last = max(self._last, self._base)
        self._seg_n = 0
        self._seg_bytes = 0
        self._seg_ts0 = None
        self.file_index += 1

    def end_pass(self, passes: int = 1) -> bool:
        """The current pass over the files ended (``passes``: the records just added
        held that many passes back to back — top speed unrolls small files). Returns
        True when another pass is due (then it starts ``loopdelay_ns`` later)."""
        if self._seg_n:
            self.end_file()
        self.pass_index += passes
        self.file_index = 0
        if self.done or (self.loops and self.pass_index >= self.loops):
            self.done = True
            return False
        if self.scheduled == self._pass_start:
            self.done = True  # a pass that gave nothing (empty files, a spent stdin):
            return False      # looping on would spin
        self._pass_start = self.scheduled
        if self.pacing.timed:
            self._base = self._last = self._last + self.loopdelay_ns
        return True
