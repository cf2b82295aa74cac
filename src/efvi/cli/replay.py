"""``efvi replay``: send capture files back onto an interface, after tcpreplay.

    efvi replay -i URL [-x MULT | -p PPS | -M MBPS | -t] [-l LOOP] [--loopdelay-ms MS]
                [-L LIMIT] [--duration S] [--preload] [--enet-dmac MAC] [--enet-smac MAC]
                [--fixcsum] [-q] [--json] FILE...

Original timing by default; ``-x`` scales it, ``-p``/``-M`` pace at a fixed rate,
``-t`` sends as fast as the TX ring drains. ``-l 0`` loops forever; ``-L N`` stops
after N packets. Files (pcap or pcapng, any timestamp resolution) play in order,
streamed unless ``--preload``. Progress once a second on stderr (``-q``: none);
tcpreplay's summary at the end, plus the lateness (actual - scheduled) in µs.
Exit status: 0 done (or interrupted), 1 a fault mid-run (corrupt file, interface
stalled: the summary is printed first), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

from efvi.apps.replay import ReplayError, ReplayStats, replay
from efvi.apps.replay_schedule import Pacing
from efvi.cli.common import emit_json, progress, stop_on_signals


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay capture files onto an interface (tcpreplay)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--intf1", dest="url", required=True,
                   help="driver URL: xdp:IFNAME[@Q], packet:IFNAME, sim[:PORT?...]")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("-x", "--multiplier", type=float, help="scale the recorded timing")
    rate.add_argument("-p", "--pps", type=float, help="packets per second")
    rate.add_argument("-M", "--mbps", type=float, help="megabits per second")
    rate.add_argument("-t", "--topspeed", action="store_true", help="as fast as possible")
    p.add_argument("-l", "--loop", type=int, default=1, help="passes over the files (0: forever)")
    p.add_argument("--loopdelay-ms", type=float, default=0.0, help="ms between passes")
    p.add_argument("-L", "--limit", type=int, default=0, help="stop after N packets")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds")
    p.add_argument("-K", "--preload", "--preload-pcap", dest="preload", action="store_true",
                   help="read the files into memory once before sending")
    p.add_argument("--enet-dmac", help="rewrite the destination MAC")
    p.add_argument("--enet-smac", help="rewrite the source MAC")
    p.add_argument("-C", "--fixcsum", action="store_true",
                   help="recompute IPv4/UDP/TCP checksums")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files, in order")
    p.set_defaults(func=run)


def _pacing(args: argparse.Namespace) -> Pacing:
    if args.multiplier is not None:
        return Pacing(multiplier=args.multiplier)
    if args.pps is not None:
        return Pacing(pps=args.pps)
    if args.mbps is not None:
        return Pacing(mbps=args.mbps)
    return Pacing(topspeed=args.topspeed)


def summary_lines(st: ReplayStats) -> list[str]:
    """tcpreplay's summary, plus the lateness line when the replay was timed."""
    bps, mbps, pps = st.rates()
    out = [(f"Actual: {st.successful} packets ({st.bytes_sent} bytes) sent in "
            f"{st.elapsed_s:.6f} seconds"),
           f"Rated: {bps:.1f} Bps, {mbps:.2f} Mbps, {pps:.2f} pps"]
    lat = st.lateness.summary_us()
    if lat:
        out.append(f"Lateness: min {lat['min']} us, p50 {lat['p50']} us, p99 {lat['p99']} us, "
                   f"max {lat['max']} us ({st.lateness.count} packets)")
    if st.loops_done > 1:
        out.append(f"Loops: {st.loops_done}")
    out += [f"Statistics for network device: {st.device}",
            f"\tSuccessful packets:        {st.successful}",
            f"\tFailed packets:            {st.failed}"]
    if st.failed:
        causes = ", ".join(f"{k}={v}" for k, v in st.failed_causes.items())
        out[-1] += f" ({causes})"
    out += [f"\tTruncated packets:         {st.truncated}",
            f"\tRetried packets (EAGAIN):  {st.retried}"]
    return out


def run(args: argparse.Namespace) -> int:
    for name in ("loop", "limit"):
        if getattr(args, name) < 0:
            print(f"efvi replay: -{name[0] if name == 'loop' else 'L'} must be >= 0",
                  file=sys.stderr)
            return 2
    if args.loopdelay_ms < 0 or args.duration < 0:
        print("efvi replay: --loopdelay-ms and --duration must be >= 0", file=sys.stderr)
        return 2
    try:
        pacing = _pacing(args)
    except ValueError as exc:
        print(f"efvi replay: {exc}", file=sys.stderr)
        return 2
    last = [0, 0]

    def tick(st: ReplayStats) -> None:
        if args.quiet:
            return
        dp, db = st.successful - last[0], st.bytes_sent - last[1]
        last[0], last[1] = st.successful, st.bytes_sent
        progress(f"replay: {st.successful} packets, {dp} pps, {db * 8 / 1e6:.2f} Mbps, "
                 f"failed {st.failed}", json_mode=True)

    rc = 0
    err: str | None = None
    with stop_on_signals() as stop:
        try:
            st = replay(args.url, args.files, pacing=pacing, loops=args.loop,
                        loopdelay_ns=int(args.loopdelay_ms * 1e6), limit=args.limit,
                        duration_ns=int(args.duration * 1e9), preload=args.preload,
                        dmac=args.enet_dmac, smac=args.enet_smac, fixcsum=args.fixcsum,
                        stop=stop, on_second=tick)
        except ReplayError as exc:
            st, err, rc = exc.stats, str(exc), 1
    if args.json:
        emit_json(st.as_dict())
    else:
        for line in summary_lines(st):
            print(line)
        sys.stdout.flush()
    if err is not None:
        print(f"efvi replay: {err}", file=sys.stderr)
    return rc
