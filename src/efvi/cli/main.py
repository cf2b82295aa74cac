"""``efvi`` console script: dispatches to one module per sub-command, loading only it.

:data:`COMMANDS` maps a command name to its module; each module exposes
``register(subparsers) -> None``, which adds the sub-parser and sets ``func``
(``Callable[[argparse.Namespace], int]``) as its default. ``efvi CMD ...`` imports
just ``COMMANDS[CMD]`` (start-up time: numpy and the core load only if that command
needs them); ``efvi``, ``efvi --help`` and unknown commands import every module to
list them. Exit statuses, one-line errors, broken pipes and signals are the shared
habits of :mod:`efvi.cli.common`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from efvi import __version__
from efvi.cli.common import EXIT_USAGE, ArgumentParser, exit_status

#: command name → module, in the order ``efvi --help`` lists them (add one line per tool)
COMMANDS: dict[str, str] = {
    "demo": "efvi.cli.demo",
    "sink": "efvi.cli.sink",
    "send": "efvi.cli.send",
    "replay": "efvi.cli.replay",
    "pcap": "efvi.cli.pcap",
    "info": "efvi.cli.info",
    "station": "efvi.cli.station",
    "forward": "efvi.cli.forward",
    "rss": "efvi.cli.rss",
    "latency": "efvi.cli.latency",
    "capture": "efvi.cli.capture",
    "daemon": "efvi.cli.daemon",
    "lab": "efvi.cli.lab",
}
#: the modules, for code that iterates them
COMMAND_MODULES: tuple[str, ...] = tuple(COMMANDS.values())


def build_parser(only: str | None = None) -> ArgumentParser:
    """The ``efvi`` parser with every command registered, or just ``only``."""
    parser = ArgumentParser(
        prog="efvi",
        description="ef_vi packet I/O on any Linux interface (sim, xdp, packet adapters)",
        epilog="exit status: 0 ok, 1 runtime error or problem found, 2 usage error, "
               "130 interrupted")
    parser.add_argument("--version", action="version", version=f"efvi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [only] if only is not None else list(COMMANDS)
    for name in names:
        modname = COMMANDS[name]
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named on the line, if it is a known one (options come first)."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = "efvi"
    if args_list[:1] == ["--version"]:  # without loading every command
        print(f"efvi {__version__}")
        return 0
    try:
        parser = build_parser(_chosen(args_list))
        args = parser.parse_args(args_list)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        prog = f"efvi {args.command}"
        rc: int = func(args)
        return rc
    except BaseException as exc:  # noqa: BLE001 - exit_status re-raises what is a bug
        return exit_status(exc, prog)


if __name__ == "__main__":
    sys.exit(main())
