"""``efvi pcap info FILE [--json]`` and ``efvi pcap convert IN OUT [--format F]
[--snaplen N]``: capinfos and editcap for the two capture formats, ns throughout
(library: :mod:`efvi.apps.pcap`)."""

from __future__ import annotations

import argparse
import sys

from efvi.cli import argtypes as at
from efvi.cli.common import EXIT_OK, EXIT_USAGE, Subparsers, add_json_flag, emit_json

__all__ = ["register"]


def _info(args: argparse.Namespace) -> int:
    from efvi.apps.pcap import summarize

    s = summarize(args.file, name=args.file)
    if args.json:
        emit_json(s.as_dict(), indent=2)
        return EXIT_OK
    rows: list[tuple[str, object]] = [
        ("File name", s.file),
        ("File format", s.format),
        ("Byte order", s.byte_order),
        ("Timestamp resolution", ", ".join(s.resolution) or "-"),
        ("Link types", ", ".join(s.link_types) or "-"),
        ("Interfaces", s.interfaces),
        ("Sections", s.sections),
        ("Snapshot length", s.snaplen if s.snaplen is not None else "(various)"),
        ("Packets", s.packets),
        ("Bytes captured", s.bytes),
        ("Bytes on the wire", s.wire_bytes),
        ("First packet (ns)", s.first_ns if s.first_ns is not None else "n/a"),
        ("Last packet (ns)", s.last_ns if s.last_ns is not None else "n/a"),
        ("Duration (ns)", s.duration_ns if s.duration_ns is not None else "n/a"),
        ("Received (ISB)", s.received if s.received is not None else "n/a"),
        ("Dropped (ISB)", s.drops if s.drops is not None else "n/a"),
    ]
    for k, v in rows:
        print(f"{k + ':':<22}{v}")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from efvi.apps.pcap import convert, output_format

    fmt = output_format(args.output, args.format)
    n = convert(args.input, args.output, fmt, args.snaplen)
    print(f"{n} packets written to {args.output} ({fmt})", file=sys.stderr)
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    """Add the ``pcap`` command (with ``info`` and ``convert``) to the dispatcher."""
    p = subparsers.add_parser("pcap", help="inspect and convert pcap/pcapng files",
                              description="Inspect and convert capture files "
                              "(pcap µs/ns, pcapng), with ns timestamps throughout.")
    sub = p.add_subparsers(dest="pcap_command", metavar="SUBCOMMAND")

    def usage(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return EXIT_USAGE

    p.set_defaults(func=usage)
    i = sub.add_parser("info", help="summarise a capture file (like capinfos)")
    i.add_argument("file", type=at.path_arg, help="pcap or pcapng file ('-' for stdin)")
    add_json_flag(i)
    i.set_defaults(func=_info)
    c = sub.add_parser("convert", help="rewrite a capture as pcap (ns) or pcapng")
    c.add_argument("input", type=at.path_arg, help="pcap or pcapng file ('-' for stdin)")
    c.add_argument("output", type=at.path_arg, help="output file ('-' for stdout)")
    c.add_argument("--format", choices=("pcap", "pcapng"),
                   help="output format (default: from OUT's extension, else pcapng)")
    c.add_argument("--snaplen", type=at.int_range(1, 0x7FFFFFFF), metavar="N",
                   help="cut frames to N bytes, 1..2147483647 (original lengths are kept)")
    c.set_defaults(func=_convert)
