"""The habits every ``efvi`` command shares, in one place.

* **Exit status** — :data:`EXIT_OK` 0; :data:`EXIT_RUNTIME` 1: the command ran and
  failed (``SetupError``, ``UnsupportedError``, ``FormatError``, ``OSError`` at run
  time) or found what it reports as a problem (drops, gaps); :data:`EXIT_USAGE` 2: the
  command line is wrong (argparse's own errors, :class:`UsageError`, a bad value caught
  by an argument type below); :data:`EXIT_INTERRUPTED` 130: SIGINT stopped it before it
  could print a summary; :data:`EXIT_BROKEN_PIPE` 141 (128 + SIGPIPE, what a C tool's
  status reads as): stdout's reader went away.
* **Messages** — one line on stderr, ``efvi <cmd>: <problem> — <fix>``, never a
  traceback for an :class:`~efvi.errors.EfviError` or an ``OSError`` (a traceback
  means a bug). :func:`exit_status` does the mapping; the dispatcher calls it.
* **Broken pipe** — ``efvi ... | head`` ends quietly: stdout is pointed at
  ``/dev/null`` so the interpreter's flush at exit prints nothing either.
* **Signals** — :func:`stop_on_signals` turns SIGINT/SIGTERM into a
  :class:`~efvi.apps.common.StopFlag` the app's loop polls, so it stops cleanly and
  the command prints its summary (exit 0); a second SIGINT interrupts for real (130).
* **Output** — results on stdout; live progress lines on stderr (:func:`progress`,
  once a second, :class:`Ticker`); ``--json`` (:func:`add_json_flag`) prints exactly
  one JSON object on stdout at the end (:func:`emit_json`).
* **Argument types** — :mod:`efvi.cli.argtypes` (``type=`` validators): a bad value
  is a usage error (exit 2) naming the flag and the form expected.

This module imports nothing heavy at start-up (the dispatcher loads one command).
"""

from __future__ import annotations

import argparse
import errno as _errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from efvi.apps.common import StopFlag
from efvi.errors import EfviError

__all__ = [
    "EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE",
    "ArgumentParser", "StopFlag", "Subparsers", "Ticker", "UsageError", "add_json_flag",
    "emit_json", "exit_status", "progress", "stop_on_signals",
]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13

#: what ``register(subparsers)`` receives
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


class UsageError(EfviError):
    """The command line is wrong (exit status 2): ``message — hint``.

    Raise it from a command's ``run`` for a value argparse could not check (a
    combination of flags, a range that depends on another flag).
    """

    def __init__(self, message: str, *, hint: str = "", prog: str | None = None) -> None:
        self.message = message
        self.hint = hint
        self.prog = prog
        super().__init__(f"{message} — {hint}" if hint else message)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that an error is a :class:`UsageError` (one line, exit 2)
    instead of usage text and ``SystemExit``; sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        hint = "" if " — " in message else f"see {self.prog} --help"
        raise UsageError(message, hint=hint, prog=self.prog)


# ---- exit status and messages ------------------------------------------------------------
_OS_HINTS = {
    _errno.ENOENT: "check the path",
    _errno.EACCES: "check permissions (network commands need root or CAP_NET_RAW/ADMIN)",
    _errno.EPERM: "needs root or CAP_NET_RAW/CAP_NET_ADMIN",
    _errno.ENOSPC: "free some disk space",
    _errno.EISDIR: "give a file, not a directory",
    _errno.ENODEV: "check the interface name (efvi info lists them)",
}


def _os_message(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {os.fsdecode(exc.filename)!s}"
    hint = _OS_HINTS.get(exc.errno or 0)
    return f"{text} — {hint}" if hint else text


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture it)
        pass


def exit_status(exc: BaseException, prog: str) -> int:
    """Report ``exc`` the efvi way and return the exit status; re-raise what is a bug.

    ``prog`` is ``"efvi <cmd>"``. Usage errors print ``prog: problem — fix`` and give
    2; EfviError and OSError give 1; broken pipes 141 silently; SIGINT 130 silently.
    """
    if isinstance(exc, SystemExit):  # --help, --version, or a command's own exit
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return EXIT_RUNTIME
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError)
                                            and exc.errno == _errno.EPIPE):
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    if isinstance(exc, UsageError):
        _say(exc.prog or prog, str(exc))
        return EXIT_USAGE
    if isinstance(exc, EfviError):
        _say(prog, str(exc))
        return EXIT_RUNTIME
    if isinstance(exc, OSError):
        _say(prog, _os_message(exc))
        return EXIT_RUNTIME
    raise exc


def _say(prog: str, text: str) -> None:
    line = " ".join(text.split())  # one line, whatever the message held
    try:
        print(f"{prog}: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# ---- output ----------------------------------------------------------------------------
def emit_json(obj: dict[str, Any], *, indent: int | None = None) -> None:
    """Print one JSON object (the whole machine-readable result) on stdout."""
    print(json.dumps(obj, indent=indent))
    sys.stdout.flush()


def progress(line: str, *, json_mode: bool = False) -> None:
    """A live progress line on stderr, flushed (``json_mode`` is accepted for older
    callers; progress never goes to stdout, which holds results or the JSON object)."""
    print(line, file=sys.stderr, flush=True)


class Ticker:
    """Once-a-second gate for progress lines: ``if ticker.due(): progress(...)``."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.next = time.monotonic() + interval_s

    def due(self) -> bool:
        """True at most once per interval. Cost: one clock read."""
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = max(self.next + self.interval_s, now)
        return True


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object on stdout at the end; progress stays on stderr."""
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout at the end (progress: stderr)")


# ---- signals ---------------------------------------------------------------------------
@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """SIGINT/SIGTERM set the yielded :class:`StopFlag` instead of killing the process;
    a second SIGINT raises KeyboardInterrupt (exit 130). Handlers are restored on exit.
    Off the main thread (no signal handlers there) the flag is only set by code."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
