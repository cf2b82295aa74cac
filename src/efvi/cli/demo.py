"""``efvi demo``: a market-data multicast feed on the sim adapter (:mod:`efvi.apps.demo`)."""

from __future__ import annotations

import argparse
import sys

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, EXIT_RUNTIME, Subparsers, add_json_flag, emit_json,
                             progress)


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo", help="run a UDP multicast market-data feed through three VIs on sim",
        description="An exchange VI publishes sequenced UDP multicast messages; a trader VI "
                    "with an ip4_local filter receives them; a capture VI sniffs the port. "
                    "Prints messages, rate, drops and one-way latency on the sim clock.")
    p.add_argument("-n", "--messages", type=at.int_range(1), default=100_000,
                   help="messages to publish (default 100000)")
    p.add_argument("-b", "--batch", type=at.int_range(1, 2048), default=1024,
                   help="TX batch size 1..2048 (default 1024)")
    p.add_argument("-g", "--group", type=at.multicast_ipv4, default="239.100.0.1",
                   help="IPv4 multicast group")
    p.add_argument("-p", "--port", type=at.port, default=30001, help="UDP port")
    p.add_argument("-w", "--write", metavar="FILE", type=at.path_arg,
                   help="write what the sniffing VI saw as pcapng (ns timestamps)")
    p.add_argument("--from", dest="from_file", metavar="FILE", type=at.path_arg,
                   help="replay a recorded feed (e.g. an earlier -w FILE) through the trader "
                        "on a capture-fed sim port instead of running the exchange")
    p.add_argument("--speed", type=at.int_range(0, 1), default=1,
                   help="with --from: 1 recorded RX timestamps (default), 0 as fast as polled")
    add_json_flag(p)
    p.set_defaults(func=run)


def run_from(args: argparse.Namespace) -> int:
    from efvi.apps.demo import FeedResult
    from efvi.apps.demo import run_from as replay_feed

    def tick(r: FeedResult) -> None:
        progress(f"  ... received {r.received}  gaps {r.gaps}")

    res = replay_feed(args.from_file, group=args.group, port=args.port, speed=args.speed,
                      progress=tick)
    lat = res.latency_summary()
    if args.json:
        emit_json({
            "adapter": "sim", "from": args.from_file, "speed": args.speed, "clock": res.clock,
            "rx_packets": res.received, "first_seq": res.first_seq, "gaps": res.gaps,
            "out_of_order": res.out_of_order, "drops": res.drops,
            "drop_causes": res.drop_causes, "feed": res.feed, "feed_error": res.feed_error,
            "pps": round(res.pps, 1), "wall_s": round(res.wall_s, 6), "latency_ns": lat,
        })
    else:
        print(f"efvi demo --from {args.from_file}: capture-fed sim port, feed "
              f"{args.group}:{args.port}, speed={args.speed}")
        print(f"  capture      played    {res.feed.get('feed_packets', 0):>10} frames    "
              f"(end of file: {'yes' if res.feed.get('feed_eof') else 'no'})")
        print(f"  trader VI    received  {res.received:>10} messages  (ip4_local filter), "
              f"first seq {res.first_seq}, gaps {res.gaps}, out of order {res.out_of_order}")
        print(f"  drops        {res.drops}")
        print(f"  rate         {res.pps / 1e6:.3f} M messages/s ({res.wall_s:.3f} s wall clock)")
        if lat:
            print(f"  one-way latency as recorded (ns): min {lat['min']}  p50 {lat['p50']}  "
                  f"p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}")
    if res.feed_error:
        print(f"efvi demo: {res.feed_error}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK if res.drops == 0 and res.received else EXIT_RUNTIME


def run(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        return run_from(args)
    from efvi.apps.demo import FeedResult, run_feed
    from efvi.pcap import PcapNgWriter

    def tick(r: FeedResult) -> None:
        progress(f"  ... sent {r.sent}  received {r.received}  sniffed {r.sniffed}  "
                 f"drops {r.drops}")

    writer = PcapNgWriter(args.write) if args.write else None
    try:
        res = run_feed(args.messages, batch=args.batch, group=args.group, port=args.port,
                       capture=writer, progress=tick)
    finally:
        if writer is not None:
            writer.close()
    lat = res.latency_summary()
    if args.json:
        emit_json({
            "adapter": "sim", "clock": res.clock, "messages": args.messages,
            "tx_packets": res.sent, "rx_packets": res.received, "sniffed": res.sniffed,
            "drops": res.drops, "drop_causes": res.drop_causes, "gaps": res.gaps,
            "out_of_order": res.out_of_order, "pps": round(res.pps, 1),
            "wall_s": round(res.wall_s, 6), "latency_ns": lat,
            "pcapng": args.write,
        })
    else:
        print(f"efvi demo: sim adapter, feed {args.group}:{args.port}, {args.messages} messages,"
              f" TX batch {args.batch}")
        print(f"  exchange VI  sent      {res.sent:>10} messages")
        print(f"  trader VI    received  {res.received:>10} messages  (ip4_local filter), "
              f"gaps {res.gaps}, out of order {res.out_of_order}")
        print(f"  capture VI   sniffed   {res.sniffed:>10} frames    (port sniff)")
        print(f"  drops        {res.drops}")
        print(f"  rate         {res.pps / 1e6:.3f} M messages/s ({res.wall_s:.3f} s wall clock)")
        if lat:
            print(f"  one-way latency on the {res.clock} clock (ns): min {lat['min']}  "
                  f"p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}")
        if args.write:
            print(f"  capture written to {args.write} (pcapng, ns)")
    return EXIT_OK if res.drops == 0 and res.received == res.sent else EXIT_RUNTIME
