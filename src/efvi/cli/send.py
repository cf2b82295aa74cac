"""``efvi send``: transmit a UDP stream, after ef_vi's ``efsend``.

    efvi send [-n N] [-m SIZE] [-s USEC] [-l LPORT] [-B BATCH] [--dmac MAC] [--json]
              URL DEST-IP PORT

The source MAC and IP come from the interface; the destination MAC is the multicast
MAC for a group, else ``--dmac``, else the neighbour table's entry. ``-n -1`` sends
until interrupted (SIGINT/SIGTERM stop it with the summary). Prints the rate once a
second (stderr) and efsend's summary (stdout).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from efvi.cli import argtypes as at
from efvi.cli.common import (EXIT_OK, EXIT_RUNTIME, Subparsers, add_json_flag, emit_json,
                             progress, stop_on_signals)

if TYPE_CHECKING:
    from efvi.apps.send import SendStats


def register(sub: Subparsers) -> None:
    p = sub.add_parser("send", help="transmit a UDP stream (efsend)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", type=at.driver_url,
                   help="driver URL: sim[:PORT?wire=@NAME], xdp:IFNAME[@Q], packet:IFNAME")
    p.add_argument("dest", type=at.ipv4,
                   help="destination IPv4 address (unicast or multicast; IPv6 is not supported)")
    p.add_argument("port", type=at.port, help="destination UDP port (1..65535)")
    p.add_argument("-n", dest="count", type=at.int_range(1, extra=(-1,),
                                                           meaning="-1: until interrupted"),
                   default=10,
                   help="packets to send (default 10; -1: until interrupted)")
    p.add_argument("-m", dest="size", type=at.int_range(8, 1472), default=28,
                   help="UDP payload bytes (default 28: a 70-byte frame)")
    p.add_argument("-s", dest="sleep_us", type=at.int_range(0, 10_000_000), default=0,
                   help="µs to sleep between batches")
    p.add_argument("-l", dest="lport", type=at.port, default=12345, help="local UDP port (12345)")
    p.add_argument("-B", dest="batch", type=at.int_range(1, 4096), default=None,
                   help="frames per doorbell (default: a quarter of the TX ring = 1024, the "
                        "adapter's best rate; 1: efsend's per-packet transmit())")
    p.add_argument("--dmac", type=at.mac, help="destination MAC (skips the neighbour table)")
    p.add_argument("--src-ip", type=at.ipv4,
                   help="source IPv4 address (default: the interface's)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from efvi.apps.send import Sender

    last = [0]

    def tick(st: SendStats) -> None:
        progress(f"tx-rate {st.tx_packets - last[0]:>10} pps  total {st.tx_packets}")
        last[0] = st.tx_packets

    with Sender(args.url, args.dest, args.port, sport=args.lport, payload=args.size,
                dmac=args.dmac, src_ip=args.src_ip) as snd:
        if not args.json:
            print("# send_method=DMA")
            print(f"# TX ring size: {snd.vi.transmit_capacity() + 1}")
            print(f"# tx_frame_len={len(snd.frame)}")
        with stop_on_signals() as stop:
            st = snd.run(args.count, batch=args.batch, sleep_us=args.sleep_us, on_second=tick,
                         stop=stop)
        vst = snd.vi.stats()
    secs = st.elapsed_s or 1e-9
    # frames the link refused (not_sent) were posted but never left: not counted as sent
    sent = st.tx_packets - st.not_sent
    sent_bytes = sent * st.frame_len
    if args.json:
        emit_json({"url": args.url, "dest": f"{args.dest}:{args.port}",
                   "tx_packets": sent, "tx_bytes": sent_bytes,
                   "completed": st.completed, "out_of_order_completions": st.out_of_order,
                   "frame_len": st.frame_len, "elapsed_s": round(st.elapsed_s, 6),
                   "pps": round(sent / secs, 1), "drops": vst["drops"],
                   "drop_causes": {k: v for k, v in vst.items() if k.endswith("_drops")},
                   "not_sent": st.not_sent, "error": st.error or None})
    else:
        print(f"Sent {sent} packets" + (f" ({st.not_sent} more not sent: link down)"
                                         if st.not_sent else ""))
        print(f"Time: {st.elapsed_s:.6f} s")
        print(f"Rate: {sent / secs / 1e6:.4f} Mpps")
        print(f"Bw: {sent_bytes * 8 / secs / 1e6:.2f} Mbps")
        if vst["drops"]:
            causes = ", ".join(f"{k}={v}" for k, v in vst.items() if k.endswith("_drops") and v)
            print(f"Dropped: {vst['drops']} ({causes})")
    if st.error:
        sys.stdout.flush()
        print(f"efvi send: {st.error}", file=sys.stderr)
        return EXIT_RUNTIME
    ok = st.completed == st.tx_packets and st.out_of_order == 0
    return EXIT_OK if ok else EXIT_RUNTIME
