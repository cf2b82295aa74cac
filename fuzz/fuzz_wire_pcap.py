"""A longer fuzz run than the suite's: readers, header parsers and the classifier.

Uses hypothesis (atheris is not required). Each target runs ``--examples`` cases:

* ``readers``: valid pcap/pcapng files (per-record and batch written, µs/ns, several
  interfaces) corrupted at random bytes, truncated, or spliced; both read paths must
  deliver the same records and then either end cleanly or raise the same FormatError
  (same offset); nothing else may escape.
* ``parsers``: random bytes into every header codec: only FormatError with an offset.
* ``classify``: generated frames (the suite's strategy) — batch and scalar agree.

    python fuzz/fuzz_wire_pcap.py [--examples 20000] [--target all]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_wire_classify import batch, frames  # noqa: E402

from efvi.errors import FormatError  # noqa: E402
from efvi.pcap import PcapNgWriter, PcapWriter, open_capture  # noqa: E402
from efvi.wire.arp import ARP  # noqa: E402
from efvi.wire.classify import classify, classify_one  # noqa: E402
from efvi.wire.ethernet import Ethernet  # noqa: E402
from efvi.wire.icmp import Echo  # noqa: E402
from efvi.wire.ipv4 import IPv4  # noqa: E402
from efvi.wire.ipv6 import IPv6, IPv6Chain  # noqa: E402
from efvi.wire.tcp import TCP  # noqa: E402
from efvi.wire.udp import UDP  # noqa: E402

COUNTS: dict[str, int] = {}


def base_file(kind: int, size: int, n: int) -> bytes:
    buf = io.BytesIO()
    if kind in (0, 1):
        w: PcapWriter | PcapNgWriter = PcapWriter(buf, nanosecond=kind == 0, snaplen=500)
    else:
        w = PcapNgWriter(buf, comment="fuzz")
        w.add_interface(snaplen=500, name="a")
        w.add_interface(tsresol=6)
    frames_ = np.full((n, max(size, 1)), 0x5A, np.uint8)
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 7
    if kind == 3:
        w.write_batch(frames_, np.full(n, size), ts, ifidx=np.arange(n) % 2)  # type: ignore[call-arg]
    else:
        for i in range(n):
            if isinstance(w, PcapNgWriter):
                w.write(int(ts[i]), bytes(frames_[i, :size]), i % 2, flags=i,
                        options=[(1, b"c" * (i % 5))])
            else:
                w.write(int(ts[i]), bytes(frames_[i, :size]))
    if isinstance(w, PcapNgWriter):
        w.set_stats(0, 10, 1)
    w.close()
    return buf.getvalue()


def read(data: bytes, batched: bool) -> tuple[list[tuple[int, bytes]], int | None]:
    got: list[tuple[int, bytes]] = []
    try:
        with open_capture(io.BytesIO(data)) as r:
            if batched:
                for b in r.batches(4):
                    got.extend((int(b.ts_ns[i]), bytes(b.frame(i))) for i in range(len(b)))
            else:
                got.extend((x.ts_ns, x.data) for x in r)
    except FormatError as exc:
        assert exc.offset is not None
        return got, exc.offset
    return got, None


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(base_file(draw(st.integers(0, 3)), draw(st.integers(0, 70)),
                               draw(st.integers(1, 12))))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            data[i:i] = draw(st.binary(max_size=16))
        elif op == 2:
            del data[i:i + draw(st.integers(1, 16))]
        else:
            j = draw(st.integers(0, max(0, len(data) - 4)))
            data[j:j + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0",
                                                  b"\x06\0\0\0", b"\x0a\x0d\x0d\x0a"]))
    return bytes(data)


def run(examples: int, target: str) -> None:
    cfg = settings(max_examples=examples, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

    @cfg
    @given(corrupted())
    def readers(data: bytes) -> None:
        a = read(data, False)
        b = read(data, True)
        assert a == b, (a[1], b[1], data.hex())
        COUNTS["readers"] = COUNTS.get("readers", 0) + 1
        COUNTS["readers_faulted"] = COUNTS.get("readers_faulted", 0) + (a[1] is not None)

    @cfg
    @given(st.binary(max_size=200))
    def parsers(blob: bytes) -> None:
        for parse in (Ethernet.parse, ARP.parse, IPv4.parse, IPv6.parse, IPv6Chain.walk,
                      UDP.parse, TCP.parse, Echo.parse):
            try:
                parse(blob)
            except FormatError as exc:
                assert exc.offset is not None
        COUNTS["parsers"] = COUNTS.get("parsers", 0) + 1

    @cfg
    @given(st.lists(frames(), min_size=1, max_size=32), st.integers(0, 160))
    def classify_agrees(fs: list[bytes], width: int) -> None:
        a, n = batch(fs, width=width)
        cols = classify(a, n)
        for i, f in enumerate(fs):
            assert cols.row(i) == classify_one(f[:width]), f.hex()
        COUNTS["classify_frames"] = COUNTS.get("classify_frames", 0) + len(fs)

    for name, fn in (("readers", readers), ("parsers", parsers),
                     ("classify", classify_agrees)):
        if target in ("all", name):
            t = time.perf_counter()
            fn()
            print(f"{name:<10} {examples} examples passed in {time.perf_counter() - t:.1f} s",
                  flush=True)
    print("counts:", COUNTS)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--target", default="all", choices=("all", "readers", "parsers",
                                                         "classify"))
    args = ap.parse_args()
    run(args.examples, args.target)
