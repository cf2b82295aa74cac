"""``efvi info [IFNAME] [--json]``: interfaces, queues, drivers, XDP support, capabilities.

For each interface of the current network namespace (or just IFNAME): ifindex, MAC,
MTU, state, driver, RX/TX queues, addresses, the XDP program attached (if any, and
whether efvi owns it), the driver's XDP features (native mode, AF_XDP zero-copy) and
what each adapter would offer on it. Read-only: nothing is attached or changed (the
``xdp`` column is derived from the interface's facts, not by opening the adapter).
"""

from __future__ import annotations

import argparse
from typing import Any

from efvi.cli.common import EXIT_OK, Subparsers, add_json_flag, emit_json


def _print(d: dict[str, Any]) -> None:
    print(f"{d['name']} (ifindex {d['ifindex']}): {d['state']}, mac {d['mac']}, "
          f"mtu {d['mtu']}, driver {d['driver'] or d['kind'] or '?'}")
    print(f"  queues: {d['rx_queues']} rx / {d['tx_queues']} tx")
    if d["addresses"]:
        print(f"  addresses: {' '.join(d['addresses'])}")
    prog = d["xdp_program"]
    if prog:
        who = (f"efvi pid {prog['efvi_pid']}" + ("" if prog.get("owner_alive") else " (dead)")
               if "efvi_pid" in prog else "not efvi")
        print(f"  xdp program: {d['xdp_attached']} mode, {prog['name']!r} id {prog['id']} ({who})")
        held = prog.get("queue_holders")
        if held:
            print("  xdp queues held: " + ", ".join(
                f"rx {h['queue']} by pid {h['pid']}"
                + (f" ({h['comm']})" if h["alive"] else " (dead)") for h in held))
        elif held is not None:
            print("  xdp queues held: none")
        for dp in prog.get("displaced", []):
            print(f"  displaced by it (force=1): {dp['name']!r} id {dp['id']}, "
                  f"{dp['mode']} mode — put back when efvi exits (lost on SIGKILL)")
    else:
        print("  xdp program: none attached")
    feats = d["xdp_features"]
    shown = ", ".join(feats) if feats else ("none" if feats == [] else "unknown")
    print(f"  xdp features: {shown}")
    for name, caps in d["adapters"].items():
        if not caps.get("usable"):
            print(f"  {name}: unusable — {caps.get('why_not')}")
            continue
        flags = [k for k in ("steal", "sniff", "zero_copy", "hw_timestamps", "pio", "vi_sets")
                 if caps.get(k)]
        extra = f", modes {'/'.join(caps['modes'])}" if "modes" in caps else ""
        print(f"  {name}: {' '.join(flags)}; rx queues {caps.get('rx_queues')}{extra}")
        if caps.get("hw_timestamps_why_not"):
            print(f"    no hardware RX timestamps: {caps['hw_timestamps_why_not']}")


def run(args: argparse.Namespace) -> int:
    from efvi.apps.info import report

    rep = report(args.ifname, with_packet=not args.no_packet)
    if args.json:
        emit_json(rep)
    else:
        for d in rep["interfaces"]:
            _print(d)
        print("sim: always available (steal sniff pio vi_sets; virtual clock)")
        acc = rep["access"]
        state = "running" if acc["broker_running"] else "not running"
        print(f"access: xdp {acc['xdp']}, packet {acc['packet']} (efvid at "
              f"{acc['broker_socket']}: {state})")
        for ad, gone in acc["missing_capabilities"].items():
            if gone:
                print(f"  {ad} directly needs {', '.join(gone)} (this process lacks them)")
    return EXIT_OK


def register(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "info", help="interfaces, queues, drivers, XDP support and adapter capabilities",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ifname", nargs="?", help="one interface (default: all)")
    add_json_flag(p)
    p.add_argument("--no-packet", action="store_true",
                   help="do not open the packet adapter to report its capabilities")
    p.set_defaults(func=run)
