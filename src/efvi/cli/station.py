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
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    Subparsers,
    UsageError,
    add_json_flag,
    emit_json,
    progress,
    stop_on_signals,
)

if TYPE_CHECKING:
    from efvi.apps.station import StationStats

_LINE = ("arp_replies_sent", "icmp_echo", "icmp6_echo", "ndp_adverts_sent", "udp_echo")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("station", help="answer ARP, ping, NDP and UDP echo for one address",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", type=at.driver_url,
                   help="driver URL: xdp:IFNAME, packet:IFNAME (or sim[:PORT?wire=..])")
    p.add_argument("--ip", type=at.ipv4_interface, help="IPv4 address to own, ADDR[/LEN]")
    p.add_argument("--ipv6", type=at.ipv6, help="IPv6 address to own")
    p.add_argument("--mac", type=at.mac, help="MAC to answer with (default: the interface's)")
    p.add_argument("--udp-echo", dest="udp_echo", type=at.port, action="append", default=[],
                   metavar="PORT", help="echo UDP datagrams sent to PORT (repeatable)")
    p.add_argument("--rate", type=at.int_range(1), default=1000,
                   help="reply at most PPS a second per protocol class (default 1000)")
    p.add_argument("--duration", type=at.seconds, help="stop after S seconds")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from efvi.apps._link import link_watch
    from efvi.apps.station import StationConfig, StationRunner
    from efvi.errors import SetupError
    from efvi.wire.address import mac_str

    if args.ip is None and args.ipv6 is None:
        raise UsageError("a station needs an address", hint="give --ip ADDR[/LEN] and/or "
                         "--ipv6 ADDR")
    try:  # bad address text is a usage error; the interface's state is a runtime one
        StationConfig.parse("00:00:00:00:00:00", args.ip, args.ipv6, tuple(args.udp_echo))
    except SetupError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    with StationRunner(args.url, ip=args.ip, ipv6=args.ipv6, mac=args.mac,
                       udp_echo=tuple(args.udp_echo), rate_pps=args.rate) as runner:
        cfg = runner.cfg
        addrs = " ".join(a for a in (args.ip, args.ipv6) if a)
        progress(f"# station {addrs} at {mac_str(cfg.mac)} on {args.url}; filters: "
                 + ", ".join(str(f) for f in runner.filters))
        progress("#   arp-replies  icmp-echo  icmp6-echo  nd-adverts  udp-echo  drops")

        def tick(st: StationStats) -> None:
            c = st.counters
            vals = "  ".join(f"{c[k]:>10}" for k in _LINE)
            progress(f"  {vals}  {st.drops:>5}")

        with stop_on_signals() as stop:
            st = runner.run(duration_s=args.duration, on_second=tick, stop=stop,
                            link_up=link_watch(runner.driver))
    rc = EXIT_RUNTIME if st.conflicts or st.stopped_by == "link-down" else EXIT_OK
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
