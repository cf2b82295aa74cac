"""TX benchmark over a veth pair: senders side by side into an XDP_DROP peer.

    sudo python3 benchmarks/tx_veth.py [-n PACKETS] [--only NAME,...]

Needs root. The peer interface gets a 2-instruction XDP_DROP program in native mode
(loaded with efvi's own bpf wrappers), so the peer's cost is minimal and its
``rx_packets`` counter says how many frames arrived. Each sender runs in its own
process in the sending namespace, pinned to the last CPU, and sends ``-n`` 60-byte
UDP frames as fast as it can; the table reports its rate, the peer's count, and the
ratio against trafgen (Debian: ``apt-get install netsniff-ng``; rows whose tool is
missing are skipped with the reason).

One timing method for every row: no sender times itself. A sampler in the peer's
namespace (pinned to another CPU) reads the peer's ``rx_packets`` every
:data:`SAMPLE_S` against CLOCK_MONOTONIC, and a row's rate is the frames counted
between the first and the last sample at which the counter moved, over the time
between those samples (start-up, set-up and teardown fall outside the window for
every sender alike; the window's error is one sample period).

Adding a sender is one entry in :data:`SENDERS` (name, requirement, code): a Python
snippet run with ``IF``, ``N``, ``FRAME`` (bytes) defined that sends ``N`` frames and
prints one JSON line with ``sent``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from rx_veth import NCPU, RX_CPU, _have_adapter, _have_tool  # noqa: E402

from efvi.bpf import ebpf as asm, syscall as bpf  # noqa: E402
from efvi.testing import netns  # noqa: E402
from efvi.wire.build import udp_frame  # noqa: E402

_EFVI_TX = r"""
import json
import numpy as np
from efvi import Driver, ProtectionDomain, MemoryRegion, VirtualInterface
d = Driver.open({url!r})
pd = ProtectionDomain(d); NB = 4096
mr = MemoryRegion(pd, NB * 2048)
vi = VirtualInterface(pd, txq=NB, rxq=0, evq=2 * NB)
for i in range(NB):
    mr.mv[i * 2048:i * 2048 + len(FRAME)] = FRAME
addrs = mr.dma_addrs(); lens = np.full(NB, len(FRAME), np.uint32)
ids = np.arange(NB, dtype=np.uint32)
B = {batch}
sent = done = 0; slot = 0
base = int(addrs[0]); flen = len(FRAME)
while done < N:
    if B == 1:  # efsend's pattern: transmit_init per frame, one push per 32, Event objects
        for _ in range(min(32, N - sent)):
            if vi.transmit_init(base + slot * 2048, flen, slot) != 0:
                break
            sent += 1; slot = (slot + 1) % NB
        vi.transmit_push()
        for ev in vi.eventq_poll(64):
            if ev.type == 1:
                done += len(vi.transmit_unbundle(ev))
        continue
    if sent < N:
        k = min(B, N - sent, NB - slot)
        k = vi.transmit_batch(addrs[slot:slot + k], lens[:k], ids[slot:slot + k])
        sent += k; slot = (slot + k) % NB
    b = vi.poll()
    done += len(vi.transmit_completed(b))
print(json.dumps({{"sent": sent}}), flush=True)
d.close()
"""

_EFVI_SEND = r"""
import ipaddress, json
from efvi.apps.send import Sender
# efvi send's engine, as the CLI runs it: {flags}
snd = Sender({url!r}.replace("{{IF}}", IF), str(ipaddress.IPv4Address(FRAME[30:34])),
             int.from_bytes(FRAME[36:38], "big"), payload=len(FRAME) - 42,
             dmac=FRAME[:6].hex(":"))
st = snd.run(N, batch={batch})
print(json.dumps({{"sent": st.tx_packets}}), flush=True)
snd.close()
"""

_AF_PACKET = r"""
import json, socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((IF, 0))
for _ in range(N):
    s.send(FRAME)
print(json.dumps({"sent": N}), flush=True)
"""


@dataclass
class Sender:
    name: str
    requires: Callable[[], str | None]
    code: str = ""  # "" = trafgen


SENDERS: list[Sender] = [
    Sender("trafgen", _have_tool("trafgen", "netsniff-ng")),
    Sender("efvi xdp (batch 256)", _have_adapter("xdp"),
           _EFVI_TX.format(url="xdp:{IF}?mode=skb", batch=256)),
    Sender("efvi xdp (per-packet, push/32)", _have_adapter("xdp"),
           _EFVI_TX.format(url="xdp:{IF}?mode=skb", batch=1)),
    Sender("efvi packet (batch 256)", _have_adapter("packet"),
           _EFVI_TX.format(url="packet:{IF}", batch=256)),
    Sender("efvi send xdp: (defaults)", _have_adapter("xdp"),
           _EFVI_SEND.format(url="xdp:{IF}?mode=skb", batch=None, flags="no -B")),
    Sender("efvi send xdp: -B 64 (old default)", _have_adapter("xdp"),
           _EFVI_SEND.format(url="xdp:{IF}?mode=skb", batch=64, flags="-B 64")),
    Sender("efvi send packet: (defaults)", _have_adapter("packet"),
           _EFVI_SEND.format(url="packet:{IF}", batch=None, flags="no -B")),
    Sender("python AF_PACKET send loop", lambda: None, _AF_PACKET),
]


def _drop_program(side: netns.Side) -> tuple[int, int]:
    a = asm.Asm()
    a.ret(asm.XDP_DROP)
    prog = bpf.prog_load(a.assemble(), name="bench_drop")
    with netns.enter(side.netns):  # ifindex and attach both resolve in this namespace
        idx = socket.if_nametoindex(side.ifname)
        link = bpf.link_create(prog, idx, bpf.XDP_FLAGS_DRV_MODE)
    return prog, link


SAMPLE_S = 0.0005  # the peer sampler's period: a row's window is exact to about this

# Runs in the peer's namespace (``ip netns exec`` mounts that namespace's sysfs): reads
# rx_packets every PERIOD until a line arrives on stdin, then prints the baseline, the
# first and the last (CLOCK_MONOTONIC ns, count) samples at which the counter moved,
# and the final count.
_SAMPLER = r"""
import json, os, select, sys, time
fd = os.open("/sys/class/net/%s/statistics/rx_packets" % IFNAME, os.O_RDONLY)
def read():
    return int(os.pread(fd, 32, 0))
base = prev = read()
first = last = None
print("ready", flush=True)
while True:
    stop = select.select([sys.stdin], [], [], PERIOD)[0]
    t = time.monotonic_ns(); c = read()
    if c != prev:
        if first is None:
            first = (t, c)
        last = (t, c); prev = c
    if stop:
        break
print(json.dumps({"base": base, "first": first, "last": last, "final": read()}), flush=True)
"""


def _peer_window(sample: dict[str, object]) -> tuple[float, int]:
    """(rate in frames/s, frames arrived) from a sampler's report."""
    base, final = int(sample["base"]), int(sample["final"])  # type: ignore[call-overload]
    first, last = sample["first"], sample["last"]
    if not isinstance(first, list) or not isinstance(last, list) or last[0] <= first[0]:
        raise RuntimeError(f"too few frames reached the peer to time ({final - base})")
    return (last[1] - first[1]) / ((last[0] - first[0]) / 1e9), final - base


def run_one(pair: netns.VethPair, s: Sender, n: int, frame: bytes) -> tuple[float, int]:
    """Run one sender; its rate and arrivals as the peer's counter saw them."""
    a, b = pair.a, pair.b
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    other = ["taskset", "-c", "0"] if RX_CPU != "0" else []
    sampler = b.popen(*other, sys.executable, "-c",
                      f"IFNAME={b.ifname!r}; PERIOD={SAMPLE_S}\n" + _SAMPLER,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert sampler.stdout is not None and sampler.stdin is not None
        if sampler.stdout.readline().strip() != b"ready":
            raise RuntimeError("the peer's counter sampler did not start")
        if not s.code:
            with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg:
                cfg.write("{ " + ", ".join(f"0x{x:02x}" for x in frame) + " }\n")
                cfg.flush()
                a.run("taskset", "-c", RX_CPU, "trafgen", "-o", a.ifname, "-i", cfg.name,
                      "-n", str(n), "-P", "1", timeout=300)
        else:
            pre = f"IF={a.ifname!r}; N={n}; FRAME=bytes.fromhex({frame.hex()!r})\n"
            a.run("taskset", "-c", RX_CPU, sys.executable, "-c",
                  pre + s.code.replace("{IF}", a.ifname), timeout=300, env=env)
        time.sleep(0.2)  # frames still queued towards the peer land
        out, _ = sampler.communicate(b"stop\n", timeout=30)
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait()
    return _peer_window(json.loads(out.decode().strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500_000)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    why = netns.why_unavailable()
    if why:
        print(f"tx_veth: {why}", file=sys.stderr)
        return 2
    rows: list[tuple[str, ...]] = []
    with netns.veth_pair(subnet=91) as pair:
        frame = udp_frame(pair.b.mac, pair.a.mac, pair.a.ip, pair.b.ip, 40000, 9000,
                          b"efvi-bench" + bytes(8))
        prog, link = _drop_program(pair.b)
        print(f"{args.n} x {len(frame)}-byte UDP frames into an XDP_DROP (drv) peer; "
              f"{NCPU} CPUs, sender on CPU {RX_CPU}; every rate is the peer's rx_packets "
              f"over its own first-to-last-frame window (sampled every {SAMPLE_S * 1e3:g} ms)")
        base = None
        try:
            for s in SENDERS:
                if args.only and s.name not in args.only.split(","):
                    continue
                missing = s.requires()
                if missing:
                    rows.append((s.name, "skipped", "", "", missing))
                    continue
                try:
                    rate, arrived = run_one(pair, s, args.n, frame)
                except Exception as exc:  # noqa: BLE001
                    rows.append((s.name, "error", "", "", str(exc).splitlines()[-1][:60]))
                    continue
                if s.name == "trafgen":
                    base = rate
                ratio = f"{rate / base:.2f}x" if base else ""
                rows.append((s.name, f"{rate / 1e3:.0f} kpps", f"{arrived}/{args.n}", ratio,
                             ""))
        finally:
            os.close(link)
            os.close(prog)
    print()
    print("| sender | rate at peer | arrived at peer | vs trafgen | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
