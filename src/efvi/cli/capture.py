"""``efvi capture``: tcpdump-style capture on a VI (any adapter).

    efvi capture -i URL [-w FILE|-] [-c N] [-s SNAPLEN] [-G SECONDS] [-C MBYTES]
                 [-W FILECOUNT] [--duration S] [-Q in|out|inout] [--format pcapng|pcap]
                 [-p] [-q] [--json] [--force] [--filter SPEC]... [EXPRESSION...]

The trailing words are a tcpdump filter expression, compiled by libpcap; on ``xdp``
it runs inside the XDP program and the capture *steals* what it matches (the kernel
keeps the rest); on ``packet`` the kernel runs it on the socket and the capture gets
copies. ``--filter`` adds ef_vi filter specs (efsink's grammar). ``-i IFNAME`` without
an adapter means ``packet:IFNAME``, as tcpdump. Without ``-w`` one line per packet is
printed, like ``tcpdump -n``; ``-w -`` writes the capture to stdout (pipe it into
``tshark -r -`` or ``tcpdump -r -``). Progress (once a second, with ``-w``) and the
summary (tcpdump's three lines, then drops by cause) go to stderr. Exit status: 0 done
(also on SIGINT/SIGTERM), 1 runtime error (interface, privileges, output, disk full),
2 usage error (options, a filter expression libpcap rejects), 141 stdout's reader left.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, EXIT_RUNTIME, Subparsers, UsageError, add_json_flag,
                             emit_json, progress, stop_on_signals)

if TYPE_CHECKING:
    from efvi.apps.capture import Capture, CaptureBatch, CaptureStats

SNAPLEN_MAX = 262144  # tcpdump's default and maximum snapshot length


def register(sub: Subparsers) -> None:
    p = sub.add_parser("capture", help="capture frames to pcapng/pcap or the terminal "
                       "(tcpdump-style; expressions run in the XDP program)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", dest="url", required=True, metavar="URL",
                   help="xdp:IFNAME[@Q], packet:IFNAME, sim:PORT?wire=... (IFNAME = packet:)")
    p.add_argument("-w", dest="write", metavar="FILE", help="write to FILE (- = stdout)")
    p.add_argument("-c", dest="count", type=at.int_range(1), help="stop after N packets")
    p.add_argument("-s", dest="snaplen", type=at.int_range(0, SNAPLEN_MAX),
                   default=SNAPLEN_MAX, help="bytes kept per frame (0 = 262144)")
    p.add_argument("-G", dest="rotate_seconds", type=at.int_range(1), metavar="SECONDS",
                   help="start a new file every SECONDS (strftime in the -w name)")
    p.add_argument("-C", dest="rotate_mbytes", type=at.int_range(1), metavar="MBYTES",
                   help="start a new file when this one passes MBYTES x 1,000,000 bytes")
    p.add_argument("-W", dest="file_count", type=at.int_range(1), metavar="FILECOUNT",
                   help="with -C: a ring of FILECOUNT files; with -G: stop after FILECOUNT")
    p.add_argument("--duration", type=at.seconds, help="stop after S seconds")
    p.add_argument("-Q", dest="direction", choices=("in", "out", "inout"), default="in",
                   help="directions to capture (out/inout: packet adapter only)")
    p.add_argument("--format", choices=("pcapng", "pcap"), default="pcapng",
                   help="file format (default pcapng)")
    p.add_argument("-p", dest="no_promisc", action="store_true",
                   help="do not put the interface in promiscuous mode")
    p.add_argument("-q", dest="quiet", action="store_true", help="no progress line")
    add_json_flag(p)
    p.add_argument("--force", action="store_true",
                   help="let -w overwrite an existing file that is not a capture")
    p.add_argument("--filter", dest="filters", action="append", default=[],
                   type=at.filter_spec, metavar="SPEC", help="ef_vi filter spec (repeatable)")
    p.add_argument("--workers", type=at.int_range(1, 64), default=1, metavar="N",
                   help="N VIs in a VI set: one per RX queue on xdp (a fanout on packet); "
                        "one file each (FILE.0 ...) unless --merge")
    p.add_argument("--merge", action="store_true",
                   help="with --workers: one file, each polling round in timestamp order")
    p.add_argument("expression", nargs="*", help="tcpdump filter expression")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from efvi.apps.capture import Capture
    from efvi.apps.capture_files import check_output_path
    from efvi.bpf.libpcap import ExpressionError

    url = args.url if ":" in args.url else f"packet:{args.url}"
    expression = " ".join(args.expression) or None
    snaplen = args.snaplen or SNAPLEN_MAX
    text: TextIO = sys.stderr if (args.write is not None or args.json) else sys.stdout
    if args.file_count and not (args.rotate_seconds or args.rotate_mbytes):
        raise UsageError("-W needs -C or -G", hint="add -C MBYTES or -G SECONDS")
    if args.write == "-" and (args.rotate_seconds or args.rotate_mbytes):
        raise UsageError("-G/-C need a file name, not -w -")
    split = args.workers > 1 and not args.merge and args.write is not None
    if split and args.write == "-":
        raise UsageError("--workers N with -w - needs --merge (one stream)")
    names = [f"{args.write}.{i}" for i in range(args.workers)] if split else \
        [args.write] if args.write is not None else []
    for name in names:
        if name != "-":
            check_output_path(name, force=args.force)
    try:
        cap = Capture(url, filters=args.filters, expression=expression, snaplen=snaplen,
                      direction=args.direction, promiscuous=not args.no_promisc,
                      workers=args.workers, merge=args.merge)
    except ExpressionError as exc:  # libpcap's message; the command line is wrong
        raise UsageError(exc.message, hint=exc.hint) from None
    try:
        return _capture(args, cap, url, expression, snaplen, text, names)
    finally:
        cap.close()


def _capture(args: argparse.Namespace, cap: Capture, url: str, expression: str | None,
             snaplen: int, text: TextIO, names: list[str]) -> int:
    from efvi.apps.capture_files import CaptureWriter
    from efvi.wire.summary import format_packet

    writers = [CaptureWriter(name, fmt=args.format, snaplen=snaplen,
                             interface=cap.interface, description=url,
                             expression=expression, clock=lambda: cap.clock,
                             rotate_seconds=args.rotate_seconds,
                             rotate_mbytes=args.rotate_mbytes,
                             file_count=args.file_count, force=args.force) for name in names]
    if not args.json:
        progress(f"efvi capture: listening on {url} (timestamps: {cap.clock}), link-type "
                 f"EN10MB (Ethernet), snapshot length {snaplen} bytes")
    last = [0, 0, 0.0]

    def tick(st: CaptureStats) -> None:
        if args.quiet or args.write is None:
            return
        dp, db = st.captured - int(last[0]), st.bytes - int(last[1])
        dt = max(st.elapsed_s - last[2], 1e-9)
        last[:] = [st.captured, st.bytes, st.elapsed_s]
        causes = " ".join(f"{k}={v}" for k, v in st.drop_causes.items() if v) or "none"
        progress(f"{st.captured} packets, {dp / dt:.0f} pps, {db * 8 / dt / 1e6:.1f} Mbps, "
                 f"drops: {causes}")

    def show(batch: CaptureBatch) -> None:
        lines = [format_packet(int(batch.ts_ns[i]), batch.frame(i), int(batch.wire_len[i]),
                               outgoing=bool(batch.outgoing[i])) for i in range(len(batch))]
        text.write("\n".join(lines) + "\n")
        text.flush()

    with stop_on_signals() as stop:
        def should_stop() -> bool:
            return stop.is_set() or any(w.done for w in writers)
        st = cap.run(writers, count=args.count, duration_s=args.duration, stop=should_stop,
                     on_second=tick, on_batch=show if args.write is None else None)
    _summary(args, st)
    return EXIT_RUNTIME if st.error else EXIT_OK


def _summary(args: argparse.Namespace, st: CaptureStats) -> None:
    if args.json:
        obj = {"command": "capture", **st.as_dict()}
        if args.write == "-":  # stdout holds the capture
            print(json.dumps(obj), file=sys.stderr, flush=True)
        else:
            emit_json(obj)
        if st.error:
            print(f"efvi capture: {st.error}", file=sys.stderr)
        return
    out = sys.stderr
    print(f"{st.captured} packets captured", file=out)
    print(f"{st.received_by_filter} packets received by filter", file=out)
    print(f"{st.drops} packets dropped by kernel", file=out)
    causes = ", ".join(f"{k}={v}" for k, v in st.drop_causes.items() if v)
    print(f"drops by cause: {causes or 'none'}; truncated {st.truncated}; "
          f"timestamps {st.clock}", file=out)
    if st.error:
        print(f"efvi capture: {st.error}", file=out)
    out.flush()

