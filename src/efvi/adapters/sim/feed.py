"""A capture file playing into a sim port: recorded traffic for an unchanged app.

``sim:PORT?pcap=FILE&speed=1|0&loop=N&eof_event=DATA`` makes the port receive the
records of ``FILE`` (pcap or pcapng, Ethernet) as if they arrived on its wire: they go
through the port's filter table to the application's VIs (or to the kernel side),
exactly like frames from a peer port. The same application code later runs
unchanged on ``xdp:`` or ``packet:``.

* ``speed=1`` (default), virtual clock: the port gets its own virtual clock, set to
  the capture's time. When the application polls and none of the port's VIs has an
  event left, the clock jumps to the next record's timestamp and every record of that
  timestamp is delivered — RX timestamps are the recorded ones, to the nanosecond,
  and the app never waits. A run is deterministic.
* ``speed=1`` with ``clock=real``: records are delivered when their time (from the
  first record, on CLOCK_MONOTONIC) has come; RX timestamps are the host's clock.
* ``speed=0``: as fast as the application polls — each poll that finds the port's
  VIs drained delivers the next ``BATCH`` records, stamped by the virtual wire at
  line rate.

``loop=N`` plays the file N times (0: forever); pass *k* is shifted by *k* × (the
file's span + 1 µs) so time keeps moving forward. End of file and loops are visible:
the VI's ``stats()`` carries ``feed_packets``, ``feed_bytes``, ``feed_loops`` (passes
completed), ``feed_eof`` (1 once the last pass ended) and ``feed_format_errors``;
``eof_event=DATA`` queues a software event carrying DATA on each of the port's VIs
at the end. A corrupt file stops the feed at the last good record (counted in
``feed_format_errors``, message in :attr:`CaptureFeed.error`, EOF event sent): the
data path never raises.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.sim.clock import RealClock, VirtualClock
from efvi.adapters.sim.frames import KEY_BYTES, FrameBatch
from efvi.errors import FormatError, SetupError
from efvi.pcap import open_capture
from efvi.pcap.constants import LINKTYPE_ETHERNET
from efvi.pcap.record import RecordBatch

if TYPE_CHECKING:
    from efvi.adapters.sim.port import SimPort

I64 = npt.NDArray[np.int64]

#: records delivered per poll at speed=0
BATCH = 64
#: records read from the file at a time
READ = 1024
#: gap between the last record of a pass and the first of the next one
LOOP_GAP_NS = 1000


class CaptureFeed:
    """See the module doc. Created by the sim adapter; :meth:`pump` runs inside VI
    polls and waits (data path: never raises)."""

    def __init__(self, port: "SimPort", path: str, *, speed: int = 1, loops: int = 1,
                 eof_event: int | None = None) -> None:
        self.port = port
        self.path = path
        self.speed = speed
        self.loops = loops
        self.eof_event = eof_event
        self.error: str | None = None
        self.counters = port.counters
        for k in ("feed_packets", "feed_bytes", "feed_loops", "feed_eof",
                  "feed_format_errors"):
            self.counters[k] += 0
        self._iter: Iterator[RecordBatch] | None = None
        self._close: list[object] = []
        self._open()  # SetupError now for a missing or unreadable file
        first = self._next_batch()
        if first is None:
            raise SetupError(f"capture {path} has no packets", errno=errno.ENODATA,
                             hint="give pcap= a capture with at least one packet")
        self._batch: RecordBatch | None = first
        self._mem = self._padded(first)
        self._i = 0
        self._first_ts = int(first.ts_ns[0])
        self._last_ts = self._first_ts
        self._shift = 0
        self._pass = 0
        self._done = False
        self._real = isinstance(port.clock, RealClock)
        if speed == 1 and not self._real:
            # the port's own virtual clock, at the capture's time: RX ts == recorded ts
            port.clock = VirtualClock(self._first_ts)
        self._t0_real = 0

    # ---- file ----------------------------------------------------------------------
    def _open(self) -> None:
        try:
            reader = open_capture(self.path)
        except FileNotFoundError:
            raise SetupError(f"pcap={self.path}: no such file", errno=errno.ENOENT,
                             hint="give pcap= the path of a pcap or pcapng file") from None
        except (OSError, FormatError, SetupError) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            raise SetupError(f"pcap={self.path}: {msg}", errno=getattr(exc, "errno", 0) or
                             errno.EINVAL,
                             hint="give pcap= a readable pcap or pcapng file") from None
        if reader.format == "pcap" and reader.interfaces[0].linktype != LINKTYPE_ETHERNET:
            reader.close()
            raise SetupError(f"pcap={self.path}: link type {reader.interfaces[0].linktype} "
                             "is not Ethernet", errno=errno.EINVAL,
                             hint="the sim port plays Ethernet (linktype 1) captures")
        self._reader = reader
        self._iter = reader.batches(READ)

    def _next_batch(self) -> RecordBatch | None:
        assert self._iter is not None
        try:
            return next(self._iter)
        except StopIteration:
            return None

    @staticmethod
    def _padded(rb: RecordBatch) -> npt.NDArray[np.uint8]:
        # the port's flow key reads KEY_BYTES from each frame start: pad the end
        return np.concatenate((rb.buf, np.zeros(KEY_BYTES + 8, np.uint8)))

    def _advance_file(self) -> bool:
        """Move to the next batch (next pass at EOF); False when the feed ended."""
        try:
            rb = self._next_batch()
            while rb is not None and len(rb) == 0:
                rb = self._next_batch()
        except FormatError as exc:  # corrupt: stop at the last good record
            self.error = str(exc)
            self.counters["feed_format_errors"] += 1
            self._finish()
            return False
        if rb is None:
            self.counters["feed_loops"] += 1
            self._pass += 1
            self._reader.close()
            if self.loops and self._pass >= self.loops:
                self._finish()
                return False
            self._shift += self._last_ts - self._first_ts + LOOP_GAP_NS
            try:
                self._open()
                rb = self._next_batch()
            except (SetupError, FormatError) as exc:
                self.error = str(exc)
                self.counters["feed_format_errors"] += 1
                self._finish()
                return False
            if rb is None:
                self._finish()
                return False
        self._batch = rb
        self._mem = self._padded(rb)
        self._i = 0
        return True

    def _finish(self) -> None:
        self._done = True
        self._batch = None
        self.counters["feed_eof"] = 1
        if self.eof_event is not None:
            for vi in self.port.vis:
                vi.sw_event(self.eof_event)

    # ---- delivery ------------------------------------------------------------------
    def _drained(self) -> bool:
        return all(vi.events_pending() == 0 for vi in self.port.vis)

    def _deliver(self, a: int, b: int, ts: I64 | None) -> None:
        rb = self._batch
        assert rb is not None
        lens = rb.caplen[a:b].astype(np.int64)
        offs = rb.data_offset[a:b]
        port = self.port
        if ts is not None and b - a == 1:  # one frame: the scalar path (no numpy)
            o = int(offs[0])
            ln = int(lens[0])
            port.receive_one(self._mem[o:o + ln].tobytes(), int(ts[0]), exact_ts=True)
            self.counters["feed_packets"] += 1
            self.counters["feed_bytes"] += ln
            return
        if ts is None:  # speed=0: stamped by the virtual wire at line rate
            stamps = port.serialise(lens, port.clock.now_ns())
            port.receive(FrameBatch(self._mem, offs, lens, stamps))
        else:
            port.receive(FrameBatch(self._mem, offs, lens, ts), exact_ts=True)
        self.counters["feed_packets"] += b - a
        self.counters["feed_bytes"] += int(lens.sum())

    def pump(self) -> int:
        """Deliver what is due (see the module doc); returns frames delivered.

        Cost: nothing while the port's VIs still hold events; otherwise one routed
        batch (a few dozen numpy calls), plus a file read every ``READ`` records.
        """
        if self._done or not self._drained():
            return 0
        if self._i >= len(self._batch or ()) and not self._advance_file():
            return 0
        rb = self._batch
        assert rb is not None
        i, n = self._i, len(rb)
        if self.speed == 0:
            j = min(n, i + BATCH)
            self._deliver(i, j, None)
        else:
            ts = rb.ts_ns
            if self._real:
                now = time.monotonic_ns()
                if self._t0_real == 0:
                    self._t0_real = now
                due = now - self._t0_real + self._first_ts - self._shift
                j = int(np.searchsorted(ts[i:], due, side="right")) + i
                if j == i:
                    return 0
                self._deliver(i, j, None)
            else:
                t = int(ts[i])
                j = i + 1
                while j < n and int(ts[j]) <= t:
                    j += 1
                stamps = np.maximum(ts[i:j] + self._shift, self.port.clock.now_ns())
                self._deliver(i, j, stamps)
        self._last_ts = max(self._last_ts, int(rb.ts_ns[j - 1]))
        self._i = j
        return j - i

    def next_due_ns(self) -> int | None:
        """For ``clock=real``: ns (CLOCK_MONOTONIC) until the next record is due."""
        rb = self._batch
        if self._done or rb is None or self._i >= len(rb) or not self._real or \
                self._t0_real == 0:
            return None
        due = int(rb.ts_ns[self._i]) + self._shift - self._first_ts + self._t0_real
        return max(0, due - time.monotonic_ns())

    @property
    def done(self) -> bool:
        return self._done

    def close(self) -> None:
        if not self._done:
            self._done = True
        self._reader.close()
