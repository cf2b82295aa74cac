"""The README's examples run and print what the README shows."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quickstart_example() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "sent 8" in out and out.count("payload=b'hello, ef_vi'") == 8
    assert "TX completed ids [0, 1, 2, 3, 4, 5, 6, 7]" in out
