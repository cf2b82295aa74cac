"""``efvi sink``: receive and count, after ef_vi's ``efsink``.

    efvi sink [-n N] [-d] [-v] [-j] [-F FILL] [--duration S] [--latency-ms MS] [--json]
              URL FILTER...

FILTER uses efsink's grammar (``udp:HOST:PORT[,RHOST:RPORT]``, ``eth:[vid=N,]MAC``,
``unicast-all``, ``multicast-all``, ``sniff``, ...; add ``,sniff`` to copy instead of
steal). Prints ``pkt-rate bandwidth(Mbps) total-pkts`` once a second (stderr) and a
summary (stdout); ``-v``/``-d`` print one line (and a hexdump) per packet on stdout.
SIGINT/SIGTERM stop it with the summary.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, EXIT_RUNTIME, Subparsers, add_json_flag, emit_json, progress,
                             stop_on_signals)

if TYPE_CHECKING:
    from efvi.apps.sink import SinkStats


def register(sub: Subparsers) -> None:
    p = sub.add_parser("sink", help="receive frames matching filters and count them (efsink)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", type=at.driver_url,
                   help="driver URL: sim[:PORT?wire=@NAME], xdp:IFNAME[@Q], packet:IFNAME")
    p.add_argument("filters", nargs="+", metavar="FILTER", type=at.filter_spec,
                   help="filter spec(s), efsink grammar")
    p.add_argument("-n", dest="count", type=at.int_range(1), help="exit after N packets")
    p.add_argument("--duration", type=at.seconds, help="exit after S seconds (> 0)")
    p.add_argument("-d", dest="hexdump", action="store_true", help="hexdump each packet")
    p.add_argument("-v", dest="verbose", action="store_true",
                   help="one line per packet: ts_ns len flags")
    p.add_argument("-j", dest="join", action="store_true",
                   help="join multicast groups of the filters through the kernel (IGMP)")
    p.add_argument("-F", dest="fill", type=at.int_range(1),
                   help="maximum RX ring fill level (>= 1)")
    p.add_argument("--latency-ms", type=at.number(0.0, 1000.0), default=50.0, metavar="MS",
                   help="let frames wait up to MS ms before they are counted, so a steady "
                        "stream wakes the sink a few dozen times a second (default 50; "
                        "0: handle frames as they arrive)")
    add_json_flag(p)
    p.set_defaults(func=run)


def _hexdump(frame: bytes) -> str:
    out = []
    for off in range(0, len(frame), 16):
        chunk = frame[off:off + 16]
        out.append(f"  {off:04x}  {chunk.hex(' ')}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from efvi.apps.sink import Sink

    specs = args.filters
    hook = None
    if args.verbose or args.hexdump:
        def hook(ts: int, frame: bytes, flags: int) -> None:
            line = f"{ts} len={len(frame)} flags={flags:#x}"
            if args.hexdump:
                line += "\n" + _hexdump(frame)
            if args.json:  # stdout holds the one JSON object
                progress(line)
            else:
                print(line)

    last = [0, 0]

    def tick(st: SinkStats) -> None:
        pkts, byts = st.rx_packets - last[0], st.rx_bytes - last[1]
        last[:] = [st.rx_packets, st.rx_bytes]
        progress(f"{pkts:>10} {byts * 8 / 1e6:>14.3f} {st.rx_packets:>12}")

    with Sink(args.url, specs, fill=args.fill, join=args.join,
              latency_ms=args.latency_ms) as sink:
        progress("#  pkt-rate  bandwidth(Mbps)  total-pkts")
        with stop_on_signals() as stop:
            st = sink.run(count=args.count, duration_s=args.duration, on_packet=hook,
                          on_second=tick, stop=stop)
    pps = st.pps
    if args.json:
        emit_json({"url": args.url, "filters": [str(s) for s in specs],
                   "rx_packets": st.rx_packets, "rx_bytes": st.rx_bytes,
                   "rx_discards": st.rx_discards, "rx_after_limit": st.rx_after_limit,
                   "drops": st.drops,
                   "drop_causes": st.drop_causes, "elapsed_s": round(st.elapsed_s, 6),
                   "pps": round(pps, 1), "clock": st.clock, "error": st.error or None})
    else:
        print(f"received {st.rx_packets} packets ({st.rx_bytes} bytes) in {st.elapsed_s:.3f} s "
              f"({pps:.0f} pps from first to last); discards {st.rx_discards}; drops {st.drops}")
        if st.rx_after_limit:
            print(f"{st.rx_after_limit} more packets arrived in the last batch after -n "
                  f"{args.count}: harvested, not counted")
        causes = ", ".join(f"{k}={v}" for k, v in st.drop_causes.items() if v)
        if causes:
            print(f"drops by cause: {causes}")
    if st.error:
        sys.stdout.flush()
        print(f"efvi sink: {st.error}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
