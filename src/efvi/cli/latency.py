"""``efvi latency``: UDP ping-pong round trips, after ef_vi's ``eflatency``.

    efvi latency pong URL [-n ITERS] [-s SIZES] [--warm N] [--busy|--block] [--pio] [--kernel]
    efvi latency ping URL --peer IP [same options] [--json] [--plot FILE.png]

Start ``pong`` first, then ``ping`` with the same -n/-s/--warm. Prints eflatency's table
(``paylen mean min 50% 95% 99% max``, µs per round trip) for each payload size;
``--kernel`` repeats the exchange over plain kernel UDP sockets (port + 1) and prints the
ratio of the p50s. On ``sim`` without a cross-process wire the pong side runs in the
same process on the other end of the wire and the round trips are timed on the virtual
clock.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, Subparsers, UsageError, add_json_flag, emit_json,
                             progress, stop_on_signals)

if TYPE_CHECKING:
    from efvi.apps.latency import LatencyReport

DEFAULT_PORT = 8080


def _sizes(text: str) -> list[int]:
    from efvi.apps.latency import parse_sizes
    from efvi.errors import SetupError
    try:
        sizes = parse_sizes(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(sizes) > 1000 or max(sizes) > 8972:
        raise argparse.ArgumentTypeError(
            f"{text!r} asks for {len(sizes)} sizes up to {max(sizes)} bytes; expected at most "
            "1000 sizes of 0..8972 bytes")
    return sizes


def _plot_path(text: str) -> str:
    """``--plot``: a file name ending .png, .svg or .pdf (the format comes from it)."""
    if not text.lower().endswith((".png", ".svg", ".pdf")) or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in .png, .svg or .pdf; the picture's format comes from it")
    return text


def register(sub: Subparsers) -> None:
    p = sub.add_parser("latency", help="UDP ping-pong round-trip latency (eflatency)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=("ping", "pong"))
    p.add_argument("url", type=at.driver_url,
                   help="driver URL: xdp:IFNAME[@Q], packet:IFNAME, sim[:PORT?...]")
    p.add_argument("--peer", type=at.ipv4, help="ping: the pong side's IPv4 address")
    p.add_argument("-n", dest="iters", type=at.int_range(1, 10_000_000), default=100_000,
                   help="timed round trips per size (default 100000)")
    p.add_argument("-s", dest="sizes", default=[0], type=_sizes,
                   help="UDP payload sizes: N, a,b,c or a:b:step (default 0)")
    p.add_argument("--warm", "-w", type=at.int_range(0, 10_000_000), default=10_000,
                   help="warm-up round trips per size, not timed (default 10000)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--busy", dest="block", action="store_false", default=False,
                      help="busy-poll (the default)")
    mode.add_argument("--block", dest="block", action="store_true",
                      help="block in poll(2) between events")
    p.add_argument("--pio", action="store_true", help="send from the VI's PIO area")
    p.add_argument("--kernel", action="store_true",
                   help="also run the exchange over kernel UDP sockets (port + 1)")
    p.add_argument("-p", "--port", type=at.int_range(1, 65534), default=DEFAULT_PORT,
                   help=f"UDP port of both ends (default {DEFAULT_PORT})")
    add_json_flag(p)
    p.add_argument("--plot", metavar="FILE.png", type=_plot_path,
                   help="ping: write a latency distribution picture (needs efvi[plot])")
    p.set_defaults(func=run)


def _check_plot() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed",
                         hint="pip install 'efvi[plot]' (or pip install matplotlib)") from None


def _plot(rep: "LatencyReport", path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for st in rep.results:
        if not st.rtt_ns.size:
            continue
        us = np.sort(st.rtt_ns) / 1e3
        ax.plot(us, np.arange(1, us.size + 1) / us.size,
                label=f"{st.impl}, {st.paylen} B (p50 {np.median(us):.1f} µs)")
    ax.set_xscale("log")
    ax.set_xlabel("round-trip time (µs)")
    ax.set_ylabel("fraction of round trips ≤ x")
    ax.set_title(f"efvi latency ping {rep.url}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from efvi.apps.latency import LatencyConfig, run_ping, run_pong, table
    if args.plot and args.role != "ping":
        raise UsageError("--plot is for the ping side", hint="drop --plot on pong")
    if args.role == "ping" and not args.peer and not args.url.startswith("sim"):
        raise UsageError("ping needs --peer IP", hint="the address the pong side listens on")
    if args.plot:
        _check_plot()
    cfg = LatencyConfig(iters=args.iters, sizes=args.sizes, warm=args.warm,
                        block=args.block, pio=args.pio, port=args.port)

    def say(line: str) -> None:
        progress(line)

    with stop_on_signals() as stop:
        if args.role == "pong":
            rep = run_pong(args.url, cfg, kernel=args.kernel, stop=stop, progress=say)
        else:
            rep = run_ping(args.url, cfg, args.peer, kernel=args.kernel, stop=stop,
                           progress=say)
    if args.role == "pong":
        if args.json:
            emit_json({"role": "pong", "url": args.url, "served": rep.served,
                       "peer": list(rep.peer) if rep.peer else None})
        else:
            print(f"answered {rep.served} pings")
        return EXIT_OK
    if args.json:
        emit_json({"role": "ping", "url": rep.url, "peer": list(rep.peer or ()),
                   "iterations": cfg.iters, "warm": cfg.warm, "tx_mode": rep.tx_mode,
                   "clock": rep.clock, "frame_len": rep.frame_len,
                   "results": [s.summary() for s in rep.results],
                   "p50_ratio_efvi_to_kernel": rep.p50_ratio()})
    else:
        print(f"# efvi latency ping {rep.url} -> {rep.peer[0]}:{rep.peer[1]}"
              if rep.peer else f"# efvi latency ping {rep.url}")
        print(f"# iterations: {cfg.iters}  warm-up: {cfg.warm}  "
              f"{'block' if cfg.block else 'busy-poll'}  tx: {rep.tx_mode}  "
              f"clock: {rep.clock}")
        print("# frame_len: " + ", ".join(f"{k}->{v}" for k, v in rep.frame_len.items()))
        for impl in ("efvi", "kernel"):
            rows = [s for s in rep.results if s.impl == impl]
            if not rows:
                continue
            print(f"# {impl}{' (kernel UDP sockets)' if impl == 'kernel' else ''}")
            for line in table(rows):
                print(line)
            lost = sum(s.lost for s in rows)
            done = [s for s in rows if s.rtt_ns.size]
            if done:
                mean = sum(float(s.rtt_ns.mean()) for s in done) / len(done) / 1e3
                print(f"mean round-trip time: {mean:.3f} usec" + (f"  (lost {lost})" if lost
                                                                   else ""))
        ratio = rep.p50_ratio()
        if ratio is not None:
            print(f"p50 ratio efvi/kernel: {ratio:.2f}x")
    if args.plot:
        _plot(rep, args.plot)
        progress(f"# wrote {args.plot}")
    return EXIT_OK
