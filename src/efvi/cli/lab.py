"""``efvi lab up|down|status``: two namespaces joined by a veth pair, to try the tools on.

    efvi lab up [--name NAME] [--subnet S] [--json]
    efvi lab down [--name NAME] [--json]
    efvi lab status [--name NAME] [--json]

``up`` makes namespaces NAME-a and NAME-b (NAME: ``efvi``, or a name starting with
``efvi``) joined by veth-a <-> veth-b, both ends created inside the namespaces, with
198.18.S.1/24 and 198.18.S.2/24 (S from --subnet, default 0; 198.18.0.0/15 only),
and prints ready-to-run ``ip netns exec`` commands for sink, send and capture on xdp
and packet. Running it again changes nothing; ``down`` removes everything it made.
``status`` exits 0 when the lab is up, 1 when it is not. Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from efvi.cli.common import EXIT_OK, EXIT_RUNTIME, Subparsers, add_json_flag, emit_json


def _name(text: str) -> str:
    from efvi.apps.lab import check_name
    from efvi.errors import SetupError

    try:
        return check_name(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} — {exc.hint}") from None


def _subnet(text: str) -> int:
    from efvi.apps.lab import MAX_SUBNET

    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer; expected 0..{MAX_SUBNET} (198.18.S.0/24)") from None
    if not 0 <= v <= MAX_SUBNET:
        raise argparse.ArgumentTypeError(
            f"{v} is out of range; expected 0..{MAX_SUBNET} (198.18.0.0/15 only)")
    return v


def efvi_invocation() -> str:
    """How the printed commands should run efvi: ``efvi`` when that is on PATH (and is
    this one, if we were started through it), else the path we were started as."""
    argv0 = sys.argv[0] if sys.argv else ""
    on_path = shutil.which("efvi")
    if os.path.basename(argv0) == "efvi":
        if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
            return "efvi"
        return os.path.abspath(argv0)
    return "efvi" if on_path else f"{sys.executable} -m efvi.cli.main"


def register(sub: Subparsers) -> None:
    p = sub.add_parser("lab", help="two namespaces joined by a veth pair to try the tools on",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("up", "make the lab (idempotent) and print commands to try"),
                         ("down", "remove the lab's namespaces and veth pair"),
                         ("status", "is the lab up? (exit 0 yes, 1 no)")):
        a = acts.add_parser(action, help=text, description=text)
        a.add_argument("--name", type=_name, default="efvi",
                       help="lab name, 'efvi' or starting with it: namespaces NAME-a, NAME-b "
                            "(default efvi)")
        if action == "up":
            a.add_argument("--subnet", type=_subnet, default=0,
                           help="addresses 198.18.S.1 and .2 (0-511; 256-511: 198.19.x; "
                                "default 0)")
        add_json_flag(a)
        a.set_defaults(func=run)


def _describe(lab_: object, efvi: str) -> None:
    from efvi.apps.lab import Lab

    assert isinstance(lab_, Lab)
    for end in (lab_.a, lab_.b):
        print(f"  netns {end.netns}: {end.ifname} {end.ip}/{end.prefix_len} {end.mac}")
    print("try (start each receiver first, then its sender in another terminal):")
    for what, cmd in lab_.commands(efvi):
        print(f"  # {what}")
        print(f"  {cmd}")


def run(args: argparse.Namespace) -> int:
    from efvi.apps import lab

    efvi = efvi_invocation()
    if args.action == "up":
        made, created = lab.up(args.name, args.subnet)
        if args.json:
            emit_json({"command": "lab", "action": "up", "created": created,
                       **made.as_dict(efvi)})
            return EXIT_OK
        print(f"lab {made.name} {'up' if created else 'already up'}: {made.a.netns} "
              f"<-> {made.b.netns} over {made.a.ifname} <-> {made.b.ifname}, {made.network}")
        _describe(made, efvi)
        return EXIT_OK
    if args.action == "down":
        gone = lab.down(args.name)
        if args.json:
            emit_json({"command": "lab", "action": "down", "name": args.name, "deleted": gone})
        elif gone:
            print(f"lab {args.name} down: deleted {', '.join(gone)}")
        else:
            print(f"lab {args.name} was not up")
        return EXIT_OK
    st = lab.status(args.name)
    if args.json:
        emit_json({"command": "lab", "action": "status", "state": st.state,
                   "detail": st.detail, **st.lab.as_dict(efvi)})
    else:
        print(f"lab {args.name}: {st.state}" + (f" ({st.detail})" if st.detail else ""))
        if st.state == "up":
            _describe(st.lab, efvi)
        elif st.state != "down":
            print(f"  efvi lab down{'' if args.name == 'efvi' else ' --name ' + args.name}"
                  " removes it; efvi lab up makes it again")
    return EXIT_OK if st.state == "up" else EXIT_RUNTIME
