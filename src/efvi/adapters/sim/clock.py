"""Clocks of the software NIC: a deterministic virtual clock, or the host's.

The virtual clock moves only when something happens on a wire (a frame is
serialised) or when told to (:meth:`VirtualClock.advance`), so a run of the same
program on the same input gives the same timestamps.
"""

from __future__ import annotations

import time

from efvi.events import ClockSource


class VirtualClock:
    """Deterministic int-ns time; starts at ``start_ns``."""

    source = ClockSource.VIRTUAL

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> int:
        """Move time forward by ``ns`` (≥ 0); return the new time."""
        if ns > 0:
            self._now += ns
        return self._now

    def advance_to(self, t_ns: int) -> None:
        if t_ns > self._now:
            self._now = t_ns


class RealClock:
    """CLOCK_REALTIME in int ns."""

    source = ClockSource.SW

    def now_ns(self) -> int:
        return time.time_ns()

    def advance(self, ns: int) -> int:
        return time.time_ns()

    def advance_to(self, t_ns: int) -> None:
        pass


Clock = VirtualClock | RealClock
