"""RX benchmark over a veth pair: one generator, receivers side by side in one run.

    sudo python3 benchmarks/rx_veth.py [-n PACKETS] [--drain N] [--only NAME,...]

Needs root. The generator is trafgen (Debian: ``apt-get install netsniff-ng``) in the
peer namespace, pinned to CPU 0; without it, a Python AF_PACKET sender is used (and
said). Each receiver runs in its own process in the receiving namespace, pinned to
the last CPU, and reports what it got; rows whose tool is missing are skipped with
the reason. Frames are 60-byte UDP to one port.

Columns: ``received/sent``, loss, and — for receivers that support it — the *drain
rate*: the receiver sleeps while the generator fills its ring (``--drain`` frames),
then empties it, timed from the first poll to the last frame.

Adding a receiver is one entry in :data:`RECEIVERS` (name, requirement, code). The
code is a Python snippet run with ``IF``, ``IP``, ``PORT``, ``DRAIN`` defined; it
prints ``ready``, receives until idle for 1 s, and prints one JSON line with
``received`` (and ``drain_pps`` when draining).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from efvi.testing import netns  # noqa: E402
from efvi.wire.build import udp_frame  # noqa: E402

PORT = 9000
NCPU = os.cpu_count() or 1
RX_CPU = str(NCPU - 1)

_EFVI_RX = r"""
import json, sys, time
import numpy as np
from efvi import Driver, ProtectionDomain, MemoryRegion, VirtualInterface, FilterSpec
URL = {url!r}; BATCH = {batch}
NB = max(16384, DRAIN + 64)
RXQ = 1 << (NB - 1).bit_length()
d = Driver.open(URL)
pd = ProtectionDomain(d); mr = MemoryRegion(pd, NB * 2048)
vi = VirtualInterface(pd, rxq=RXQ, evq=2 * RXQ)
spec = FilterSpec.ip4_local("udp", IP, PORT)
if not d.capabilities.steal:
    spec = spec.sniff()
vi.filter_add(spec)
addrs = mr.dma_addrs()
post = min(NB, RXQ - 1)
vi.receive_post_batch(addrs[:post], np.arange(post, dtype=np.uint32))
print("ready", flush=True)
t0 = t1 = None
if DRAIN:
    sys.stdin.readline()  # the generator has filled the ring
    t0 = time.monotonic()
n = 0; last = time.monotonic()
while True:
    if BATCH:
        b = vi.poll()
        k = len(b)
        if k:
            ids = b.rq_id[b.type == 0]
            n += len(ids)
            vi.receive_post_batch(addrs[ids], ids.copy())
    else:
        evs = vi.eventq_poll(64)
        k = len(evs)
        base = int(addrs[0])
        for e in evs:  # efsink's pattern: receive_init per buffer, one push per poll
            if e.type == 0:
                n += 1
                vi.receive_init(base + e.rq_id * 2048, e.rq_id)
        vi.receive_push()
    now = time.monotonic()
    if k:
        t1 = now; last = now
    elif now - last > 1.0 and (n or now - last > 30):
        break
res = {{"received": n}}
if DRAIN and t0 is not None and t1 > t0:
    res["drain_pps"] = n / (t1 - t0)
st = vi.stats(); res["drops"] = st["drops"]
print(json.dumps(res), flush=True)
d.close()
"""

_AF_PACKET = r"""
import json, socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)
s.bind((IF, 0)); s.settimeout(1.0)
print("ready", flush=True)
n = 0
tail = bytes([0x23, 0x28])  # dst port 9000
while True:
    try:
        f = s.recv(2048)
    except socket.timeout:
        if n: break
        continue
    if f[36:38] == tail:
        n += 1
print(json.dumps({"received": n}), flush=True)
"""

_SCAPY = r"""
import json, logging, time
logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.sendrecv import AsyncSniffer
n = [0]; last = [time.monotonic()]
def cb(p):
    n[0] += 1; last[0] = time.monotonic()
a = AsyncSniffer(iface=IF, filter=f"udp dst port {PORT}", prn=cb, store=False)
a.start()
time.sleep(0.5)
print("ready", flush=True)
while not n[0] or time.monotonic() - last[0] < 1.0:
    time.sleep(0.1)
a.stop()
print(json.dumps({"received": n[0]}), flush=True)
"""

_PCAPY = r"""
import json, time, pcapy
p = pcapy.open_live(IF, 128, 0, 100)
p.setfilter(f"udp dst port {PORT}")
p.setnonblock(1)  # next() would block forever once traffic stops; busy-poll instead
print("ready", flush=True)
n = 0; last = time.monotonic()
while True:
    h, _ = p.next()
    if h is not None and h.getlen():
        n += 1; last = time.monotonic()
    elif n and time.monotonic() - last > 1.0:
        break
print(json.dumps({"received": n}), flush=True)
"""


@dataclass
class Receiver:
    name: str
    requires: Callable[[], str | None]  # None if available, else the reason
    code: str = ""  # Python snippet (see module doc); "" for tcpdump
    drain: bool = False  # supports the drain measurement


def _have_module(mod: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(mod) else f"python module {mod} missing"


def _have_tool(tool: str, pkg: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(tool) else f"{tool} missing (apt-get install {pkg})"


def _have_adapter(name: str) -> Callable[[], str | None]:
    return lambda: (None if importlib.util.find_spec(f"efvi.adapters.{name}.adapter")
                    else f"efvi {name} adapter not in this build")


RECEIVERS: list[Receiver] = [
    Receiver("efvi xdp (batch)", _have_adapter("xdp"),
             _EFVI_RX.format(url="xdp:{IF}?mode=skb", batch=1), drain=True),
    Receiver("efvi xdp (per-packet)", _have_adapter("xdp"),
             _EFVI_RX.format(url="xdp:{IF}?mode=skb", batch=0), drain=True),
    Receiver("efvi packet (batch)", _have_adapter("packet"),
             _EFVI_RX.format(url="packet:{IF}", batch=1), drain=True),
    Receiver("tcpdump -w", _have_tool("tcpdump", "tcpdump")),
    Receiver("pcapy-ng", _have_module("pcapy"), _PCAPY),
    Receiver("python AF_PACKET loop", lambda: None, _AF_PACKET),
    Receiver("scapy sniff", _have_module("scapy"), _SCAPY),
]


def frame(pair: netns.VethPair) -> bytes:
    a, b = pair.a, pair.b
    return udp_frame(a.mac, b.mac, b.ip, a.ip, 40000, PORT, b"efvi-bench" + bytes(8))


class Generator:
    """trafgen in the peer namespace (or a Python AF_PACKET fallback), pinned to CPU 0."""

    def __init__(self, pair: netns.VethPair) -> None:
        self.pair = pair
        self.trafgen = shutil.which("trafgen") is not None
        f = frame(pair)
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
        self.cfg.write("{ " + ", ".join(f"0x{x:02x}" for x in f) + " }\n")
        self.cfg.close()
        self.frame = f

    @property
    def name(self) -> str:
        return "trafgen" if self.trafgen else "python AF_PACKET (trafgen missing)"

    def send(self, n: int) -> float:
        """Send ``n`` frames as fast as possible; return the generator's pps."""
        b = self.pair.b
        t0 = time.monotonic()
        if self.trafgen:
            b.run("taskset", "-c", "0", "trafgen", "-o", b.ifname, "-i", self.cfg.name,
                  "-n", str(n), "-P", "1", "-q", "-C", timeout=120)
        else:
            code = ("import socket,sys; s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); "
                    f"s.bind(({b.ifname!r},0)); f=bytes.fromhex({self.frame.hex()!r})\n"
                    f"for i in range({n}): s.send(f)")
            b.run("taskset", "-c", "0", sys.executable, "-c", code, timeout=300)
        return n / max(time.monotonic() - t0, 1e-9)

    def close(self) -> None:
        os.unlink(self.cfg.name)


def _start(side: netns.Side, rcv: Receiver, drain: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    if not rcv.code:
        return side.popen("taskset", "-c", RX_CPU, "tcpdump", "-i", side.ifname, "-w",
                          "/dev/null", "-B", "65536", "-n", f"udp dst port {PORT}",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    code = rcv.code.replace("{IF}", side.ifname)
    pre = f"IF={side.ifname!r}; IP={side.ip!r}; PORT={PORT}; DRAIN={drain}\n"
    return side.popen("taskset", "-c", RX_CPU, sys.executable, "-c", pre + code,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True, env=env)


def _wait_ready(p: subprocess.Popen[str], tcpdump: bool) -> None:
    stream = p.stderr if tcpdump else p.stdout
    assert stream is not None
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"receiver died: {p.stderr.read() if p.stderr else ''}")
        if ("listening on" in line) if tcpdump else line.strip() == "ready":
            return


def run_one(pair: netns.VethPair, gen: Generator, rcv: Receiver, n: int,
            drain: int = 0) -> dict[str, object]:
    p = _start(pair.a, rcv, drain)
    try:
        _wait_ready(p, not rcv.code)
        time.sleep(0.2)
        gen_pps = gen.send(drain if drain else n)
        if drain:
            time.sleep(0.5)
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        if not rcv.code:
            time.sleep(1.0)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30)
            got = next(int(ln.split()[0]) for ln in err.splitlines()
                       if "packets captured" in ln)
            return {"received": got, "gen_pps": gen_pps}
        out, err = p.communicate(timeout=120)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(err[-800:])
        res: dict[str, object] = json.loads(lines[-1])
        res["gen_pps"] = gen_pps
        return res
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500_000, help="frames per receiver")
    ap.add_argument("--drain", type=int, default=30_000, help="frames for the drain test")
    ap.add_argument("--only", default="", help="comma-separated receiver names")
    args = ap.parse_args(argv)
    why = netns.why_unavailable()
    if why:
        print(f"rx_veth: {why}", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str, str, str]] = []
    with netns.veth_pair(subnet=90) as pair:
        gen = Generator(pair)
        print(f"generator: {gen.name}; {args.n} x {len(gen.frame)}-byte UDP frames; "
              f"{NCPU} CPUs (generator CPU 0, receiver CPU {RX_CPU})")
        try:
            for rcv in RECEIVERS:
                if args.only and rcv.name not in args.only.split(","):
                    continue
                missing = rcv.requires()
                if missing:
                    rows.append((rcv.name, "skipped", "", "", missing))
                    continue
                try:
                    r = run_one(pair, gen, rcv, args.n)
                    got = int(r["received"])  # type: ignore[arg-type]
                    loss = 100.0 * (args.n - got) / args.n
                    drain = ""
                    if rcv.drain:
                        d = run_one(pair, gen, rcv, args.n, drain=args.drain)
                        if "drain_pps" in d:
                            drain = f"{float(d['drain_pps']) / 1e6:.2f} Mpps"  # type: ignore[arg-type]
                    rows.append((rcv.name, f"{got}/{args.n}", f"{loss:.2f}%",
                                 f"{float(r['gen_pps']) / 1e3:.0f} kpps", drain))  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001 - one failing row must not hide others
                    rows.append((rcv.name, "error", "", "", str(exc).splitlines()[-1][:60]))
        finally:
            gen.close()
    print()
    print("| receiver | received/sent | loss | generator rate | drain rate |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
