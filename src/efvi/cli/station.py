"""``efvi station``: a user-space host on an address the kernel does not own.

    efvi station URL --ip ADDR[/LEN] [--ipv6 ADDR] [--mac MAC] [--udp-echo PORT]...
                     [--rate PPS] [--duration S] [--json]

Answers ARP (a gratuitous ARP goes out at start), ICMP echo, IPv6 neighbour
solicitations and ICMPv6 echo, and echoes UDP datagrams sent to the given ports.
Prints one line of per-protocol counts a second and a summary on exit (SIGINT/SIGTERM,
``--duration``, or the interface going down); exit status 1 if an address conflict was
seen or the link went down.
"""

from __future__ import annotations

import argparse
import sys

from efvi.apps._link import link_watch
from efvi.apps.station import StationRunner, StationStats
from efvi.cli.common import emit_json, progress, stop_on_signals
from efvi.wire.address import mac_str

_LINE = ("arp_replies_sent", "icmp_echo", "icmp6_echo", "ndp_adverts_sent", "udp_echo")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("station", help="answer ARP, ping, NDP and UDP echo for one address",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="driver URL: packet:IFNAME (or sim[:PORT?wire=..])")
    p.add_argument("--ip", help="IPv4 address to own, ADDR[/LEN]")
    p.add_argument("--ipv6", help="IPv6 address to own")
    p.add_argument("--mac", help="MAC to answer with (default: the interface's)")
    p.add_argument("--udp-echo", dest="udp_echo", type=int, action="append", default=[],
                   metavar="PORT", help="echo UDP datagrams sent to PORT (repeatable)")
    p.add_argument("--rate", type=int, default=1000,
                   help="reply at most PPS a second per protocol class (default 1000)")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ip is None and args.ipv6 is None:
        print("efvi station: give --ip ADDR[/LEN] and/or --ipv6 ADDR", file=sys.stderr)
        return 2
    with StationRunner(args.url, ip=args.ip, ipv6=args.ipv6, mac=args.mac,
                       udp_echo=tuple(args.udp_echo), rate_pps=args.rate) as runner:
        cfg = runner.cfg
        addrs = " ".join(a for a in (args.ip, args.ipv6) if a)
        progress(f"# station {addrs} at {mac_str(cfg.mac)} on {args.url}; filters: "
                 + ", ".join(str(f) for f in runner.filters), json_mode=args.json)
        progress("#   arp-replies  icmp-echo  icmp6-echo  nd-adverts  udp-echo  drops",
                 json_mode=args.json)

        def tick(st: StationStats) -> None:
            c = st.counters
            vals = "  ".join(f"{c[k]:>10}" for k in _LINE)
            progress(f"  {vals}  {st.drops:>5}", json_mode=args.json)

        with stop_on_signals() as stop:
            st = runner.run(duration_s=args.duration, on_second=tick, stop=stop,
                            link_up=link_watch(runner.driver))
    rc = 1 if st.conflicts or st.stopped_by == "link-down" else 0
    if st.stopped_by == "link-down":
        print(f"efvi station: {args.url}: the interface went down; stopped", file=sys.stderr)
    if args.json:
        emit_json({"url": args.url, "ip": args.ip, "ipv6": args.ipv6, "mac": mac_str(cfg.mac),
                   "elapsed_s": round(st.elapsed_s, 3), "stopped_by": st.stopped_by,
                   "counters": st.counters, "vi_drops": st.vi_drops, "drops": st.drops,
                   "conflicts": [{"address": a, "mac": m} for a, m in st.conflicts]})
    else:
        c = st.counters
        print(f"station ran {st.elapsed_s:.1f} s (stopped by {st.stopped_by}): "
              f"{c['rx_frames']} frames in, {c['tx_frames']} out")
        print("  " + ", ".join(f"{k}={v}" for k, v in c.items() if v))
        vi = ", ".join(f"{k}={v}" for k, v in st.vi_drops.items() if v)
        if vi:
            print(f"  VI drops: {vi}")
        for a, m in st.conflicts:
            print(f"ADDRESS CONFLICT: {a} is also claimed by {m}")
    return rc
