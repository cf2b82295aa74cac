"""TX benchmark over a veth pair: senders side by side into an XDP_DROP peer.

    sudo python3 benchmarks/tx_veth.py [-n PACKETS] [--only NAME,...]

Needs root. The peer interface gets a 2-instruction XDP_DROP program in native mode
(loaded with efvi's own bpf wrappers), so the peer's cost is minimal and its
``rx_packets`` counter says how many frames arrived. Each sender runs in its own
process in the sending namespace, pinned to the last CPU, and sends ``-n`` 60-byte
UDP frames as fast as it can; the table reports its rate, the peer's count, and the
ratio against trafgen (Debian: ``apt-get install netsniff-ng``; rows whose tool is
missing are skipped with the reason).

Adding a sender is one entry in :data:`SENDERS` (name, requirement, code): a Python
snippet run with ``IF``, ``N``, ``FRAME`` (bytes) defined that sends and prints one
JSON line with ``sent`` and ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from rx_veth import NCPU, RX_CPU, _have_adapter, _have_tool  # noqa: E402

from efvi.bpf import ebpf as asm, syscall as bpf  # noqa: E402
from efvi.testing import netns  # noqa: E402
from efvi.wire.build import udp_frame  # noqa: E402

_EFVI_TX = r"""
import json, time
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
t0 = time.monotonic()
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
t = time.monotonic() - t0
print(json.dumps({{"sent": sent, "seconds": t}}), flush=True)
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
print(json.dumps({{"sent": st.tx_packets, "seconds": st.elapsed_s}}), flush=True)
snd.close()
"""

_AF_PACKET = r"""
import json, socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((IF, 0))
t0 = time.monotonic()
for _ in range(N):
    s.send(FRAME)
print(json.dumps({"sent": N, "seconds": time.monotonic() - t0}), flush=True)
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


def _peer_rx(side: netns.Side) -> int:
    out = side.run("ip", "-j", "-s", "link", "show", "dev", side.ifname).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def _drop_program(side: netns.Side) -> tuple[int, int]:
    a = asm.Asm()
    a.ret(asm.XDP_DROP)
    prog = bpf.prog_load(a.assemble(), name="bench_drop")
    with netns.enter(side.netns):  # ifindex and attach both resolve in this namespace
        idx = socket.if_nametoindex(side.ifname)
        link = bpf.link_create(prog, idx, bpf.XDP_FLAGS_DRV_MODE)
    return prog, link


def run_one(pair: netns.VethPair, s: Sender, n: int, frame: bytes) -> tuple[float, int]:
    a, b = pair.a, pair.b
    before = _peer_rx(b)
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    if not s.code:
        with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg:
            cfg.write("{ " + ", ".join(f"0x{x:02x}" for x in frame) + " }\n")
            cfg.flush()
            r = a.run("taskset", "-c", RX_CPU, "trafgen", "-o", a.ifname, "-i", cfg.name,
                      "-n", str(n), "-P", "1", timeout=300)
        # trafgen reports "S sec, U usec on CPU0 (N packets)": its own sending time
        m = re.search(r"(\d+) sec, (\d+) usec on CPU", r.stdout + r.stderr)
        if not m:
            raise RuntimeError("could not read trafgen's time: " + r.stdout[-200:])
        secs = int(m.group(1)) + int(m.group(2)) / 1e6
        rate = n / secs
    else:
        pre = f"IF={a.ifname!r}; N={n}; FRAME=bytes.fromhex({frame.hex()!r})\n"
        r = a.run("taskset", "-c", RX_CPU, sys.executable, "-c",
                  pre + s.code.replace("{IF}", a.ifname), timeout=300, env=env)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        rate = res["sent"] / res["seconds"]
    return rate, _peer_rx(b) - before


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
              f"{NCPU} CPUs, sender on CPU {RX_CPU}")
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
    print("| sender | rate | arrived at peer | vs trafgen | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
