"""Issue 9 cases 6 and 18: broken pipes end quietly; ``efvi --version``.

Run as real processes: a reader that goes away (``| head``) is only real with a pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from efvi import __version__
from efvi.pcap import PcapNgWriter
from efvi.wire.build import udp_frame

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("pipes") / "big.pcapng"
    f = udp_frame(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
                  "198.18.0.1", "198.18.0.2", 1000, 2000, bytes(200))
    with PcapNgWriter(str(p)) as w:
        w.add_interface()
        for i in range(20_000):
            w.write(i * 1000, f)
    return str(p)


def _head(argv: list[str], *, lines: int = 0, nbytes: int = 0) -> tuple[int, bytes, str]:
    """``efvi ARGV | head -n LINES`` (or ``head -c NBYTES``): (status, read, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "efvi.cli.main", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    got = b"".join(proc.stdout.readline() for _ in range(lines)) if lines \
        else proc.stdout.read(nbytes)
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), got, err


@pytest.mark.parametrize("argv,lines,nbytes", [
    (["demo", "-n", "300000"], 1, 0),
    (["pcap", "convert", "BIG", "-"], 0, 100),
    (["pcap", "info", "BIG"], 1, 0),
    (["sink", "-v", "sim:p6?pcap=BIG&speed=0&loop=0", "unicast-all"], 2, 0),
    (["info"], 1, 0),
])
def test_6_broken_pipe_ends_quietly(big: str, argv: list[str], lines: int,
                                    nbytes: int) -> None:
    argv = [a.replace("BIG", big) for a in argv]
    rc, got, err = _head(argv, lines=lines, nbytes=nbytes)
    assert got, err
    assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipe" not in err, err
    assert rc in (0, 141), (rc, err)  # 141 = 128 + SIGPIPE, what a C tool's status reads


def test_18_version() -> None:
    r = subprocess.run([sys.executable, "-m", "efvi.cli.main", "--version"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"efvi {__version__}"
