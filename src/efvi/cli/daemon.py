"""``efvi daemon`` (also installed as ``efvid``): the privileged resource broker.

    efvid [--socket PATH] [--policy FILE] [--socket-mode MODE] [-v]

Run as root (or as the systemd unit ``efvid.service``). Unprivileged processes then
open ``xdp:`` and ``packet:`` drivers through it; the policy file says who may use
what (default deny; see docs/security.md). Logs each grant and refusal on stderr.
Stops on SIGINT/SIGTERM, releasing everything its clients held.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from efvi.cli import argtypes as at
from efvi.cli.common import EXIT_OK, Subparsers, UsageError, stop_on_signals


def register(sub: Subparsers) -> None:
    p = sub.add_parser("daemon", help="efvid: the broker that gives unprivileged users VIs",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _flags(p)
    p.set_defaults(func=run)


def _flags(p: argparse.ArgumentParser) -> None:
    from efvi.apps.efvid import DEFAULT_POLICY
    from efvi.broker.client import socket_path

    p.add_argument("--socket", default=socket_path(),
                   help="Unix socket to listen on (default %(default)s; clients read "
                        "EFVI_BROKER_SOCKET)")
    p.add_argument("--policy", default=DEFAULT_POLICY,
                   help="policy file (TOML; default %(default)s; missing = deny all but root)")
    p.add_argument("--socket-mode", type=lambda s: int(s, 8), default=0o666,
                   help="permissions of the socket, octal (default 666: the policy decides)")
    p.add_argument("--duration", type=at.seconds, help="stop after S seconds (tests)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")


def run(args: argparse.Namespace) -> int:
    import time

    from efvi.apps.efvid import Broker
    from efvi.broker.policy import Policy

    if os.geteuid() != 0:
        raise UsageError("efvid must run as root: it does the privileged steps for its "
                         "clients (start it with sudo, or `systemctl start efvid`)")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="efvid: %(message)s", stream=sys.stderr)
    policy = Policy.load(args.policy)
    broker = Broker(policy, args.socket, args.socket_mode)
    broker.listen()
    end = None if args.duration is None else time.monotonic() + args.duration
    with stop_on_signals() as stop:
        broker.serve(lambda: stop.is_set() or (end is not None and time.monotonic() > end))
    return EXIT_OK


def main() -> int:
    """The ``efvid`` console script."""
    from efvi.cli.common import ArgumentParser, exit_status

    parser = ArgumentParser(prog="efvid", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _flags(parser)
    try:
        return run(parser.parse_args())
    except BaseException as exc:  # noqa: BLE001 - exit_status re-raises what is a bug
        return exit_status(exc, "efvid")


if __name__ == "__main__":
    sys.exit(main())
