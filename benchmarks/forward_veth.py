"""Forwarding between two veths: ``efvi forward`` vs the kernel (a Linux bridge), one run.

Three namespaces A --veth-- F --veth-- C (``efvi.testing.netns.three_namespaces``).
trafgen in A (pinned to CPU 0) sends N 64-byte UDP frames as fast as it can to C's MAC
(to an IP address C does not own, so C's kernel drops them silently after counting);
in F either ``efvi forward xdp:FA xdp:FC`` (pinned to CPU 1; also ``packet:`` for
reference) or a Linux bridge joining the two veths forwards them; C's interface
counter (``rx_packets``) says how many arrived. Each row: frames delivered per second
of the generator's run, loss, CPU per delivered frame — the whole machine's busy time
from ``/proc/stat`` (generator + forwarding + C's receive: the same yardstick for
both, since the kernel's forwarding has no process to measure), and for efvi the
forwarder process's own CPU — and the user-space copies the forwarder reports.
Modes alternate, ``--runs`` times each; the table shows medians.

Needs root and trafgen (``apt-get install netsniff-ng``). The machine is shared: other
work competes for the 2 CPUs, so single runs vary by tens of percent.

    PYTHONPATH=src python benchmarks/forward_veth.py [-n FRAMES] [--runs R]
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

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
sys.path.insert(0, SRC)

from efvi.testing import netns  # noqa: E402
from efvi.wire import udp_frame  # noqa: E402


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and its waited-for children (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _rx_packets(side: netns.Side) -> int:
    out = subprocess.run(["ip", "netns", "exec", side.netns, "cat",
                          f"/sys/class/net/{side.ifname}/statistics/rx_packets"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def _tid_pid(p: subprocess.Popen[str]) -> int:
    """The forwarder's pid (``ip netns exec`` execs, so it is the Popen's pid)."""
    return p.pid


def run_once(t: netns.Three, mode: str, n: int, cfg: str) -> dict[str, float | str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    fwd: subprocess.Popen[str] | None = None
    f = t.fa
    if mode == "kernel bridge":
        for cmd in (["link", "add", "br0", "type", "bridge"],
                    ["link", "set", t.fa.ifname, "master", "br0"],
                    ["link", "set", t.fc.ifname, "master", "br0"],
                    ["link", "set", "br0", "up"]):
            subprocess.run(["ip", "-n", f.netns, *cmd], check=True, capture_output=True)
        # let the bridge learn C's MAC (else it floods, which is the same here: 2 ports)
        time.sleep(0.5)
    else:
        adapter = mode.split()[1]
        fwd = subprocess.Popen(["ip", "netns", "exec", f.netns, "taskset", "-c", "1",
                                sys.executable, "-m", "efvi.cli.main", "forward",
                                f"{adapter}:{t.fa.ifname}", f"{adapter}:{t.fc.ifname}",
                                "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
        assert fwd.stderr is not None
        head = fwd.stderr.readline()
        if not head.startswith("# forward"):
            raise RuntimeError(f"efvi forward failed: {head}{fwd.stderr.read()}")
        fwd.stderr.readline()
    before = _rx_packets(t.c)
    busy0 = _busy_jiffies()
    cpu0 = _proc_cpu_s(fwd.pid) if fwd else 0.0
    t0 = time.monotonic()
    subprocess.run(["ip", "netns", "exec", t.a.netns, "taskset", "-c", "0", "trafgen", "-o",
                    t.a.ifname, "-i", cfg, "-n", str(n), "-P", "1", "-q"],
                   check=True, capture_output=True, timeout=600)
    gen_s = time.monotonic() - t0
    time.sleep(0.3)  # frames still in rings
    delivered = _rx_packets(t.c) - before
    busy = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    row: dict[str, float | str] = {"mode": mode, "sent": n, "delivered": delivered,
                                   "pps": delivered / gen_s, "loss": max(0.0, 1 - delivered / n),
                                   "sys_cpu_ns_pkt": busy * 1e9 / max(delivered, 1)}
    if fwd is not None:
        own = _proc_cpu_s(fwd.pid) - cpu0
        fwd.send_signal(signal.SIGTERM)
        out, err = fwd.communicate(timeout=30)
        res = json.loads(out)
        row["fwd_cpu_ns_pkt"] = own * 1e9 / max(delivered, 1)
        row["user_copies"] = res["user_copies"]
        row["copy_mode"] = res["mode"]
    else:
        for cmd in (["link", "set", t.fa.ifname, "nomaster"],
                    ["link", "set", t.fc.ifname, "nomaster"], ["link", "del", "br0"]):
            subprocess.run(["ip", "-n", f.netns, *cmd], check=True, capture_output=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500_000, help="frames per run (default 500000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    ap.add_argument("--modes", default="kernel bridge,efvi xdp,efvi packet")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("forward_veth: needs root (namespaces, veth, AF_XDP)", file=sys.stderr)
        return 2
    if shutil.which("trafgen") is None:
        print("forward_veth: needs trafgen (apt-get install netsniff-ng)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",")]
    rows: dict[str, list[dict[str, float | str]]] = {m: [] for m in modes}
    with netns.three_namespaces(subnet=60) as t:
        fr = udp_frame(t.c.mac, t.a.mac, t.a.ip, "198.18.60.99", 40000, 9, bytes(18))
        with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as cf:
            cf.write("{ " + ", ".join(f"0x{x:02x}" for x in fr) + " }\n")
        try:
            for r in range(args.runs):
                for m in modes:
                    row = run_once(t, m, args.n, cf.name)
                    rows[m].append(row)
                    print(f"run {r + 1} {m}: {row['pps']:.0f} pps delivered, loss "
                          f"{float(row['loss']):.1%}", file=sys.stderr)
        finally:
            os.unlink(cf.name)
    base = statistics.median(float(x["pps"]) for x in rows.get("kernel bridge", [])) \
        if rows.get("kernel bridge") else None
    print(f"\n{args.n} x {len(fr)}-byte frames per run, median of {args.runs} runs; "
          f"{os.cpu_count()} CPUs shared with other work. System CPU is the whole machine's "
          "busy time (other processes included) per delivered frame\n")
    print("| forwarder | delivered pps | vs kernel bridge | loss | system CPU ns/frame "
          "| forwarder CPU ns/frame | user-space copies |")
    print("|---|---|---|---|---|---|---|")
    for m, rs in rows.items():
        pps = statistics.median(float(x["pps"]) for x in rs)
        loss = statistics.median(float(x["loss"]) for x in rs)
        cpu = statistics.median(float(x["sys_cpu_ns_pkt"]) for x in rs)
        own = (f"{statistics.median(float(x['fwd_cpu_ns_pkt']) for x in rs):.0f}"
               if "fwd_cpu_ns_pkt" in rs[0] else "(kernel softirq)")
        copies = str(max(int(x["user_copies"]) for x in rs)) if "user_copies" in rs[0] else "-"
        ratio = f"{pps / base:.2f}x" if base else "-"
        print(f"| {m} | {pps:,.0f} | {ratio} | {loss:.1%} | {cpu:.0f} | {own} | {copies} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
