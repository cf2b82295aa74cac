"""CPU per packet of the ef_vi-style per-packet receive loop on xdp, by frames per poll.

    sudo python3 benchmarks/rx_perpacket_cost.py [--batches 2,4,8,16,64] [--frames 4000]

Needs root and trafgen (``apt-get install netsniff-ng``). One process: a veth pair,
an ``xdp:`` VI with 32767 buffers posted; trafgen fills the RX ring, then the loop —
``eventq_poll(B)``, ``receive_init`` per RX event, one ``receive_push`` per poll (efsink's
pattern, as in ``rx_veth.py``'s per-packet row) — takes ``--frames`` frames at each
``B`` (the ring always holds at least ``B``, so every poll returns ``B`` events, or 2
for ``B`` < 2, ef_vi's minimum). Reports the loop's thread CPU time per packet, the
median of 3 rounds: the cost that decides whether a per-packet loop keeps up (small
batches when it keeps up, ``B`` = 64 while it catches up). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from efvi import (Driver, FilterSpec, MemoryRegion, ProtectionDomain,  # noqa: E402
                  VirtualInterface)
from efvi.testing import netns  # noqa: E402

import rx_veth  # noqa: E402

NB = 32768


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="2,4,8,16,64", help="events per poll to measure")
    ap.add_argument("--frames", type=int, default=4000, help="frames per batch size and round")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.batches.split(",")]
    why = netns.why_unavailable()
    if why:
        print(f"rx_perpacket_cost: {why}", file=sys.stderr)
        return 2
    if args.frames * len(sizes) > NB - 1:
        print(f"rx_perpacket_cost: --frames x batches must stay under {NB - 1}", file=sys.stderr)
        return 2
    res: dict[int, list[float]] = {k: [] for k in sizes}
    with netns.veth_pair(subnet=94) as pair:
        gen = rx_veth.Generator(pair)
        if not gen.trafgen:
            print("rx_perpacket_cost: trafgen missing (apt-get install netsniff-ng)",
                  file=sys.stderr)
            return 2
        with netns.enter(pair.a.netns):
            d = Driver.open(f"xdp:{pair.a.ifname}?mode=skb")
        try:
            pd = ProtectionDomain(d)
            mr = MemoryRegion(pd, NB * 2048)
            vi = VirtualInterface(pd, rxq=NB, evq=2 * NB)
            vi.filter_add(FilterSpec.ip4_local("udp", pair.a.ip, rx_veth.PORT))
            addrs = mr.dma_addrs()
            vi.receive_post_batch(addrs[:NB - 1], np.arange(NB - 1, dtype=np.uint32))
            base = int(addrs[0])
            for _ in range(3):
                gen.send(args.frames * len(sizes))
                time.sleep(0.3)
                for k in sizes:
                    n = 0
                    deadline = time.monotonic() + 20
                    t0 = time.thread_time()
                    while n < args.frames and time.monotonic() < deadline:
                        for e in vi.eventq_poll(k):
                            if e.type == 0:
                                n += 1
                                vi.receive_init(base + e.rq_id * 2048, e.rq_id)
                        vi.receive_push()
                    res[k].append((time.thread_time() - t0) / max(n, 1) * 1e6)
            drops = vi.stats()["drops"]
        finally:
            d.close()
            gen.close()
    print(f"per-packet loop on xdp (skb mode), thread CPU µs per packet, median of 3 rounds "
          f"of {args.frames} frames; drops {drops}")
    print("| events per poll | " + " | ".join(str(k) for k in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    print("| µs/packet | " + " | ".join(f"{statistics.median(res[k]):.2f}" for k in sizes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
