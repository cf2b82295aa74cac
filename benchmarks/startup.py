"""Start-up time of ``efvi`` commands, whole process, side by side with Python's floor.

    python benchmarks/startup.py [--runs N]

Runs each command ``N`` times, interleaved, and prints the median and minimum wall time
of the whole process (interpreter start, imports — numpy's included — and the work).
A benchmark, not a test: no assertion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=SRC)
    py = sys.executable
    cmds = {"python -c pass": [py, "-c", "pass"],
            "python -c 'import numpy'": [py, "-c", "import numpy"],
            "efvi demo -n 1": [py, "-m", "efvi.cli.main", "demo", "-n", "1"],
            "efvi --help": [py, "-m", "efvi.cli.main", "--help"]}
    res: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(a.runs):
        for k, c in cmds.items():
            t = time.perf_counter()
            subprocess.run(c, env=env, capture_output=True, check=True)
            res[k].append(time.perf_counter() - t)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average {' '.join(load)}; medians of {a.runs} interleaved runs "
          "(wall seconds, whole process)")
    print("| command | median s | min s |\n|---|---|---|")
    for k, v in res.items():
        print(f"| `{k}` | {statistics.median(v):.3f} | {min(v):.3f} |")


if __name__ == "__main__":
    main()
