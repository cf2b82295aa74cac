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
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, EXIT_RUNTIME, Subparsers, add_json_flag, emit_json,
                             progress, stop_on_signals)

if TYPE_CHECKING:
    from efvi.apps.replay import ReplayStats
    from efvi.apps.replay_schedule import Pacing


def _positive(what: str) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected {what} > 0") \
                from None
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected {what} > 0")
        return v

    check.__name__ = what
    return check


def _non_negative(text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected ms >= 0") \
            from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected ms >= 0")
    return v


def register(sub: Subparsers) -> None:
    p = sub.add_parser("replay", help="replay capture files onto an interface (tcpreplay)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--intf1", dest="url", required=True, type=at.driver_url,
                   help="driver URL: xdp:IFNAME[@Q], packet:IFNAME, sim[:PORT?...]")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("-x", "--multiplier", type=_positive("a multiplier"),
                      help="scale the recorded timing (2: twice as fast)")
    rate.add_argument("-p", "--pps", type=_positive("packets per second"),
                      help="packets per second")
    rate.add_argument("-M", "--mbps", type=_positive("Mbit/s"), help="megabits per second")
    rate.add_argument("-t", "--topspeed", action="store_true",
                      help="as fast as the TX ring drains")
    p.add_argument("-l", "--loop", type=at.int_range(0, meaning="0: forever"), default=1,
                   help="passes over the files (default 1; 0: forever)")
    p.add_argument("--loopdelay-ms", type=_non_negative, default=0.0,
                   help="ms between passes")
    p.add_argument("-L", "--limit", type=at.int_range(1), default=0,
                   help="stop after N packets")
    p.add_argument("--duration", type=at.seconds, default=0.0, help="stop after S seconds")
    p.add_argument("-K", "--preload", "--preload-pcap", dest="preload", action="store_true",
                   help="read the files into memory once before sending")
    p.add_argument("--enet-dmac", type=at.mac, help="rewrite the destination MAC")
    p.add_argument("--enet-smac", type=at.mac, help="rewrite the source MAC")
    p.add_argument("-C", "--fixcsum", action="store_true",
                   help="recompute IPv4 header and UDP/TCP checksums")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    add_json_flag(p)
    p.add_argument("files", nargs="+", metavar="FILE", type=at.path_arg,
                   help="pcap or pcapng files, played in order")
    p.set_defaults(func=run)


def _pacing(args: argparse.Namespace) -> Pacing:
    from efvi.apps.replay_schedule import Pacing

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
    from efvi.apps.replay import ReplayError, replay

    last = [0, 0]

    def tick(st: ReplayStats) -> None:
        if args.quiet:
            return
        dp, db = st.successful - last[0], st.bytes_sent - last[1]
        last[0], last[1] = st.successful, st.bytes_sent
        progress(f"replay: {st.successful} packets, {dp} pps, {db * 8 / 1e6:.2f} Mbps, "
                 f"failed {st.failed}")

    rc = EXIT_OK
    err: str | None = None
    with stop_on_signals() as stop:
        try:
            st = replay(args.url, args.files, pacing=_pacing(args), loops=args.loop,
                        loopdelay_ns=int(args.loopdelay_ms * 1e6), limit=args.limit,
                        duration_ns=int(args.duration * 1e9), preload=args.preload,
                        dmac=args.enet_dmac, smac=args.enet_smac, fixcsum=args.fixcsum,
                        stop=stop, on_second=tick)
        except ReplayError as exc:
            st, err, rc = exc.stats, str(exc), EXIT_RUNTIME
    if args.json:
        emit_json(st.as_dict())
    else:
        for line in summary_lines(st):
            print(line)
        sys.stdout.flush()
    if err is not None:
        print(f"efvi replay: {err}", file=sys.stderr)
    return rc
