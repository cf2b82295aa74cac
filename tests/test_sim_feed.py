"""The capture-fed software NIC: sim:PORT?pcap=FILE&speed=1|0 into an unchanged app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from efvi import Driver
from efvi.adapters.sim.port import FABRIC
from efvi.errors import SetupError
from efvi.events import EventType
from efvi.filters import FilterSpec
from efvi.pcap import PcapWriter
from efvi.testing.conformance import Endpoint
from efvi.wire.build import udp_frame

T0 = 1_650_000_000_000_000_000  # older than the fabric's virtual clock on purpose
GROUP, PORT = "239.18.0.7", 5000
LAST_FEED: list[object] = []
MCAST_MAC = bytes.fromhex("01005e120007")
SRC_MAC = bytes.fromhex("0200c6120001")


def feed_frames(n: int) -> list[tuple[int, bytes]]:
    """n market-data datagrams (two share a timestamp) and an ARP nobody filters."""
    out = []
    t = T0
    for i in range(n):
        t += 0 if i == 3 else 1_000 + 37 * i
        out.append((t, udp_frame(MCAST_MAC, SRC_MAC, "198.18.0.1", GROUP, 4000, PORT,
                                 i.to_bytes(8, "big") + bytes(20))))
    arp = bytes.fromhex("ffffffffffff0200c61200010806") + bytes(28)
    out.insert(5, (out[4][0] + 10, arp))
    return out


def write(path: Path, recs: list[tuple[int, bytes]]) -> None:
    with PcapWriter(str(path)) as w:
        for ts, f in recs:
            w.write(ts, f)


def run_app(url: str, want: int, *, max_polls: int = 100_000) -> tuple[list[tuple[int, bytes]],
                                                                     list[int], dict[str, int]]:
    """An efvi application: one VI, a multicast filter, frames and RX timestamps out.
    Nothing in it knows where the frames come from."""
    with Driver.open(url) as drv:
        ep = Endpoint(drv, nbuf=512, rxq=512, txq=64)
        spec = FilterSpec.ip4_local("udp", GROUP, PORT)
        ep.vi.filter_add(spec if drv.capabilities.steal else spec.sniff())
        ep.post(range(511))
        got: list[tuple[int, bytes]] = []
        sw: list[int] = []
        for _ in range(max_polls):
            for ev in ep.vi.eventq_poll(64):
                if ev.type == EventType.RX:
                    got.append((ev.ts_ns, ep.mr.read(ep.addr(ev.rq_id) + ev.ofs, ev.len)))
                    ep.vi.receive_post(ep.addr(ev.rq_id), ev.rq_id)
                elif ev.type == EventType.SW:
                    sw.append(ev.len)  # a SW event carries its data in len
            if len(got) >= want and (sw or "eof_event" not in url):
                break
        stats = ep.vi.stats()
        port = getattr(drv.adapter, "port", None)
        if port is not None:  # the sim port's own counters and feed, for the tests
            stats["kernel_rx_packets"] = port.counters["kernel_rx_packets"]
            LAST_FEED[:] = [port.feed]
        ep.close()
    return got, sw, stats


@pytest.fixture(autouse=True)
def _fabric() -> Iterator[None]:
    FABRIC.reset()
    yield
    FABRIC.reset()


def test_speed1_rx_timestamps_are_the_recorded_ones(tmp_path: Path) -> None:
    recs = feed_frames(50)
    cap = tmp_path / "md.pcap"
    write(cap, recs)
    got, sw, st = run_app(f"sim:md?pcap={cap}&eof_event=4242", 50)
    udp = [(t, f) for t, f in recs if f[12:14] == b"\x08\x00"]
    assert got == udp  # frames and ns timestamps, exactly
    assert sw == [4242]
    assert st["feed_packets"] == 51 and st["feed_eof"] == 1 and st["feed_loops"] == 1
    assert st["feed_format_errors"] == 0
    assert st["kernel_rx_packets"] == 1  # the ARP went to the kernel


def test_speed1_is_deterministic_and_loops_shift_time(tmp_path: Path) -> None:
    recs = feed_frames(10)
    cap = tmp_path / "md.pcap"
    write(cap, recs)
    a, _, _ = run_app(f"sim:md?pcap={cap}&loop=3&eof_event=1", 30)
    FABRIC.reset()
    b, _, st = run_app(f"sim:md?pcap={cap}&loop=3&eof_event=1", 30)
    assert a == b and len(a) == 30 and st["feed_loops"] == 3 and st["feed_eof"] == 1
    span = recs[-1][0] - recs[0][0] + 1000
    ts = [t for t, _ in a]
    assert ts[10:20] == [t + span for t in ts[:10]] and ts[20:] == [t + 2 * span for t in ts[:10]]
    assert [f for _, f in a[10:20]] == [f for _, f in a[:10]]


def test_speed0_delivers_as_fast_as_polled(tmp_path: Path) -> None:
    recs = feed_frames(300)
    cap = tmp_path / "md.pcap"
    write(cap, recs)
    got, _, st = run_app(f"sim:md?pcap={cap}&speed=0", 300)
    assert [f for _, f in got] == [f for _, f in recs if f[12:14] == b"\x08\x00"]
    ts = [t for t, _ in got]
    assert ts == sorted(ts) and ts[0] != recs[0][0]  # stamped by the virtual wire
    assert st["feed_packets"] == 301


def test_corrupt_capture_stops_at_the_last_good_record(tmp_path: Path) -> None:
    recs = feed_frames(20)
    cap = tmp_path / "md.pcap"
    write(cap, recs)
    cap.write_bytes(cap.read_bytes()[:-7])
    got, sw, st = run_app(f"sim:md?pcap={cap}&eof_event=7", 19)
    assert len(got) == 19 and sw == [7]
    assert st["feed_format_errors"] == 1 and st["feed_eof"] == 1
    feed = LAST_FEED[0]
    assert feed is not None and "offset" in str(getattr(feed, "error", ""))


def test_bad_feed_options_fail_at_open(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="(?i)pcap=.*no such file"):
        Driver.open(f"sim:x?pcap={tmp_path}/missing.pcap")
    with pytest.raises(SetupError, match="speed"):
        Driver.open(f"sim:x?pcap={tmp_path}/missing.pcap&speed=2")
    raw = tmp_path / "raw.pcap"
    with PcapWriter(str(raw), linktype=101) as w:
        w.write(T0, bytes(40))
    with pytest.raises(SetupError, match="Ethernet"):
        Driver.open(f"sim:x?pcap={raw}")
    empty = tmp_path / "empty.pcap"
    write(empty, [])
    with pytest.raises(SetupError, match="no packets"):
        Driver.open(f"sim:x?pcap={empty}")
    assert "x" not in FABRIC.ports  # nothing left behind


def test_demo_from_a_recorded_feed_reproduces_the_recorded_latencies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from efvi.cli.main import main

    rec = tmp_path / "feed.pcapng"
    assert main(["demo", "--json", "-n", "3000", "-w", str(rec)]) == 0
    live = json.loads(capsys.readouterr().out)
    assert main(["demo", "--json", "--from", str(rec)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["rx_packets"] == live["rx_packets"] == 3000
    assert again["gaps"] == 0 and again["out_of_order"] == 0 and again["first_seq"] == 0
    assert again["latency_ns"] == live["latency_ns"]  # the recorded RX timestamps, to the ns
    assert again["feed"]["feed_eof"] == 1 and again["feed"]["feed_packets"] == 3000
    assert main(["demo", "--json", "--from", str(rec), "--speed", "0"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["rx_packets"] == 3000 and fast["gaps"] == 0
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(rec.read_bytes()[:-100])
    assert main(["demo", "--from", str(cut)]) == 1
    out, err = capsys.readouterr()
    # progress lines ("  ... received N") may precede it on a loaded machine; the error is one line
    errors = [ln for ln in err.splitlines() if not ln.startswith("  ... ")]
    assert "received" in out and len(errors) == 1 and "offset" in errors[0], err
