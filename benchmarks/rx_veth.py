"""RX benchmark over a veth pair: one generator, receivers side by side in one run.

    sudo python3 benchmarks/rx_veth.py [-n PACKETS] [--drain N] [--only NAME,...]
    sudo python3 benchmarks/rx_veth.py --rate PPS [--seconds S] [--repeat R] [--only ...]

Needs root. The generator is trafgen (Debian: ``apt-get install netsniff-ng``) in the
peer namespace, pinned to CPU 0; without it, a Python AF_PACKET sender is used (and
said). Each receiver runs in its own process in the receiving namespace, pinned to
the last CPU, and reports what it got; rows whose tool is missing are skipped with
the reason. Frames are 60-byte UDP to one port.

Columns: ``received/sent``, loss, and — for receivers that support it — the *drain
rate*: the receiver sleeps while the generator fills its ring (``--drain`` frames),
then empties it, timed from the first poll to the last frame.

``--rate PPS`` is the fixed-rate mode: the generator is paced (``trafgen -b PPSpps``)
and each receiver — ``efvi sink`` processes and the C anchors, which are compiled from
``benchmarks/c/*.c`` when ``gcc`` exists (rows skipped with a note otherwise) — is
charged the CPU its process used while the traffic flowed: utime + stime of
``/proc/PID/stat`` (clock ticks) and the nanosecond ``sum_exec_runtime`` of
``/proc/PID/task/*/schedstat``, sampled just before the generator starts and just after it
ends, divided by the packets the receiver counted. Rows are run in alternation
(``--repeat`` rounds, paired runs) and the table gives medians and each row's ratio to
its C anchor. ``efvi sink`` runs with its default latency budget (frames may wait up to
50 ms: ``--latency-ms``) and, on xdp, once more with ``--latency-ms 0`` (a wake-up per
``poll()`` that finds frames, as the C receivers do). The kernel's own receive work
(veth delivers in softirq on the sender's CPU) is charged to no receiver.

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
base = int(addrs[0])
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


_UDP_BATCH = r"""
import json, time
from efvi import udp
ep = udp.open("xdp:{IF}?mode=skb", (IP, PORT), rx_buffers=8192)
print("ready", flush=True)
n = 0; last = time.monotonic()
while True:
    k = len(ep.recv_batch(256))  # payloads copied out, buffers reposted: the whole path
    now = time.monotonic()
    if k:
        n += k; last = now
    elif now - last > 1.0 and (n or now - last > 30):
        break
print(json.dumps({"received": n, "drops": ep.stats()["drops"]}), flush=True)
ep.close()
"""


@dataclass
class Receiver:
    name: str
    requires: Callable[[], str | None]  # None if available, else the reason
    code: str = ""  # Python snippet (see module doc); "" for tcpdump
    drain: bool = False  # supports the drain measurement
    path: str = ""  # how it receives (the table's "path" column: XDP mode, ring kind)


def _have_module(mod: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(mod) else f"python module {mod} missing"


def _have_tool(tool: str, pkg: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(tool) else f"{tool} missing (apt-get install {pkg})"


def _have_adapter(name: str) -> Callable[[], str | None]:
    return lambda: (None if importlib.util.find_spec(f"efvi.adapters.{name}.adapter")
                    else f"efvi {name} adapter not in this build")


RECEIVERS: list[Receiver] = [
    Receiver("efvi xdp (batch)", _have_adapter("xdp"),
             _EFVI_RX.format(url="xdp:{IF}?mode=skb", batch=1), drain=True,
             path="AF_XDP copy, XDP skb (generic) mode"),
    Receiver("efvi xdp (per-packet)", _have_adapter("xdp"),
             _EFVI_RX.format(url="xdp:{IF}?mode=skb", batch=0), drain=True,
             path="AF_XDP copy, XDP skb (generic) mode"),
    Receiver("efvi packet (batch)", _have_adapter("packet"),
             _EFVI_RX.format(url="packet:{IF}", batch=1), drain=True,
             path="AF_PACKET TPACKET_V2 ring"),
    Receiver("efvi.udp recv_batch (xdp)", _have_adapter("xdp"), _UDP_BATCH,
             path="AF_XDP copy, XDP skb (generic) mode"),
    Receiver("tcpdump -w", _have_tool("tcpdump", "tcpdump"), path="libpcap (TPACKET_V3)"),
    Receiver("pcapy-ng", _have_module("pcapy"), _PCAPY, path="libpcap (TPACKET_V3)"),
    Receiver("python AF_PACKET loop", lambda: None, _AF_PACKET, path="AF_PACKET recv()"),
    Receiver("scapy sniff", _have_module("scapy"), _SCAPY, path="AF_PACKET recv() (scapy)"),
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

    def send(self, n: int, rate: int = 0) -> float:
        """Send ``n`` frames as fast as possible (or at ``rate`` pps); return the pps."""
        b = self.pair.b
        t0 = time.monotonic()
        if self.trafgen:
            pace = ["-b", f"{rate}pps"] if rate else []
            b.run("taskset", "-c", "0", "trafgen", "-o", b.ifname, "-i", self.cfg.name,
                  "-n", str(n), "-P", "1", "-q", "-C", *pace, timeout=300)
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


# ---- fixed-rate mode: CPU per packet ------------------------------------------------------

C_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")


def build_c(name: str) -> tuple[str | None, str]:
    """Compile ``benchmarks/c/NAME.c`` (cached in a temp dir): (binary, "") or (None, why)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, "gcc missing: C anchor not built (apt-get install gcc)"
    src = os.path.join(C_DIR, name + ".c")
    out = os.path.join(tempfile.gettempdir(), f"efvi-bench-{name}")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        r = subprocess.run([gcc, "-O2", "-o", out, src], capture_output=True, text=True)
        if r.returncode:
            return None, f"{name}.c did not compile: {r.stderr.strip().splitlines()[-1:]}"
    return out, ""


def cpu_of(pid: int) -> tuple[float, float]:
    """(stat seconds, schedstat seconds) the process has run so far, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    ns = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns += int(f.read().split()[0])
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK"), ns / 1e9


@dataclass
class RateReceiver:
    name: str
    anchor: str  # the C row it is compared with ("" for the anchors themselves)
    argv: Callable[[netns.Side], list[str] | None]  # None: not available
    why: str = ""


def _efvi_sink(url: str, sniff: bool = False,
               *flags: str) -> Callable[[netns.Side], list[str]]:
    spec = f"udp:{{ip}}:{PORT}" + (",sniff" if sniff else "")
    return lambda side: [sys.executable, "-m", "efvi.cli.main", "sink", "--json", *flags,
                         url.replace("{IF}", side.ifname), spec.format(ip=side.ip)]


def rate_receivers(xdp_mode: str) -> list[RateReceiver]:
    rows: list[RateReceiver] = []
    tp, why_tp = build_c("tpv3_rx")
    xs, why_xs = build_c("afxdp_rx")
    rows.append(RateReceiver("C TPACKET_V3 (tpv3_rx.c)", "",
                             lambda side: [tp, side.ifname, str(PORT)] if tp else None, why_tp))
    # the same C loop doing what ef_vi's model asks (copy into posted buffers, one
    # event per frame, a sink's counting and re-posting): the floor of any receiver
    # that keeps the model, against the anchor that only walks the headers
    rows.append(RateReceiver("C TPACKET_V3 + ef_vi model (tpv3_rx.c model)",
                             "C TPACKET_V3 (tpv3_rx.c)",
                             lambda side: [tp, side.ifname, str(PORT), "model"] if tp else None,
                             why_tp))
    rows.append(RateReceiver("efvi sink packet:", "C TPACKET_V3 (tpv3_rx.c)",
                             _efvi_sink("packet:{IF}", sniff=True)))
    xm = f" (XDP {xdp_mode} mode)"
    rows.append(RateReceiver("C AF_XDP poll() (afxdp_rx.c)" + xm, "",
                             lambda side: [xs, side.ifname, xdp_mode] if xs else None, why_xs))
    rows.append(RateReceiver("efvi sink xdp:" + xm, "C AF_XDP poll() (afxdp_rx.c)" + xm,
                             _efvi_sink(f"xdp:{{IF}}?mode={xdp_mode}")))
    # the same without a latency budget: one wake-up per poll() that finds frames, as
    # the C receiver does (efvi sink's default lets frames wait up to 50 ms)
    rows.append(RateReceiver("efvi sink --latency-ms 0 xdp:" + xm,
                             "C AF_XDP poll() (afxdp_rx.c)" + xm,
                             _efvi_sink(f"xdp:{{IF}}?mode={xdp_mode}", False,
                                        "--latency-ms", "0")))
    if shutil.which("tcpdump"):
        rows.append(RateReceiver("tcpdump -w /dev/null", "C TPACKET_V3 (tpv3_rx.c)",
                                 lambda side: ["tcpdump", "-i", side.ifname, "-w", "/dev/null",
                                               "-n", "-B", "65536", f"udp dst port {PORT}"]))
    return rows


def run_rate(pair: netns.VethPair, gen: Generator, rcv: RateReceiver, argv: list[str],
             rate: int, n: int) -> dict[str, float]:
    """One paced run: the receiver's CPU seconds while ``n`` frames arrive at ``rate``."""
    side = pair.a
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    p = side.popen("taskset", "-c", RX_CPU, *argv, stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        tcpdump = argv[0] == "tcpdump"
        stream = p.stderr if (tcpdump or "efvi.cli.main" in argv) else p.stdout
        assert stream is not None
        while True:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"{rcv.name} died: {p.stderr.read() if p.stderr else ''}")
            ready = ("listening on" in line) if tcpdump else (
                line.startswith("#") or line.strip() == "ready")
            if ready:
                break
        time.sleep(0.3)
        c0 = cpu_of(p.pid)
        t0 = time.monotonic()
        gen.send(n, rate=rate)
        sent_s = time.monotonic() - t0
        time.sleep(0.3)
        c1 = cpu_of(p.pid)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        if tcpdump:
            got = next(int(ln.split()[0]) for ln in err.splitlines() if "packets captured" in ln)
        else:
            js = [ln for ln in out.splitlines() if ln.startswith("{")]
            if not js:
                raise RuntimeError(err[-300:])
            d = json.loads(js[-1])
            got = int(d.get("received", d.get("rx_packets", 0)))
        return {"received": got, "gen_pps": n / sent_s, "stat_s": c1[0] - c0[0],
                "sched_s": c1[1] - c0[1]}
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main_rate(args: argparse.Namespace) -> int:
    import statistics
    rows = rate_receivers(args.xdp_mode)
    if args.only:
        rows = [r for r in rows if r.name in args.only.split(",")]
    n = int(args.rate * args.seconds)
    results: dict[str, list[dict[str, float]]] = {r.name: [] for r in rows}
    notes: dict[str, str] = {}
    with netns.veth_pair(subnet=91) as pair:
        gen = Generator(pair)
        if not gen.trafgen:
            print("rx_veth --rate: trafgen missing (apt-get install netsniff-ng)", file=sys.stderr)
            return 2
        with open("/proc/loadavg") as f:
            load0 = f.read().split()[:3]
        print(f"generator: trafgen -b {args.rate}pps, {n} x {len(gen.frame)}-byte UDP frames "
              f"per run; {NCPU} CPUs (generator CPU 0, receiver CPU {RX_CPU}); "
              f"{args.repeat} paired rounds; load average before: {' '.join(load0)}")
        try:
            for rnd in range(args.repeat):
                for rcv in rows:
                    argv = rcv.argv(pair.a)
                    if argv is None:
                        notes[rcv.name] = rcv.why or "not available"
                        continue
                    try:
                        r = run_rate(pair, gen, rcv, argv, args.rate, n)
                        results[rcv.name].append(r)
                        print(f"  round {rnd + 1} {rcv.name}: {int(r['received'])}/{n}, "
                              f"{r['sched_s'] * 1e6 / max(r['received'], 1):.3f} µs/packet "
                              f"(schedstat), {r['stat_s'] * 1e6 / max(r['received'], 1):.3f} "
                              f"(stat), gen {r['gen_pps'] / 1e3:.0f} kpps", flush=True)
                    except Exception as exc:  # noqa: BLE001 - one failing row must not hide others
                        notes[rcv.name] = str(exc).strip().splitlines()[-1][:80]
        finally:
            gen.close()
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    print(f"load average after: {' '.join(load1)}")

    def per_pkt(name: str, key: str) -> float | None:
        rs = results.get(name) or []
        vals = [r[key] * 1e6 / r["received"] for r in rs if r["received"]]
        return statistics.median(vals) if vals else None

    print()
    print(f"| receiver @ {args.rate / 1e3:.0f} kpps | received/sent (median) | "
          "CPU µs/packet (schedstat) | CPU µs/packet (/proc stat) | ratio to its C anchor |")
    print("|---|---|---|---|---|")
    for rcv in rows:
        rs = results[rcv.name]
        if not rs:
            print(f"| {rcv.name} | skipped | | | {notes.get(rcv.name, '')} |")
            continue
        got = statistics.median(r["received"] for r in rs)
        us = per_pkt(rcv.name, "sched_s")
        st = per_pkt(rcv.name, "stat_s")
        ratio = ""
        if rcv.anchor:
            # the median of per-round ratios (paired runs)
            pairs = [a["sched_s"] / a["received"] / (b["sched_s"] / b["received"])
                     for a, b in zip(rs, results.get(rcv.anchor) or [])
                     if a["received"] and b["received"] and b["sched_s"] > 0]
            ratio = f"{statistics.median(pairs):.2f}x" if pairs else "n/a"
        print(f"| {rcv.name} | {int(got)}/{n} | {us:.3f} | {st:.3f} | {ratio} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500_000, help="frames per receiver")
    ap.add_argument("--drain", type=int, default=30_000, help="frames for the drain test")
    ap.add_argument("--only", default="", help="comma-separated receiver names")
    ap.add_argument("--rate", type=int, default=0,
                    help="fixed-rate mode: pace the generator at PPS and report CPU per packet")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per --rate run")
    ap.add_argument("--repeat", type=int, default=3, help="paired rounds in --rate mode")
    ap.add_argument("--xdp-mode", default="skb", help="XDP attach mode for xdp rows (skb|drv)")
    args = ap.parse_args(argv)
    why = netns.why_unavailable()
    if why:
        print(f"rx_veth: {why}", file=sys.stderr)
        return 2
    if args.rate:
        return main_rate(args)
    rows: list[tuple[str, str, str, str, str, str]] = []
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
                    rows.append((rcv.name, rcv.path, "skipped", "", "", missing))
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
                    rows.append((rcv.name, rcv.path, f"{got}/{args.n}", f"{loss:.2f}%",
                                 f"{float(r['gen_pps']) / 1e3:.0f} kpps", drain))  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001 - one failing row must not hide others
                    rows.append((rcv.name, rcv.path, "error", "", "",
                                 str(exc).splitlines()[-1][:60]))
        finally:
            gen.close()
    print()
    print("| receiver | path | received/sent | loss | generator rate | drain rate |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
