"""``efvi forward``: forward frames from one interface to another (ef_vi's efforward).

    efvi forward URL_A URL_B [--both] [--filter SPEC]... [-c COUNT] [--duration S]
                 [--idle S] [--rxq N] [--txq N] [--json]

Frames matching the filters on A (default ``unicast-all`` + ``multicast-all``, as
efforward) are transmitted unchanged on B; ``--both`` forwards B to A too. Both URLs
of one adapter kind share one memory region, so no frame is copied in user space
(``mode zero-copy``; on xdp one UMEM bound on both devices); otherwise each frame is
copied once (``mode copy``). Prints the per-second rate of each direction (efforward's
output) and a summary with drops by cause; exit status 1 if a side went down.
"""

from __future__ import annotations

import argparse
import sys
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
    from efvi.apps.forward import ForwardStats


def register(sub: Subparsers) -> None:
    p = sub.add_parser("forward", help="forward frames between two interfaces (efforward)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url_a", type=at.driver_url,
                   help="receive side: xdp:IF, packet:IF or sim:PORT?wire=..")
    p.add_argument("url_b", type=at.driver_url, help="transmit side (same forms)")
    p.add_argument("--both", action="store_true", help="forward B to A as well")
    p.add_argument("--filter", dest="filters", action="append", default=[], metavar="SPEC",
                   type=at.filter_spec,
                   help="filter spec in efsink grammar (repeatable; default unicast-all "
                        "and multicast-all)")
    p.add_argument("-c", dest="count", type=at.int_range(1),
                   help="exit after forwarding COUNT frames")
    p.add_argument("--duration", type=at.seconds, help="exit after S seconds")
    p.add_argument("--idle", type=at.seconds, help="exit after S seconds without a frame")
    p.add_argument("--rxq", type=at.int_range(64, 32768), default=4096,
                   help="RX ring size (default 4096: ~40 ms of buffering at 100 kpps)")
    p.add_argument("--txq", type=at.int_range(64, 32768), default=4096,
                   help="TX ring size (default 4096)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from efvi.apps._link import link_watch
    from efvi.apps.forward import Forwarder

    specs = args.filters or None
    with Forwarder(args.url_a, args.url_b, both=args.both, filters=specs, rxq=args.rxq,
                   txq=args.txq, pool=args.rxq + args.txq) as fwd:
        watches = [(fwd.a.url, link_watch(fwd.a.driver)), (fwd.b.url, link_watch(fwd.b.driver))]

        def down() -> str | None:
            for url, w in watches:
                if w is not None and not w():
                    return url
            return None

        copies = fwd.adapter_copies["A->B"]
        progress(f"# forward {args.url_a} -> {args.url_b}{' (both ways)' if args.both else ''}; "
                 f"mode {fwd.mode}; adapter copies per frame {copies}; filters: "
                 + ", ".join(str(f) for f in fwd.filters_a))
        progress("#" + "".join(f"  {d.name + ' pps':>12}" for d in fwd.dirs) + "  drops")
        last = [0] * len(fwd.dirs)

        def tick(st: ForwardStats) -> None:
            cols = ""
            for i, d in enumerate(st.directions):
                cols += f"  {d.forwarded - last[i]:>12}"
                last[i] = d.forwarded
            progress(f" {cols}  {st.drops:>5}")

        with stop_on_signals() as stop:
            st = fwd.run(count=args.count, duration_s=args.duration, on_second=tick, stop=stop,
                         link_up=down, idle_exit_s=args.idle)
    if st.stopped_by.startswith("link-down"):
        print(f"efvi forward: {st.stopped_by.split(': ', 1)[1]}: the interface went down; "
              "stopped", file=sys.stderr)
    if args.json:
        emit_json({"a": args.url_a, "b": args.url_b, "mode": st.mode,
                   "elapsed_s": round(st.elapsed_s, 3), "stopped_by": st.stopped_by,
                   "forwarded": st.forwarded, "user_copies": st.user_copies,
                   "directions": {d.name: d.as_dict() for d in st.directions},
                   "vi_drops": st.vi_drops, "drops": st.drops,
                   "shared_umem_sockets": st.shared_umem_sockets})
    else:
        for d in st.directions:
            rate = d.forwarded / st.elapsed_s if st.elapsed_s else 0.0
            print(f"{d.name}: forwarded {d.forwarded} frames ({d.bytes} bytes, {rate:.0f} pps "
                  f"over {st.elapsed_s:.1f} s); drops: oversize {d.oversize_drops}, tx ring "
                  f"full {d.tx_full_drops}, rx discard {d.rx_discard_drops}, tx error "
                  f"{d.tx_error_drops}")
        print(f"mode {st.mode}; user-space copies {st.user_copies}; stopped by {st.stopped_by}")
        for side, drops in st.vi_drops.items():
            nz = ", ".join(f"{k}={v}" for k, v in drops.items() if v)
            if nz:
                print(f"VI {side} drops: {nz}")
    return EXIT_RUNTIME if st.stopped_by.startswith("link-down") else EXIT_OK
