"""What every app's library API shares: the stop flag its loop polls.

An app's long-running call (``Sink.run``, ``Sender.run``, a capture loop, ...) takes
``stop: StopFlag | None`` and checks ``stop.is_set()`` at least every ~100 ms; it then
finishes cleanly — closes files, reports what it did — and returns normally. The CLI
sets the flag from SIGINT/SIGTERM (:func:`efvi.cli.common.stop_on_signals`); a library
user sets it from another thread or a callback. Setting it is one list-item store,
safe from a signal handler (no lock, unlike :class:`threading.Event`).

A :class:`StopFlag` is also the one-element list ``[stopped]`` the first apps polled
(``stop[0]``), so loops typed ``stop: list[bool] | None`` accept it unchanged.
"""

from __future__ import annotations

__all__ = ["StopFlag"]


class StopFlag(list[bool]):
    """A one-way "stop now" flag: :meth:`set` once, poll :meth:`is_set` (or ``stop[0]``).

    ``bool(flag)`` is :meth:`is_set` (not list truthiness); ``signum`` is the signal
    that set it (0 when set by code).
    """

    __slots__ = ("signum",)

    def __init__(self) -> None:
        super().__init__([False])
        self.signum = 0

    def set(self, signum: int = 0) -> None:
        """Ask the loop to stop (idempotent; the first ``signum`` is kept)."""
        if not self[0]:
            self.signum = signum
        self[0] = True

    def is_set(self) -> bool:
        """True once :meth:`set` was called. Cost: one list-item read."""
        return self[0]

    def __bool__(self) -> bool:
        return self[0]

    def __repr__(self) -> str:
        return f"StopFlag(set={self[0]}, signum={self.signum})"
