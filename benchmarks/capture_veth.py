"""Capture benchmark over a veth pair: capturers writing files side by side in one run.

    sudo python3 benchmarks/capture_veth.py [-n PACKETS] [--repeat R] [--xdp-mode skb|drv]

Needs root and trafgen (Debian ``netsniff-ng``). One generator — trafgen at its
maximum rate, pinned to CPU 0, in the peer namespace — sends ``-n`` 60-byte UDP
frames (64 on the wire) into the veth; on the other end each capturer in turn, pinned
to the last CPU, writes every frame to a file on tmpfs (``/dev/shm``):

* ``efvi capture -i xdp:IF -w F.pcapng`` and ``-i packet:IF``;
* ``tcpdump -w F.pcap`` (``-B 65536``: a 64 MiB ring, as in ``rx_veth.py``);
* the C AF_XDP receiver of the rx benchmark (``benchmarks/c/afxdp_rx.c``, built when
  gcc exists) — it writes no file: the floor for an AF_XDP receiver;
* the *filtered* case: the generator sends 1 frame to port 9000 for every 9 to port
  9001, and ``efvi capture -i xdp:IF 'udp dst port 9000'`` (the expression runs in the
  XDP program) is compared with the unfiltered xdp capture of the same mix.

Reported per capturer (median of ``--repeat`` rounds): frames written (counted by
reading the file back; the C anchor's own count), loss, pps written (frames written /
seconds the generator ran), and CPU seconds per million frames sent (utime + stime of
the capturer's process while the traffic flowed, and the user part alone). Goals
(issue 10): 0 loss on xdp and packet at the generator's maximum, CPU per packet ≤
tcpdump's, and the filtered xdp run's user CPU ≤ 1/5 of the unfiltered one. The
machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from rx_veth import RX_CPU, build_c  # noqa: E402

from efvi.pcap import read_batches  # noqa: E402
from efvi.testing import netns  # noqa: E402
from efvi.wire.build import udp_frame  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def cpu(pid: int) -> tuple[float, float]:
    """(user s, user + system s) of process ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, (int(fields[11]) + int(fields[12])) / hz


class Trafgen:
    """trafgen in ns b sending a cycle of frames (one per line of its config)."""

    def __init__(self, pair: netns.VethPair, mixed: bool) -> None:
        a, b = pair.a, pair.b
        frames = [udp_frame(a.mac, b.mac, b.ip, a.ip, 40000, 9000, bytes(18))]
        if mixed:  # 1 in 10 to port 9000
            frames += [udp_frame(a.mac, b.mac, b.ip, a.ip, 40000, 9001, bytes(18))] * 9
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
        for f in frames:
            self.cfg.write("{ " + ", ".join(f"0x{x:02x}" for x in f) + " }\n")
        self.cfg.close()
        self.side = b

    def send(self, n: int) -> float:
        t0 = time.monotonic()
        self.side.run("taskset", "-c", "0", "trafgen", "-o", self.side.ifname, "-i",
                      self.cfg.name, "-n", str(n), "-P", "1", "-q", timeout=600)
        return time.monotonic() - t0

    def close(self) -> None:
        os.unlink(self.cfg.name)


@dataclass
class Row:
    name: str
    argv: list[str] | None  # None: not available (why)
    out: str = ""  # the file it writes ("" for the C anchor)
    mixed: bool = False  # the 1-in-10 traffic
    why: str = ""


def rows(side: netns.Side, shm: str, mode: str) -> list[Row]:
    efvi = [sys.executable, "-m", "efvi.cli.main", "capture", "-q"]
    xs, why = build_c("afxdp_rx")
    out = [
        Row("efvi capture xdp", efvi + ["-i", f"xdp:{side.ifname}?mode={mode}", "-w",
                                       f"{shm}/x.pcapng"], f"{shm}/x.pcapng"),
        Row("efvi capture packet", efvi + ["-i", f"packet:{side.ifname}", "-w",
                                          f"{shm}/p.pcapng"], f"{shm}/p.pcapng"),
        Row("tcpdump -w (-B 65536)", ["tcpdump", "-i", side.ifname, "-w", f"{shm}/t.pcap",
                                       "-B", "65536", "-n"] if shutil.which("tcpdump") else None,
            f"{shm}/t.pcap", why="tcpdump missing"),
        Row("C AF_XDP (afxdp_rx.c, no file)", [xs, side.ifname, mode] if xs else None, why=why),
        Row("efvi capture xdp mix/no-filter", efvi + ["-i", f"xdp:{side.ifname}?mode={mode}",
                                                        "-w", f"{shm}/xm.pcapng"],
            f"{shm}/xm.pcapng", mixed=True),
        Row("efvi capture xdp mix/'udp dst port 9000'", efvi + [
            "-i", f"xdp:{side.ifname}?mode={mode}", "-w", f"{shm}/xf.pcapng",
            "udp dst port 9000"], f"{shm}/xf.pcapng", mixed=True),
    ]
    return out


def count(path: str) -> int:
    return sum(len(b) for b in read_batches(path))


def run(pair: netns.VethPair, row: Row, n: int) -> dict[str, float]:
    assert row.argv is not None
    env = dict(os.environ, PYTHONPATH=SRC)
    p = pair.a.popen("taskset", "-c", RX_CPU, *row.argv, stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    gen = Trafgen(pair, row.mixed)
    try:
        c_anchor = row.argv[0].endswith("afxdp_rx")
        stream = p.stdout if c_anchor else p.stderr
        assert stream is not None
        while True:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"{row.name} died: {p.stderr.read() if p.stderr else ''}")
            if "listening on" in line or line.strip() == "ready":
                break
        time.sleep(0.5)
        c0 = cpu(p.pid)
        secs = gen.send(n)
        time.sleep(1.0)  # let it drain what is queued
        c1 = cpu(p.pid)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        if c_anchor:
            got = int(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
                      ["received"])
        else:
            got = count(row.out)
            os.unlink(row.out)
        causes = [ln.split(":", 1)[1].split(";")[0].strip() for ln in err.splitlines()
                  if ln.startswith("drops by cause:")]
        if causes and causes[0] != "none":
            print(f"    {row.name}: drops by cause {causes[0]}", flush=True)
        return {"written": got, "secs": secs, "user_s": c1[0] - c0[0],
                "cpu_s": c1[1] - c0[1]}
    finally:
        gen.close()
        if p.poll() is None:
            p.kill()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="frames per run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (medians reported)")
    ap.add_argument("--xdp-mode", default="drv", choices=("drv", "skb"))
    ap.add_argument("--only", help="comma-separated row names")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("trafgen"):
        print("capture_veth: needs root and trafgen (apt-get install netsniff-ng)",
              file=sys.stderr)
        return 2
    shm = tempfile.mkdtemp(prefix="efvi-capbench-", dir="/dev/shm")
    results: dict[str, list[dict[str, float]]] = {}
    notes: dict[str, str] = {}
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    try:
        with netns.veth_pair(subnet=93) as pair:
            table = rows(pair.a, shm, args.xdp_mode)
            if args.only:
                table = [r for r in table if r.name in args.only.split(",")]
            print(f"trafgen at its maximum (CPU 0), {args.n} x 60-byte UDP frames per run; "
                  f"capturers on CPU {RX_CPU}, files on tmpfs; xdp mode {args.xdp_mode}; "
                  f"{args.repeat} rounds; load average before: {load0}", flush=True)
            for rnd in range(args.repeat):
                for row in table:
                    if row.argv is None:
                        notes[row.name] = row.why
                        continue
                    try:
                        r = run(pair, row, args.n)
                    except Exception as exc:  # noqa: BLE001 - one row must not hide others
                        notes[row.name] = str(exc).strip().splitlines()[-1][:100]
                        continue
                    results.setdefault(row.name, []).append(r)
                    print(f"  round {rnd + 1} {row.name}: {int(r['written'])}/{args.n} "
                          f"written, {args.n / r['secs'] / 1e3:.0f} kpps sent, "
                          f"{r['cpu_s'] * 1e6 / args.n:.2f} µs CPU/frame sent", flush=True)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load1 = " ".join(f.read().split()[:3])
    print(f"load average after: {load1}\n")
    print("| capturer | written/sent | loss | pps written | CPU s per Mpkt sent "
          "(user+sys) | user CPU s per Mpkt |")
    print("|---|---|---|---|---|---|")
    for row in table:
        rs = results.get(row.name)
        if not rs:
            print(f"| {row.name} | skipped: {notes.get(row.name, 'not run')} | | | | |")
            continue
        w = statistics.median(r["written"] for r in rs)
        pps = statistics.median(r["written"] / r["secs"] for r in rs)
        c = statistics.median(r["cpu_s"] for r in rs) * 1e6 / args.n
        u = statistics.median(r["user_s"] for r in rs) * 1e6 / args.n
        want = args.n // 10 if "dst port" in row.name else args.n
        loss = max(0.0, 1 - w / want) * 100
        print(f"| {row.name} | {int(w)}/{want} | {loss:.2f} % | {pps / 1e3:.0f} k | "
              f"{c:.2f} | {u:.2f} |")
    for name, why in notes.items():
        print(f"note: {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
