"""64-byte frames through the sim adapter, TX VI → wire → RX VI: batch vs per-packet API.

Run: python benchmarks/sim_datapath.py [--seconds S] [--json]

Each row is one way of driving the same path, in one process:

* batch B — ``transmit_batch`` of B frames, ``poll`` (numpy columns),
  ``receive_post_batch`` of the returned ids, ``transmit_completed``;
* per-packet, push/32 — ``transmit_init`` per frame and ``transmit_push`` every 32,
  then ``eventq_poll`` (one Event object per event), ``receive_init`` per event,
  ``receive_push`` per poll, ``transmit_unbundle`` per TX event (efsink/efsend style);
* per-packet, push/1 — the same with ``transmit`` (init + push) for every frame;
* ping-pong — one ``transmit`` then poll until its RX event: every frame alone
  through the NIC (the latency path; nothing to batch).

Reports Mpps and ns/packet (median of 3 runs). A benchmark, not a test: no assertion.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from efvi import Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.constants import PKT_BUF_SIZE
from efvi.wire.build import udp_frame

NBUF = 8192


class Rig:
    def __init__(self, tag: str) -> None:
        self.dtx = Driver.open(f"sim:btx{tag}?wire=bw{tag}")
        self.drx = Driver.open(f"sim:brx{tag}?wire=bw{tag}&ip=198.18.50.2")
        self.tpd, self.rpd = ProtectionDomain(self.dtx), ProtectionDomain(self.drx)
        self.tmr = MemoryRegion(self.tpd, NBUF * PKT_BUF_SIZE)
        self.rmr = MemoryRegion(self.rpd, NBUF * PKT_BUF_SIZE)
        self.tvi = VirtualInterface(self.tpd, rxq=0, txq=NBUF)
        self.rvi = VirtualInterface(self.rpd, rxq=NBUF, txq=0)
        self.rvi.filter_add(FilterSpec.ip4_local("udp", "198.18.50.2", 5000))
        frame = udp_frame(self.drx.interface.mac, self.dtx.interface.mac, "198.18.50.1",
                          "198.18.50.2", 4000, 5000, bytes(64 - 42))
        assert len(frame) == 64
        rows = self.tmr.buf.reshape(NBUF, PKT_BUF_SIZE)
        rows[:, :64] = np.frombuffer(frame, np.uint8)
        self.taddr = self.tmr.dma_addrs()
        self.raddr = self.rmr.dma_addrs()
        n = self.rvi.receive_space()
        self.rvi.receive_post_batch(self.raddr[:n], np.arange(n, dtype=np.uint32))

    def close(self) -> None:
        self.dtx.close()
        self.drx.close()


def run_batch(rig: Rig, batch: int, seconds: float) -> tuple[int, float]:
    tvi, rvi = rig.tvi, rig.rvi
    lens = np.full(batch, 64, dtype=np.uint32)
    ids = np.arange(batch, dtype=np.uint32)
    taddr = rig.taddr[:batch]
    raddr = rig.raddr
    got = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        for _ in range(16):
            tvi.transmit_batch(taddr, lens, ids)
            b = rvi.poll()
            rq = b.rq_id
            got += rq.shape[0]
            rvi.receive_post_batch(raddr[rq], rq)
            tvi.transmit_completed(tvi.poll())
    return got, time.perf_counter() - t0


def run_per_packet(rig: Rig, push_every: int, seconds: float) -> tuple[int, float]:
    """``push_every`` = 0: one frame at a time, polled until it arrives (ping-pong)."""
    tvi, rvi = rig.tvi, rig.rvi
    tbase, rbase = rig.tmr.dma_base, rig.rmr.dma_base
    RX = EventType.RX
    got = 0
    k = 0
    burst = 32 if push_every else 1
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        for _ in range(32):
            for _ in range(burst):
                tvi.transmit_init(tbase + (k & 1023) * PKT_BUF_SIZE, 64, k & 1023)
                k += 1
                if push_every and k % push_every == 0:
                    tvi.transmit_push()
            tvi.transmit_push()
            for ev in rvi.eventq_poll(64):
                if ev.type == RX:
                    rvi.receive_init(rbase + ev.rq_id * PKT_BUF_SIZE, ev.rq_id)
                    got += 1
            rvi.receive_push()
            for ev in tvi.eventq_poll(64):
                tvi.transmit_unbundle(ev)
    return got, time.perf_counter() - t0


def measure(name: str, fn: Callable[[Rig], tuple[int, float]], runs: int) -> dict[str, object]:
    rates = []
    for r in range(runs):
        rig = Rig(f"{name[:3]}{r}{time.perf_counter_ns() % 100000}")
        try:
            fn(rig)  # warm-up
            n, dt = fn(rig)
            assert rig.rvi.stats()["drops"] == 0
        finally:
            rig.close()
        rates.append(n / dt)
    mpps = statistics.median(rates) / 1e6
    return {"api": name, "mpps": round(mpps, 3), "ns_per_packet": round(1e3 / mpps, 1),
            "runs_mpps": [round(x / 1e6, 3) for x in rates]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    s = a.seconds
    rows = [
        measure("batch 4096", lambda r: run_batch(r, 4096, s), a.runs),
        measure("batch 1024", lambda r: run_batch(r, 1024, s), a.runs),
        measure("batch 256", lambda r: run_batch(r, 256, s), a.runs),
        measure("batch 64", lambda r: run_batch(r, 64, s), a.runs),
        measure("per-packet, push/32", lambda r: run_per_packet(r, 32, s), a.runs),
        measure("per-packet, push/1", lambda r: run_per_packet(r, 1, s), a.runs),
        measure("ping-pong (1 in flight)", lambda r: run_per_packet(r, 0, s), a.runs),
    ]
    machine = (f"{platform.machine()}, {platform.python_implementation()} "
               f"{platform.python_version()}, numpy {np.__version__}")
    if a.json:
        print(json.dumps({"machine": machine, "rows": rows}))
        return
    print(f"sim TX→RX, 64-byte frames ({machine}); median of {a.runs} runs of {s:.1f} s")
    print(f"{'API':<24} {'Mpps':>8} {'ns/packet':>10}")
    for r in rows:
        print(f"{r['api']:<24} {r['mpps']:>8.3f} {r['ns_per_packet']:>10.1f}")


if __name__ == "__main__":
    main()
