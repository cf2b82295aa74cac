"""The replay scheduler without a clock: records in, deadlines out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efvi.pcap.record import RecordBatch
from efvi.replay import Chunk, LatencyHistogram, Pacing, Scheduler, fix_checksums


def _batch(ts: list[int], lens: list[int] | None = None) -> RecordBatch:
    lens = lens or [60] * len(ts)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    buf = np.arange(sum(lens), dtype=np.int64).astype(np.uint8)
    n = len(ts)
    return RecordBatch(np.array(ts, np.int64), np.array(lens, np.uint32),
                       np.array(lens, np.uint32), np.zeros(n, np.uint32), offs, buf)


def _deadlines(chunks: list[Chunk]) -> list[int]:
    return [int(x) for c in chunks for x in c.deadline_ns]


def _run(s: Scheduler, files: list[list[RecordBatch]]) -> list[int]:
    out: list[int] = []
    while not s.done:
        for f in files:
            for b in f:
                out += _deadlines(s.add(b))
            s.end_file()
        s.end_pass()
    return out


T0 = 1_700_000_000_123_456_789


def test_original_timing_counts_from_the_first_record() -> None:
    s = Scheduler()
    d = _deadlines(s.add(_batch([T0, T0 + 10_000, T0 + 110_000, T0 + 1_110_000])))
    assert d == [0, 10_000, 110_000, 1_110_000]


def test_multiplier_scales_the_gaps() -> None:
    s = Scheduler(Pacing(multiplier=2.0))
    assert _deadlines(s.add(_batch([T0, T0 + 10_000, T0 + 30_001]))) == [0, 5_000, 15_000]
    s = Scheduler(Pacing(multiplier=0.5))
    assert _deadlines(s.add(_batch([T0, T0 + 10_000]))) == [0, 20_000]


def test_backwards_timestamps_are_due_with_the_record_before() -> None:
    s = Scheduler()
    assert _deadlines(s.add(_batch([T0, T0 + 500, T0 + 100, T0 + 900]))) == [0, 500, 500, 900]


def test_pps_paces_from_the_start_not_the_previous_record() -> None:
    s = Scheduler(Pacing(pps=3.0))  # a period of 333333333.33 ns: no drift
    d = []
    for _ in range(1000):
        d += _deadlines(s.add(_batch([T0, T0])))
    assert d[:4] == [0, 333_333_333, 666_666_666, 1_000_000_000]
    assert d[-1] == (len(d) - 1) * 1_000_000_000 // 3


def test_mbps_paces_by_bytes() -> None:
    s = Scheduler(Pacing(mbps=8.0))  # 1 byte per µs
    d = _deadlines(s.add(_batch([T0] * 3, [100, 1000, 50])))
    assert d == [0, 100_000, 1_100_000]
    s.end_file()
    assert _deadlines(s.add(_batch([T0], [10]))) == [1_150_000]


def test_topspeed_is_all_zero() -> None:
    s = Scheduler(Pacing(topspeed=True))
    assert _deadlines(s.add(_batch([T0, T0 + 5, T0 + 10**9]))) == [0, 0, 0]


def test_several_files_follow_each_other_whatever_their_clocks() -> None:
    s = Scheduler()
    f1 = [_batch([T0, T0 + 1000])]
    f2 = [_batch([5_000, 5_300])]  # an older file: its own time base
    assert _run(s, [f1, f2]) == [0, 1000, 1000, 1300]


def test_loops_with_loopdelay_and_limit() -> None:
    s = Scheduler(loops=3, loopdelay_ns=50_000)
    assert _run(s, [[_batch([T0, T0 + 1000])]]) == [0, 1000, 51_000, 52_000, 102_000, 103_000]
    s = Scheduler(loops=0, limit=5)  # forever, but -L 5
    d = _run(s, [[_batch([T0, T0 + 10])]])
    assert d == [0, 10, 10, 20, 20] and s.scheduled == 5
    s = Scheduler(Pacing(pps=1000), loops=2, loopdelay_ns=1_000_000)
    assert _run(s, [[_batch([T0, T0])]]) == [0, 1_000_000, 3_000_000, 4_000_000]


def test_duration_cuts_timed_schedules() -> None:
    s = Scheduler(duration_ns=15_000, loops=0)
    assert _run(s, [[_batch([T0, T0 + 10_000])]]) == [0, 10_000, 10_000]


def test_empty_files_do_not_loop_forever() -> None:
    s = Scheduler(loops=0)
    assert _run(s, [[]]) == []


def test_chunks_and_slots() -> None:
    s = Scheduler(max_chunk=3)
    chunks = s.add(_batch([T0, T0, T0 + 5, T0 + 5, T0 + 9]))
    assert [len(c) for c in chunks] == [3, 2]
    slots = [(d, (sl.start, sl.stop)) for c in chunks for d, sl in c.slots()]
    assert slots == [(0, (0, 2)), (5, (2, 3)), (5, (0, 1)), (9, (1, 2))]
    assert chunks[1].frame(1) == bytes(range(240, 256)) + bytes(range(44))


def test_bad_pacing_is_refused() -> None:
    with pytest.raises(ValueError):
        Pacing(pps=10, topspeed=True)
    with pytest.raises(ValueError):
        Pacing(multiplier=0)
    with pytest.raises(ValueError):
        Pacing(pps=float("nan"))


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(0, 10**7), min_size=1, max_size=200),
       split=st.integers(1, 50), mult=st.sampled_from([1.0, 2.0, 0.25, 3.0]))
def test_batching_does_not_change_the_schedule(gaps: list[int], split: int, mult: float) -> None:
    ts = (T0 + np.cumsum([0, *gaps])).tolist()
    whole = _deadlines(Scheduler(Pacing(multiplier=mult)).add(_batch(ts)))
    s = Scheduler(Pacing(multiplier=mult), max_chunk=7)
    parts: list[int] = []
    for a in range(0, len(ts), split):
        parts += _deadlines(s.add(_batch(ts[a:a + split])))
    assert parts == whole
    assert all(b >= a for a, b in zip(whole, whole[1:]))
    expect = [int(np.floor((t - ts[0]) * (1.0 / mult))) if mult != 1.0 else t - ts[0]
              for t in ts]
    assert whole == expect


def test_latency_histogram_percentiles() -> None:
    h = LatencyHistogram()
    h.add(np.arange(1, 1001, dtype=np.int64) * 1000)  # 1..1000 µs
    h.add(np.array([-500, 50_000_000], np.int64))
    s = h.summary_us()
    assert s["min"] == -0.5 and s["max"] == 50_000.0
    assert abs(s["p50"] - 500) <= 1.0 and abs(s["p99"] - 991) <= 2.0
    assert h.count == 1002 and h.negative == 1


def test_fix_checksums_ipv4_udp_tcp_behind_a_vlan_tag() -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Dot1Q, Ether

    for l4 in (UDP(sport=1, dport=2), TCP(sport=1, dport=2)):
        good = bytes(Ether(dst="02:00:00:00:00:01") / Dot1Q(vlan=5) /
                     IP(src="198.18.0.1", dst="198.18.0.2") / l4 / b"payload")
        bad = bytearray(good)
        bad[18 + 10:18 + 12] = b"\x12\x34"
        csum_at = 18 + 20 + (6 if isinstance(l4, UDP) else 16)
        bad[csum_at:csum_at + 2] = b"\xAB\xCD"
        assert fix_checksums(bad) and bytes(bad) == good
