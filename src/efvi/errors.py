"""The error taxonomy (trio's lesson: a few precise classes, each saying what to do).

Control-path calls (open, register, filter, stats) raise these. Data-path calls
(post, push, poll, transmit, unbundle) never raise for per-packet conditions: they
return ``-errno`` values (``-EAGAIN`` when a ring is full, ``-EINVAL`` for a bad
argument) or report events and counters.
"""

from __future__ import annotations

import errno as _errno


class EfviError(Exception):
    """Base class of every error efvi raises on purpose."""


class SetupError(EfviError):
    """A resource could not be created or configured.

    ``errno`` is the kernel's (or the model's) error number, ``hint`` the way out,
    e.g. ``"needs CAP_NET_ADMIN: run as root"`` or
    ``"run: ethtool -L eth0 combined 1"``.
    """

    def __init__(self, message: str, *, errno: int = 0, hint: str = "") -> None:
        self.errno = errno
        self.hint = hint
        text = message
        if errno:
            text += f" [{_errno.errorcode.get(errno, errno)}]"
        if hint:
            text += f" — {hint}"
        super().__init__(text)
        self.message = message


class UnsupportedError(EfviError):
    """The adapter lacks a capability; the message names an adapter that has it."""


class FilterExistsError(SetupError):
    """An identical unicast filter is already installed (``-EEXIST`` on the hardware)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno=_errno.EEXIST,
                         hint="delete the existing filter first, or use a different spec")


class ClosedError(EfviError):
    """The object (or the driver/PD it belongs to) has been closed."""


class FormatError(EfviError, ValueError):
    """Bad bytes: a malformed frame, or a truncated/corrupt capture file.

    ``offset`` is the byte offset (in the file or frame) where the fault was found.
    """

    def __init__(self, message: str, *, offset: int | None = None,
                 path: str | None = None) -> None:
        self.offset = offset
        self.path = path
        where = ""
        if path is not None:
            where += f"{path}: "
        if offset is not None:
            where += f"offset {offset}: "
        super().__init__(where + message)
        self.message = message
