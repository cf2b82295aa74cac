"""Helpers shared by the command modules: JSON output and live progress lines."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object (the whole machine-readable result) on stdout."""
    print(json.dumps(obj, sort_keys=False))
    sys.stdout.flush()


def progress(line: str, *, json_mode: bool) -> None:
    """A live progress line: stdout normally, stderr with --json (stdout stays JSON)."""
    print(line, file=sys.stderr if json_mode else sys.stdout, flush=True)


@contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """Turn SIGINT/SIGTERM into a flag the loop polls, so it can finish cleanly.

    Yields a one-element list; ``flag[0]`` becomes True when a signal arrives.
    """
    flag = [False]

    def handler(signum: int, frame: object) -> None:
        flag[0] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
