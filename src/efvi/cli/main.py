"""``efvi`` console script: dispatches to one module per sub-command.

Each command module exposes ``register(subparsers) -> None``; ``register`` adds a
sub-parser and sets ``func`` (``Callable[[argparse.Namespace], int]``) as its default.
Errors of the :class:`efvi.errors.EfviError` family are printed as one line naming
the problem and the way out, with exit status 2 (1 is reserved for "ran, found a
problem", as with tcpdump/cmp).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from efvi.errors import EfviError

#: Sub-command modules, in the order ``efvi --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "efvi.cli.demo",
    "efvi.cli.sink",
    "efvi.cli.send",
    "efvi.cli.replay",
    "efvi.cli.pcap_cmd",
    "efvi.cli.info",
    "efvi.cli.station",
    "efvi.cli.forward",
    "efvi.cli.latency",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="efvi",
        description="ef_vi packet I/O on any Linux interface (sim, xdp, packet adapters)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        rc: int = args.func(args)
    except EfviError as exc:
        print(f"efvi {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
