"""Receive through efvid vs directly: the data path must not notice the broker.

    sudo python3 benchmarks/broker_veth.py [-n PACKETS] [--repeat R] [--adapters xdp,packet]

One veth pair; the generator (trafgen, as in ``rx_veth.py``) sends ``-n`` 60-byte UDP
frames at its maximum into the receiving namespace, where ``efvi sink`` runs either as
root (direct) or as ``nobody`` with no capabilities through an efvid started for the
run. Rows alternate (``--repeat`` paired rounds); the table gives the median received
fraction and receive rate (``efvi sink``'s first-to-last pps) per row, and each
brokered row's rate as a ratio of the direct row's. Goal: ≥ 0.9× (the rings and
buffers are the same; only set-up goes through the broker).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from rx_veth import PORT, Generator  # noqa: E402

from efvi.testing import netns  # noqa: E402

SRC = os.path.join(HERE, "..", "src")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "--inh-caps=-all"]


def run_sink(side: netns.Side, url: str, n: int, gen: Generator, broker_sock: str | None
             ) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=SRC)
    pre: list[str] = []
    if broker_sock:
        env["EFVI_BROKER_SOCKET"] = broker_sock
        pre = AS_NOBODY
    flt = f"udp:{side.ip}:{PORT}" + (",sniff" if url.startswith("packet") else "")
    p = side.popen("taskset", "-c", str((os.cpu_count() or 1) - 1), *pre, sys.executable,
                   "-m", "efvi.cli.main", "sink", "--json", "-n", str(n), "--duration", "30",
                   url, flt, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
    time.sleep(1.5)  # the sink is up and its filter installed
    sent_pps = gen.send(n)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    if p.returncode not in (0, 130) or not out.strip():
        raise RuntimeError(f"sink failed ({p.returncode}): {err.strip()[-300:]}")
    r = json.loads(out)
    return {"received": r["rx_packets"] / n, "pps": r["pps"], "gen_pps": sent_pps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--adapters", default="xdp,packet")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("broker_veth: needs root (namespaces, the broker)", file=sys.stderr)
        return 2
    with netns.veth_pair() as pair:
        a = pair.a
        d = tempfile.mkdtemp(prefix="efvid-bench-")
        os.chmod(d, 0o755)
        pol = os.path.join(d, "policy.toml")
        with open(pol, "w") as f:
            f.write(f'[[grant]]\nname = "bench"\nusers = ["nobody"]\n'
                    f'interfaces = ["{a.ifname}"]\nfilters = ["udp"]\n'
                    f'ports = [{PORT}]\nmax_memory_mb = 512\n')
        sock = os.path.join(d, "efvid.sock")
        broker = a.popen(sys.executable, "-m", "efvi.cli.main", "daemon", "--socket", sock,
                         "--policy", pol, env=dict(os.environ, PYTHONPATH=SRC),
                         stderr=subprocess.DEVNULL)
        gen = Generator(pair)
        try:
            while not os.path.exists(sock):
                time.sleep(0.05)
            rows: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.repeat):
                for ad in args.adapters.split(","):
                    for mode, s in (("root, direct", None), ("nobody, via efvid", sock)):
                        name = f"{ad:6s} {mode}"
                        rows.setdefault(name, []).append(
                            run_sink(a, f"{ad}:{a.ifname}", args.n, gen, s))
        finally:
            gen.close()
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=15)
    print(f"generator: {gen.name}, {args.n} frames per run, {args.repeat} paired rounds "
          f"(medians)")
    print(f"{'receiver':28s} {'received':>9s} {'rx Mpps':>8s} {'ratio':>6s}")
    base: dict[str, float] = {}
    for name, rs in rows.items():
        rec = statistics.median(r["received"] for r in rs)
        pps = statistics.median(r["pps"] for r in rs)
        ad = name.split()[0]
        if "direct" in name:
            base[ad] = pps
        ratio = pps / base[ad] if ad in base and base[ad] else float("nan")
        print(f"{name:28s} {rec:9.4f} {pps / 1e6:8.3f} {ratio:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
