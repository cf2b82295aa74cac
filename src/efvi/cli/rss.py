"""``efvi rss``: spread receive over a VI set and show it is by flow (ef_vi's ``efrss``).

    efvi rss URL -n N [--workers] [--filter SPEC]... [-c COUNT] [--duration S] [--idle S]
             [--json]

A VI set of N VIs (on xdp one per RX queue, on packet a fanout group, on sim the flow
hash) receives what the filters match (default ``unicast-all`` + ``multicast-all``, as
efrss). Prints each VI's packet rate once a second (stderr) and a summary: packets and
flows per VI, and ``split flows`` — flows seen on more than one VI, which a by-flow
spread keeps at 0. Exit status 1 if a flow was split.

--workers: one process per VI (xdp: per RX queue; packet: per fanout member), each
with its own packet memory; this process sets up the set and its filters, joins the
workers' counts each second and stops them all on SIGINT/SIGTERM or when one fails
(exit 1 naming the worker and its message). Not on sim.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    Subparsers,
    add_json_flag,
    emit_json,
    progress,
    stop_on_signals,
)

if TYPE_CHECKING:
    from efvi.apps.rss import RssStats


def register(sub: Subparsers) -> None:
    p = sub.add_parser("rss", help="receive over a VI set, per-VI counts, flow stickiness (efrss)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", type=at.driver_url, help="xdp:IFNAME, packet:IFNAME or sim[:PORT]")
    p.add_argument("-n", dest="n", type=at.int_range(1, 64), required=True,
                   help="VIs in the set (on xdp at most the RX queue count)")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="SPEC",
                   type=at.filter_spec, help="set filter (repeatable; default unicast-all "
                   "and multicast-all)")
    p.add_argument("--workers", action="store_true",
                   help="one process per VI (efrss's threads as processes; xdp and packet)")
    p.add_argument("-c", dest="count", type=at.int_range(1), help="exit after COUNT packets")
    p.add_argument("--duration", type=at.seconds, help="exit after S seconds")
    p.add_argument("--idle", type=at.seconds, help="exit after S seconds without a frame")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from efvi.apps.rss import RssRunner
    from efvi.apps.rss_workers import RssWorkers

    r: RssRunner | RssWorkers
    r = (RssWorkers if args.workers else RssRunner)(args.url, args.n, args.filters or None)
    with r:
        pids = ""
        if isinstance(r, RssWorkers):
            r.start()
            pids = " in workers " + ", ".join(str(p) for p in r.pids)
        progress(f"# rss {args.url}: {args.n} VIs{pids}; filters: "
                 + ", ".join(str(f) for f in r.filters))
        progress("#" + "".join(f"  {'vi' + str(i) + ' pps':>10}" for i in range(args.n))
                 + "  flows  split")
        last = [0] * args.n

        def tick(st: RssStats) -> None:
            cols = "".join(f"  {c - last[i]:>10}" for i, c in enumerate(st.per_vi))
            last[:] = st.per_vi
            progress(f" {cols}  {st.flows:>5}  {st.split_flows:>5}")

        with stop_on_signals() as stop:
            st = r.run(duration_s=args.duration, count=args.count, on_second=tick, stop=stop,
                       idle_exit_s=args.idle)
    pid_of = r.pids if isinstance(r, RssWorkers) else []
    if args.json:
        extra = {"workers": pid_of} if pid_of else {}
        emit_json({"url": args.url, "n": args.n, **st.as_dict(), **extra})
    else:
        for i, (p, f) in enumerate(zip(st.per_vi, st.flows_per_vi)):
            who = f" (worker pid {pid_of[i]})" if pid_of else ""
            print(f"vi{i}: {p} packets, {f} flows{who}")
        print(f"{st.packets} packets, {st.flows} flows, {st.split_flows} split over VIs, "
              f"{st.non_ip} non-IP, {st.discards} discards in {st.elapsed_s:.1f} s "
              f"(stopped by {st.stopped_by})")
    return EXIT_RUNTIME if st.split_flows else EXIT_OK
