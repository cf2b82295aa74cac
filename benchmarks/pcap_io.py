"""pcap/pcapng I/O throughput: efvi batch and per-record paths beside scapy and dpkt.

Writes and reads N 64-byte records (default 1,000,000) through each path in one run
and prints records/s and ratios. scapy is slow, so it runs on a subset (--scapy-n)
and is reported per record like the rest. Not a test: numbers depend on the machine.

    python benchmarks/pcap_io.py [-n 1000000] [--scapy-n 20000] [--profile PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import struct
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from efvi.pcap import PcapNgReader, PcapNgWriter, PcapReader, PcapWriter

T0 = 1_700_000_000_000_000_000


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--scapy-n", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of every path, efvi and peers alike; the median is reported")
    ap.add_argument("--profile", help="cProfile the named path (e.g. efvi-pcap-write)")
    args = ap.parse_args()
    logging.getLogger("scapy").setLevel(logging.CRITICAL)  # random frames: no chatter
    n, size = args.n, args.size
    rng = np.random.default_rng(0)
    frames2d = rng.integers(0, 256, (n, size), dtype=np.uint8)
    lengths = np.full(n, size)
    ts = T0 + np.arange(n, dtype=np.int64) * 1000
    frame_list = [bytes(frames2d[i % 1024]) for i in range(1024)]
    ts_list = ts.tolist()
    tmp = tempfile.mkdtemp(prefix="efvi-bench-")
    results: dict[str, tuple[float, int]] = {}

    def path(name: str) -> str:
        return os.path.join(tmp, name)

    # ---- writers ----
    def efvi_pcap_batch_w() -> int:
        with PcapWriter(path("b.pcap")) as w:
            w.write_batch(frames2d, lengths, ts)
        return n

    def efvi_pcapng_batch_w() -> int:
        with PcapNgWriter(path("b.pcapng")) as w:
            w.add_interface()
            w.write_batch(frames2d, lengths, ts)
        return n

    def efvi_pcap_rec_w() -> int:
        with PcapWriter(path("r.pcap")) as w:
            write = w.write
            for i in range(n):
                write(ts_list[i], frame_list[i & 1023])
        return n

    def efvi_pcapng_rec_w() -> int:
        with PcapNgWriter(path("r.pcapng")) as w:
            w.add_interface()
            write = w.write
            for i in range(n):
                write(ts_list[i], frame_list[i & 1023])
        return n

    def struct_loop_w() -> int:
        hdr = struct.Struct("<IIII")
        with open(path("s.pcap"), "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
            for i in range(n):
                t = ts_list[i]
                d = frame_list[i & 1023]
                f.write(hdr.pack(t // 1_000_000_000, t % 1_000_000_000, len(d), len(d)))
                f.write(d)
        return n

    def dpkt_pcap_w() -> int:
        import dpkt
        with open(path("d.pcap"), "wb") as f:
            w = dpkt.pcap.Writer(f, nano=True)
            for i in range(n):
                w.writepkt(frame_list[i & 1023], ts=ts_list[i] / 1e9)
        return n

    def dpkt_pcapng_w() -> int:
        import dpkt
        with open(path("d.pcapng"), "wb") as f:
            w = dpkt.pcapng.Writer(f)
            for i in range(n):
                w.writepkt(frame_list[i & 1023], ts=ts_list[i] / 1e9)
        return n

    def scapy_w() -> int:
        from scapy.all import Ether, wrpcap
        pk = []
        for i in range(args.scapy_n):
            p = Ether(frame_list[i & 1023])
            p.time = ts_list[i] / 1e9
            pk.append(p)
        wrpcap(path("sc.pcap"), pk)
        return args.scapy_n

    # ---- readers ----
    def efvi_batch_r(name: str, cls: type[PcapReader] | type[PcapNgReader]) -> Callable[[], int]:
        def run() -> int:
            c = 0
            with cls(path(name)) as r:
                for b in r.batches(1 << 20):
                    c += len(b)
            return c
        return run

    def efvi_rec_r(name: str, cls: type[PcapReader] | type[PcapNgReader]) -> Callable[[], int]:
        def run() -> int:
            c = 0
            with cls(path(name)) as r:
                for _rec in r:
                    c += 1
            return c
        return run

    def dpkt_r(name: str, ng: bool) -> Callable[[], int]:
        def run() -> int:
            import dpkt
            c = 0
            with open(path(name), "rb") as f:
                r = dpkt.pcapng.Reader(f) if ng else dpkt.pcap.Reader(f)
                for _ts, _buf in r:
                    c += 1
            return c
        return run

    def scapy_r() -> int:
        from scapy.utils import PcapReader as SR
        c = 0
        with SR(path("b.pcap")) as r:
            for _p in r:
                c += 1
                if c >= args.scapy_n:
                    break
        return c

    plan: list[tuple[str, Callable[[], int]]] = [
        ("efvi pcap   write batch", efvi_pcap_batch_w),
        ("efvi pcapng write batch", efvi_pcapng_batch_w),
        ("efvi pcap   write per-record", efvi_pcap_rec_w),
        ("efvi pcapng write per-record", efvi_pcapng_rec_w),
        ("bare struct loop write (pcap)", struct_loop_w),
        ("dpkt pcap   write", dpkt_pcap_w),
        ("dpkt pcapng write", dpkt_pcapng_w),
        ("scapy wrpcap (pcap)", scapy_w),
        ("efvi pcap   read batch", efvi_batch_r("b.pcap", PcapReader)),
        ("efvi pcapng read batch", efvi_batch_r("b.pcapng", PcapNgReader)),
        ("efvi pcap   read per-record", efvi_rec_r("b.pcap", PcapReader)),
        ("efvi pcapng read per-record", efvi_rec_r("b.pcapng", PcapNgReader)),
        ("dpkt pcap   read", dpkt_r("b.pcap", False)),
        ("dpkt pcapng read", dpkt_r("b.pcapng", True)),
        ("scapy PcapReader (pcap)", scapy_r),
    ]
    if args.profile:
        fn = dict((k.replace(" ", "").lower(), v) for k, v in plan)
        key = args.profile.replace(" ", "").replace("-", "").lower()
        match = [f for k, f in fn.items() if key in k.replace("-", "")]
        if not match:
            print("no such path; choose from:", *fn, sep="\n  ")
            return 2
        prof = cProfile.Profile()
        prof.runcall(match[0])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
        return 0
    print(f"# {n:,} records of {size} bytes (scapy: {args.scapy_n:,}); median of "
          f"{args.repeat} runs for every path (efvi, dpkt, scapy alike); "
          f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    for name, fn in plan:
        try:
            runs = sorted(timed(fn) for _ in range(args.repeat))
            results[name] = runs[len(runs) // 2]  # the median (by time; counts are equal)
        except ImportError as exc:
            print(f"{name:<32} skipped: {exc}")
            continue
        dt, cnt = results[name]
        print(f"{name:<32} {cnt / dt / 1e6:8.2f} M rec/s  ({cnt:,} in {dt:.3f} s)")

    def rate(k: str) -> float:
        dt, cnt = results[k]
        return cnt / dt

    print("\n# ratios (higher is better for efvi)")
    pairs = [
        ("efvi pcap   write batch", "dpkt pcap   write"),
        ("efvi pcap   write per-record", "dpkt pcap   write"),
        ("efvi pcapng write batch", "dpkt pcapng write"),
        ("efvi pcapng write per-record", "dpkt pcapng write"),
        ("efvi pcap   write per-record", "bare struct loop write (pcap)"),
        ("efvi pcap   write batch", "scapy wrpcap (pcap)"),
        ("efvi pcap   read batch", "dpkt pcap   read"),
        ("efvi pcap   read per-record", "dpkt pcap   read"),
        ("efvi pcapng read batch", "dpkt pcapng read"),
        ("efvi pcapng read per-record", "dpkt pcapng read"),
        ("efvi pcap   read batch", "scapy PcapReader (pcap)"),
    ]
    for a, b in pairs:
        if a in results and b in results:
            print(f"{a.strip():<30} / {b.strip():<30} {rate(a) / rate(b):8.1f}x")
    goals = [("batch write >= 5 M rec/s", min(rate("efvi pcap   write batch"),
                                              rate("efvi pcapng write batch")) >= 5e6),
             ("batch read  >= 3 M rec/s", min(rate("efvi pcap   read batch"),
                                              rate("efvi pcapng read batch")) >= 3e6)]
    if "dpkt pcap   write" in results:
        goals += [
            ("per-record write >= 2x dpkt", min(
                rate("efvi pcap   write per-record") / rate("dpkt pcap   write"),
                rate("efvi pcapng write per-record") / rate("dpkt pcapng write")) >= 2),
            ("per-record read  >= 2x dpkt", min(
                rate("efvi pcap   read per-record") / rate("dpkt pcap   read"),
                rate("efvi pcapng read per-record") / rate("dpkt pcapng read")) >= 2)]
    print("\n# goals")
    for g, ok in goals:
        print(f"{g:<32} {'met' if ok else 'NOT met'}")
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
