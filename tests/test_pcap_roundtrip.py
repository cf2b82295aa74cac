"""pcap and pcapng: write then read back, per-record and batch, every format variant."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efvi.pcap import (
    PcapNgReader,
    PcapNgWriter,
    PcapReader,
    PcapWriter,
    Record,
    open_capture,
    read_batches,
    read_records,
)
from efvi.pcap.constants import (
    BT_EPB,
    BT_IDB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    EPB_FLAGS,
    IF_TSOFFSET,
    IF_TSRESOL,
    OPT_COMMENT,
)
from efvi.pcap.pcapng import pack_options
from efvi.wire.build import udp_frame
from efvi.wire.classify import classify

T0 = 1_700_000_000_123_456_789  # ns; not representable as a float


def frames_and_ts(n: int, seed: int = 1) -> tuple[list[bytes], list[int]]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
              for _ in range(n)]
    ts = [T0 + int(x) for x in np.cumsum(rng.integers(0, 10**9, n))]
    return frames, ts


def to_2d(frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    w = max([len(f) for f in frames] + [1])
    a = np.full((len(frames), w), 0xEE, np.uint8)  # junk beyond each length
    for i, f in enumerate(frames):
        a[i, :len(f)] = np.frombuffer(f, np.uint8)
    return a, np.array([len(f) for f in frames])


def read_all(data: bytes) -> list[Record]:
    with open_capture(io.BytesIO(data)) as r:
        return list(r)


def read_all_batched(data: bytes, max_records: int = 65536) -> list[tuple[int, bytes, int,
                                                                           int]]:
    out: list[tuple[int, bytes, int, int]] = []
    with open_capture(io.BytesIO(data)) as r:
        for b in r.batches(max_records):
            out.extend(b.records())
    return out


@pytest.mark.parametrize("fmt", ["pcap-ns", "pcap-us", "pcapng"])
@pytest.mark.parametrize("batch_write", [False, True])
def test_round_trip(fmt: str, batch_write: bool) -> None:
    frames, ts = frames_and_ts(3000)
    buf = io.BytesIO()
    if fmt == "pcapng":
        w: PcapWriter | PcapNgWriter = PcapNgWriter(buf)
        assert w.add_interface() == 0  # type: ignore[union-attr]
    else:
        w = PcapWriter(buf, nanosecond=fmt == "pcap-ns")
    if batch_write:
        a, n = to_2d(frames)
        w.write_batch(a[:1000], n[:1000], np.array(ts[:1000]))
        for f, t in zip(frames[1000:1001], ts[1000:1001]):
            w.write(t, f)
        w.write_batch(a[1001:], n[1001:], np.array(ts[1001:]), orig_lens=n[1001:] + 4)
    else:
        for i, (f, t) in enumerate(zip(frames, ts)):
            w.write(t, f, orig_len=len(f) + 4 if i > 1000 else None)
    w.close()
    data = buf.getvalue()
    want_ts = [t if fmt != "pcap-us" else t // 1000 * 1000 for t in ts]
    recs = read_all(data)
    assert [r.data for r in recs] == frames
    assert [r.ts_ns for r in recs] == want_ts
    assert [r.orig_len for r in recs] == [len(f) + (4 if i > 1000 else 0)
                                          for i, f in enumerate(frames)]
    for mr in (65536, 7):
        got = read_all_batched(data, mr)
        assert [g[1] for g in got] == frames
        assert [g[0] for g in got] == want_ts
    # Pure Python ints of ns, never floats.
    assert all(type(r.ts_ns) is int for r in recs[:5])


def test_pcap_header_fields_and_snaplen(tmp_path: Path) -> None:
    p = tmp_path / "s.pcap"
    with PcapWriter(p, snaplen=64, linktype=101, nanosecond=False) as w:
        w.write(T0, b"x" * 100)
        w.write_batch(np.full((2, 100), 7, np.uint8), [100, 50], [T0, T0 + 1])
    raw = p.read_bytes()
    assert struct.unpack_from("=IHHiIII", raw) == (0xA1B2C3D4, 2, 4, 0, 0, 64, 101)
    with PcapReader(p) as r:
        assert (r.linktype, r.snaplen, r.nanosecond) == (101, 64, False)
        recs = list(r)
    assert [len(x.data) for x in recs] == [64, 64, 50]
    assert [x.orig_len for x in recs] == [100, 100, 50]


def test_byte_swapped_pcap_is_read(tmp_path: Path) -> None:
    """A big-endian ns file as a big-endian machine would write it."""
    raw = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    raw += struct.pack(">IIII", 1_700_000_000, 123_456_789, 3, 60) + b"abc"
    raw += struct.pack(">IIII", 1_700_000_001, 5, 0, 0)
    with open_capture(io.BytesIO(raw)) as r:
        assert isinstance(r, PcapReader) and r.byte_order == ">"
        recs = list(r)
    assert recs == [Record(T0, b"abc", 60), Record(1_700_000_001_000_000_005, b"", 0)]
    assert read_all_batched(raw) == [(T0, b"abc", 60, 0), (1_700_000_001_000_000_005, b"",
                                                            0, 0)]


def test_pcapng_interfaces_options_stats(tmp_path: Path) -> None:
    p = tmp_path / "m.pcapng"
    with PcapNgWriter(p, os="Linux", hardware="sim", comment="hi") as w:
        a = w.add_interface(name="sim0", description="port 0", filter="udp", speed=10**10,
                            mac=bytes(6))
        b = w.add_interface(linktype=101, snaplen=100, name="sim1", tsresol=6)
        w.write(T0, b"frame-a", a, flags=1, options=[(OPT_COMMENT, b"first")])
        w.write(T0 + 999, b"y" * 150, b)  # cut to 100, ts floored to the µs
        w.write_batch(np.zeros((2, 8), np.uint8), [8, 8], [T0 + 5, T0 + 6], ifidx=[a, b])
        w.set_stats(a, recv=10, drop=2)
        w.set_stats(b, recv=3, drop=0, osdrop=1)
        with pytest.raises(ValueError):
            w.write(T0, b"", 5)
        with pytest.raises(ValueError):
            w.write_batch(np.zeros((1, 8), np.uint8), [8], [T0], ifidx=7)
        with pytest.raises(ValueError):
            w.write_batch(np.zeros((1, 8), np.uint8), [8], [1.5])
    with PcapNgReader(p) as r:
        recs = list(r)
        sec = r.sections[0]
        assert dict(sec.options) == {1: b"hi", 2: b"sim", 3: b"Linux", 4: b"efvi"}
        i0, i1 = r.interfaces
        assert (i0.name, i0.description, i0.linktype, i0.tsresol) == ("sim0", "port 0", 1, 9)
        assert (i1.name, i1.linktype, i1.snaplen, i1.tsresol) == ("sim1", 101, 100, 6)
        assert dict(i0.options)[11] == b"\x00udp"
        stats = {s.ifidx: s for s in r.stats}
    assert recs[0] == Record(T0, b"frame-a", 7, 0, ((EPB_FLAGS, struct.pack("=I", 1)),
                                                     (OPT_COMMENT, b"first")))
    assert recs[1].ts_ns == T0 + 999 - (T0 + 999) % 1000 and len(recs[1].data) == 100
    assert recs[1].orig_len == 150 and recs[1].ifidx == 1
    assert [(x.ts_ns, x.ifidx) for x in recs[2:]] == [(T0 + 5, 0), ((T0 + 6) // 1000 * 1000, 1)]
    assert (stats[0].recv, stats[0].drop, stats[0].osdrop) == (10, 2, None)
    assert (stats[1].recv, stats[1].drop, stats[1].osdrop) == (3, 0, 1)
    assert stats[0].start_ns == T0 and stats[0].end_ns == T0 + 5 and stats[0].ts_ns == T0 + 5


def test_pcapng_several_sections(tmp_path: Path) -> None:
    """Concatenated pcapng files are one file of several sections."""
    parts = []
    for k in range(3):
        buf = io.BytesIO()
        with PcapNgWriter(buf) as w:
            for j in range(k + 1):
                w.add_interface(name=f"s{k}i{j}")
            for j in range(k + 1):
                w.write(T0 + 10 * k + j, bytes([k, j]), j)
        parts.append(buf.getvalue())
    data = b"".join(parts)
    with PcapNgReader(io.BytesIO(data)) as r:
        recs = list(r)
        assert len(r.sections) == 3
        assert [len(s.interfaces) for s in r.sections] == [1, 2, 3]
        assert r.sections[2].interfaces[1].name == "s2i1"
    assert [(x.data, x.ifidx) for x in recs] == [(bytes([k, j]), j) for k in range(3)
                                                  for j in range(k + 1)]
    assert [g[1] for g in read_all_batched(data)] == [x.data for x in recs]


def _blk(bo: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(bo + "II", btype, n) + body + struct.pack(bo + "I", n)


def handmade_pcapng(bo: str) -> bytes:
    """SHB, an IDB with 2^-20 s resolution and a 100 s offset, an IDB at µs, a PB, an
    SPB, an EPB with a comment, an unknown block, and an NRB — in byte order ``bo``."""
    o = pack_options
    out = _blk(bo, BT_SHB, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += _blk(bo, BT_IDB, struct.pack(bo + "HHI", 1, 0, 0) + o(
        [(IF_TSRESOL, bytes([0x80 | 20])), (IF_TSOFFSET, struct.pack(bo + "q", 100))], bo))
    out += _blk(bo, BT_IDB, struct.pack(bo + "HHI", 1, 0, 4) + o([(IF_TSRESOL, b"\x06")], bo))
    units = 3 << 20 | 1 << 19  # 3.5 s in 2^-20 units
    out += _blk(bo, BT_PB, struct.pack(bo + "HHIIII", 1, 0, 0, 1_500_000, 2, 9) + b"pb")
    out += _blk(bo, BT_SPB, struct.pack(bo + "I", 3) + b"spb")
    out += _blk(bo, 0x0BAD, b"unknown block body")
    out += _blk(bo, 4, b"\0" * 4)  # NRB with only the end record
    out += _blk(bo, BT_EPB, struct.pack(bo + "IIIII", 0, units >> 32, units & 0xFFFFFFFF, 3,
                                        3) + b"epb" + b"\0" + o([(1, b"note")], bo))
    return out


@pytest.mark.parametrize("bo", ["<", ">"])
def test_handmade_pcapng_blocks_resolutions_and_byte_orders(bo: str) -> None:
    data = handmade_pcapng(bo)
    with open_capture(io.BytesIO(data)) as r:
        assert isinstance(r, PcapNgReader)
        recs = list(r)
        assert r.skipped == {0x0BAD: 1, 4: 1}
        assert r.byte_order == bo
    assert recs == [
        Record(1_500_000_000, b"pb", 9, 1),           # µs interface, PB
        Record(0, b"spb", 3, 0),                       # SPB: no timestamp, if 0
        Record(103_500_000_000, b"epb", 3, 0, ((1, b"note"),)),  # 2^-20 + 100 s offset
    ]
    assert read_all_batched(data) == [(r.ts_ns, r.data, r.orig_len, r.ifidx) for r in recs]


def test_spb_is_cut_to_snaplen() -> None:
    o = pack_options
    data = _blk("<", BT_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    data += _blk("<", BT_IDB, struct.pack("<HHI", 1, 0, 2) + o([(IF_TSRESOL, b"\x09")]))
    data += _blk("<", BT_SPB, struct.pack("<I", 5) + b"hello")
    assert read_all(data) == [Record(0, b"he", 5, 0)]


def test_batch_frames_feed_the_classifier(tmp_path: Path) -> None:
    p = tmp_path / "u.pcapng"
    fr = [udp_frame("01:00:5e:01:02:03", "02:00:00:00:00:01", "198.18.0.1", "239.1.2.3",
                    1000 + i, 30001, bytes(i)) for i in range(50)]
    with PcapNgWriter(p) as w:
        w.add_interface()
        for i, f in enumerate(fr):
            w.write(T0 + i, f)
    batches = list(read_batches(p))
    assert sum(len(b) for b in batches) == 50
    b = batches[0]
    cols = classify(b.frames(), b.caplen)
    assert cols.src_port.tolist() == [1000 + i for i in range(len(b))]
    assert bool(cols.valid.all()) and set(cols.dst_ip4.tolist()) == {0xEF010203}
    narrow = b.frames(20)
    assert narrow.shape == (len(b), 20) and bytes(narrow[3]) == fr[3][:20]
    assert bytes(b.frame(7)) == fr[7]


class _Endless(io.RawIOBase):
    """A pcap stream generated on the fly: bigger than we would ever hold in memory."""

    def __init__(self, records: int) -> None:
        self.left = records
        self.head = struct.pack("=IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
        self.rec = struct.pack("=IIII", 1, 2, 1000, 1000) + bytes(1000)

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        out = self.head
        self.head = b""
        while len(out) + len(self.rec) <= len(b) and self.left:
            out += self.rec
            self.left -= 1
        b[:len(out)] = out
        return len(out)


def test_streaming_reads_in_constant_memory() -> None:
    n = 60_000  # ~61 MB of records through a 1 MiB window
    tracemalloc.start()
    try:
        count = 0
        for rec in read_records(io.BufferedReader(_Endless(n), 1 << 16)):
            count += len(rec.data) == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 8 * 2**20, peak
    tracemalloc.start()
    try:
        total = sum(len(b) for b in read_batches(io.BufferedReader(_Endless(n), 1 << 16)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == n and peak < 16 * 2**20, peak


def test_empty_captures_are_valid(tmp_path: Path) -> None:
    for cls in (PcapWriter, PcapNgWriter):
        p = tmp_path / f"e.{cls.format}"
        cls(p).close()
        assert list(read_records(p)) == []
        assert list(read_batches(p)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.binary(max_size=80)), max_size=40),
       st.sampled_from(["pcap", "pcapng"]), st.booleans())
def test_round_trip_property(recs: list[tuple[int, bytes]], fmt: str, batch: bool) -> None:
    buf = io.BytesIO()
    if fmt == "pcap":
        recs = [(t % (2**32 * 10**9), d) for t, d in recs]  # pcap seconds are u32
        w: PcapWriter | PcapNgWriter = PcapWriter(buf)
    else:
        w = PcapNgWriter(buf)
        w.add_interface()
    if batch and recs:
        a, n = to_2d([d for _, d in recs])
        w.write_batch(a, n, np.array([t for t, _ in recs], np.int64))
    else:
        for t, d in recs:
            w.write(t, d)
    w.close()
    data = buf.getvalue()
    assert [(r.ts_ns, r.data) for r in read_all(data)] == recs
    assert [(g[0], g[1]) for g in read_all_batched(data, 5)] == recs
