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


_FILE_HINTS = {
    _errno.ENOENT: "check the path{dir}",
    _errno.ENOTDIR: "a part of the path is not a directory; check the path",
    _errno.EISDIR: "give a file name, not a directory",
    _errno.EACCES: "check the permissions (ls -l {path}) or run as a user who may {verb} it",
    _errno.EPERM: "check the permissions (ls -l {path}) or run as a user who may {verb} it",
    _errno.ENOSPC: "free space on that file system, or write elsewhere",
    _errno.EDQUOT: "free space in your quota, or write elsewhere",
    _errno.EROFS: "that file system is read-only; write elsewhere",
    _errno.EFBIG: "the file system cannot hold a file that large; write elsewhere",
    _errno.ENAMETOOLONG: "use a shorter file name",
}


def file_error(exc: OSError, path: str, verb: str) -> SetupError:
    """A one-line SetupError for a failed file ``verb`` (``"read"``/``"write"``):
    the path, the system's reason and the way out (control path)."""
    hint = _FILE_HINTS.get(exc.errno or 0, "")
    d = ""
    if verb == "write" and exc.errno == _errno.ENOENT:
        import os
        parent = os.path.dirname(path) or "."
        if os.path.isdir(parent):
            hint = (f"the directory {parent} does not take new files (a kernel file system?); "
                    "write elsewhere")
        else:
            d = f": the directory {parent} does not exist (mkdir -p {parent})"
    hint = hint.format(path=path, verb=verb, dir=d)
    return SetupError(f"cannot {verb} {path}: {exc.strerror or exc}", errno=exc.errno or 0,
                      hint=hint)
