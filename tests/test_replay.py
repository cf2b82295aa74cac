"""efvi replay on the sim adapter: frames as recorded, counters, limits, loops, faults,
and the CLI's tcpreplay-style output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from efvi import Driver
from efvi.adapters.sim.port import FABRIC
from efvi.cli.main import main
from efvi.filters import FilterSpec
from efvi.pcap import PcapNgWriter, PcapWriter
from efvi.replay import Pacing, ReplayError, ReplaySender, replay
from efvi.testing.conformance import Endpoint, collect

T0 = 1_700_000_000_000_000_000


def odd_frames() -> list[tuple[bytes, str]]:
    """(frame, what) — what ``ok`` frames must arrive as they are; the rest are
    counted by cause and never sent."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

    a, b = "02:00:c6:12:00:01", "02:00:c6:12:00:02"
    ip = IP(src="198.18.0.1", dst="198.18.0.2")
    return [
        (bytes(Ether(dst=b, src=a) / ip / UDP(sport=1, dport=9) / b"plain"), "ok"),
        (bytes(Ether(dst=b, src=a) / Dot1Q(vlan=5) / ip / UDP(sport=2, dport=9) / b"vlan"), "ok"),
        (bytes(Ether(dst=b, src=a, type=0x88A8) / Dot1AD(vlan=7) / Dot1Q(vlan=8) / ip /
               UDP(sport=3, dport=9) / b"qinq"), "ok"),
        (bytes(Ether(dst=b, src=a) / IPv6(src="2001:2::1", dst="2001:2::2") /
               IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / UDP(sport=4, dport=9) / b"v6ext"),
         "ok"),
        (bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=a) /
               ARP(psrc="198.18.0.1", pdst="198.18.0.2", hwsrc=a)), "ok"),  # 42 bytes
        (bytes(Ether(dst=b, src=a, type=0x88B5) / b"local experimental ethertype"), "ok"),
        (bytes(Ether(dst=b, src=a) / ip / UDP(sport=5, dport=9) / bytes(1600)), "too_big"),
        (bytes(Ether(dst=b, src=a) / Dot1Q(vlan=5) / ip / UDP(sport=6, dport=9) /
               bytes(1500 - 28)), "ok"),  # 1518 bytes: MTU + a tag
        (bytes(Ether(dst=b, src=a) / ip / UDP(sport=7, dport=9) / bytes(9000)), "over_buffer"),
        (bytes.fromhex("0200c6120002") + b"runt", "runt"),  # 10 bytes
        (bytes(Ether(dst=b, src=a) / ip / UDP(sport=8, dport=9) / b"last"), "ok"),
    ]


def write_pcap(path: Path, frames: list[bytes], gap_ns: int = 1000, nanosecond: bool = True,
               pcapng: bool = False) -> None:
    if pcapng:
        with PcapNgWriter(str(path)) as w:
            w.add_interface(linktype=1, snaplen=65535, tsresol=9)
            for i, f in enumerate(frames):
                w.write(T0 + i * gap_ns, f)
        return
    with PcapWriter(str(path), nanosecond=nanosecond, snaplen=65535) as w:
        for i, f in enumerate(frames):
            w.write(T0 + i * gap_ns, f)


class SimPeer:
    """The other end of a sim wire: a VI sniffing everything its port receives."""

    def __init__(self, wire: str, nbuf: int = 2048) -> None:
        self.drv = Driver.open(f"sim:peer{wire}?wire={wire}")
        self.ep = Endpoint(self.drv, nbuf=nbuf, rxq=nbuf, txq=64)
        self.ep.vi.filter_add(FilterSpec.port_sniff())
        self.ep.post(range(nbuf - 1))

    def frames(self, want: int, timeout: float = 5.0) -> list[bytes]:
        evs = collect(self.ep.vi, want, timeout)
        return [self.ep.mr.read(self.ep.addr(e[1]) + e[5], e[2]) for e in evs if e[0] == 0]

    def close(self) -> None:
        self.ep.close()
        self.drv.close()


@pytest.fixture
def wire() -> Iterator[str]:
    FABRIC.reset()
    yield f"w{os.getpid()}"
    FABRIC.reset()


def test_frames_arrive_as_recorded_and_bad_ones_are_counted(tmp_path: Path, wire: str) -> None:
    frames = odd_frames()
    cap = tmp_path / "odd.pcap"
    write_pcap(cap, [f for f, _ in frames])
    peer = SimPeer(wire)
    st = replay(f"sim:tx?wire={wire}", [str(cap)], pacing=Pacing(topspeed=True))
    want = [f for f, what in frames if what == "ok"]
    assert peer.frames(len(want)) == want
    assert st.attempted == len(frames) and st.successful == len(want)
    assert st.failed_causes == {"too_big": 1, "over_buffer": 1, "runt": 1}
    assert st.failed == 3 and st.bytes_sent == sum(map(len, want))
    assert st.vi_stats["tx_packets"] == st.successful  # the VI's counters agree
    peer.close()


def test_timed_replay_keeps_order_and_reports_lateness(tmp_path: Path, wire: str) -> None:
    cap = tmp_path / "t.pcap"
    frames = [f for f, what in odd_frames() if what == "ok"]
    write_pcap(cap, frames, gap_ns=2_000_000)  # 2 ms gaps
    peer = SimPeer(wire)
    t = time.monotonic()
    st = replay(f"sim:tx?wire={wire}", [str(cap)])
    took = time.monotonic() - t
    assert peer.frames(len(frames)) == frames
    assert took >= 2e-3 * (len(frames) - 1)  # it waited for the recorded gaps
    lat = st.lateness.summary_us()
    assert st.lateness.count == len(frames) and lat["min"] >= 0 and lat["max"] >= lat["p50"]
    peer.close()


def test_limit_loops_and_several_files_in_order(tmp_path: Path, wire: str) -> None:
    f1 = [f for f, what in odd_frames() if what == "ok"]
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcapng"
    write_pcap(a, f1[:3])
    write_pcap(b, f1[3:5], pcapng=True)
    peer = SimPeer(wire)
    st = replay(f"sim:tx?wire={wire}", [str(a), str(b)], pacing=Pacing(topspeed=True), loops=3)
    assert peer.frames(15) == (f1[:5]) * 3 and st.loops_done == 3
    st = replay(f"sim:tx?wire={wire}", [str(a), str(b)], pacing=Pacing(pps=5000), loops=0,
                limit=7)
    assert peer.frames(7) == (f1[:5] + f1[:2]) and st.successful == 7
    peer.close()


def test_mac_rewrite_and_fixcsum(tmp_path: Path, wire: str) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    good = Ether(dst="02:00:c6:12:00:02", src="02:00:c6:12:00:01") / \
        IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2) / b"hello"
    bad = bytearray(bytes(good))
    bad[24:26] = b"\0\0"   # IPv4 header checksum
    bad[40:42] = b"\x12\x34"  # UDP checksum
    cap = tmp_path / "c.pcap"
    write_pcap(cap, [bytes(bad)])
    peer = SimPeer(wire)
    replay(f"sim:tx?wire={wire}", [str(cap)], pacing=Pacing(topspeed=True),
           dmac="02:00:c6:12:00:99", smac="02:00:c6:12:00:98", fixcsum=True)
    got = peer.frames(1)[0]
    expect = Ether(dst="02:00:c6:12:00:99", src="02:00:c6:12:00:98") / \
        IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2) / b"hello"
    assert got == bytes(expect)
    peer.close()


def test_corrupt_file_sends_every_good_record_then_fails_with_the_offset(
        tmp_path: Path, wire: str, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [f for f, what in odd_frames() if what == "ok"]
    cap = tmp_path / "cut.pcap"
    write_pcap(cap, frames)
    data = cap.read_bytes()
    cap.write_bytes(data[:-10])  # the last record is cut short
    peer = SimPeer(wire)
    with pytest.raises(ReplayError, match="offset") as ei:
        replay(f"sim:tx?wire={wire}", [str(cap)], pacing=Pacing(topspeed=True))
    assert ei.value.stats.successful == len(frames) - 1
    assert peer.frames(len(frames) - 1) == frames[:-1]
    rc = main(["replay", "-i", f"sim:tx?wire={wire}", "-t", str(cap)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"Actual: {len(frames) - 1} packets" in out
    assert "efvi replay:" in err and "offset" in err and len(err.strip().splitlines()) == 1
    peer.close()


def test_cli_summary_and_json(tmp_path: Path, wire: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    frames = odd_frames()
    cap = tmp_path / "odd.pcap"
    write_pcap(cap, [f for f, _ in frames], gap_ns=100_000)
    peer = SimPeer(wire)
    assert main(["replay", "-i", f"sim:tx?wire={wire}", "-x", "4", "-q", str(cap)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Actual: 8 packets (") and "sent in" in out[0]
    assert out[1].startswith("Rated: ") and "Mbps" in out[1] and out[1].endswith(" pps")
    assert out[2].startswith("Lateness: min ")
    assert "Statistics for network device: tx" in out
    assert "\tFailed packets:            3 (runt=1, over_buffer=1, too_big=1)" in out
    assert "\tRetried packets (EAGAIN):  0" in out
    assert main(["replay", "-i", f"sim:tx?wire={wire}", "-p", "20000", "-l", "2", "--json",
                 str(cap)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["packets"] == 16 and res["failed"] == 6 and res["loops_done"] == 2
    assert res["mode"] == "pps" and res["lateness_us"]["max"] >= res["lateness_us"]["min"]
    assert len(peer.frames(24)) == 24
    peer.close()


def test_usage_and_setup_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "-i", "sim", "-t", "-x", "2", "f.pcap"]) == 2
    assert main(["replay", "-i", "sim", "-l", "-1", "f.pcap"]) == 2
    assert main(["replay", "-i", "sim", "-x", "0", "f.pcap"]) == 2
    assert main(["replay", "-i", "sim?bogus=1", "f.pcap"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(e.startswith("efvi replay: ") for e in err)
    rc = main(["replay", "-i", "sim", str(tmp_path / "missing.pcap")])
    err = capsys.readouterr().err
    assert rc == 1 and "no such file" in err
    raw = tmp_path / "raw.pcap"
    with PcapWriter(str(raw), linktype=101) as w:
        w.write(T0, bytes(40))
    rc = main(["replay", "-i", "sim", str(raw)])
    assert rc == 1 and "link type" in capsys.readouterr().err


def test_sigint_prints_the_summary_so_far(tmp_path: Path) -> None:
    cap = tmp_path / "s.pcap"
    write_pcap(cap, [f for f, what in odd_frames() if what == "ok"])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent / "src"))
    p = subprocess.Popen([sys.executable, "-m", "efvi.cli.main", "replay", "-i", "sim",
                          "-p", "2000", "-l", "0", str(cap)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stderr is not None
    line = p.stderr.readline()  # the first progress line: it is sending
    assert line.startswith("replay: "), line
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert out.startswith("Actual: ") and "Successful packets:" in out
    n = int(out.split()[1])
    assert n > 1000


def test_sender_counts_adapter_tx_errors(tmp_path: Path, wire: str) -> None:
    frames = [f for f, what in odd_frames() if what == "ok"]
    cap = tmp_path / "e.pcap"
    write_pcap(cap, frames)
    peer = SimPeer(wire)
    with ReplaySender(f"sim:tx?wire={wire}") as snd:
        FABRIC.ports["tx"].fail_next_tx = 1  # the first doorbell completes with TX_ERROR
        st = replay("", [str(cap)], pacing=Pacing(topspeed=True), sender=snd)
    vst = st.vi_stats
    assert st.successful + st.failed == len(frames)
    assert st.failed_causes.get("tx_error", 0) == sum(
        v for k, v in vst.items() if k.startswith("tx_") and k.endswith("_drops"))
    peer.close()


def test_a_long_recorded_gap_does_not_delay_a_stop(tmp_path: Path) -> None:
    from efvi.apps.common import StopFlag

    frames = [f for f, what in odd_frames() if what == "ok"][:2]
    cap = tmp_path / "gap.pcap"
    write_pcap(cap, frames, gap_ns=60 * 10**9)  # the second frame is a minute later
    stop = StopFlag()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    t = time.monotonic()
    st = replay("sim", [str(cap)], stop=stop)
    assert time.monotonic() - t < 5
    assert st.successful == 1 and st.attempted == 1


def test_stdin_plays_and_loops(tmp_path: Path) -> None:
    frames = [f for f, what in odd_frames() if what == "ok"]
    cap = tmp_path / "in.pcap"
    write_pcap(cap, frames)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent / "src"))
    with open(cap, "rb") as f:
        r = subprocess.run([sys.executable, "-m", "efvi.cli.main", "replay", "-i", "sim", "-t",
                            "-l", "3", "--json", "-"], stdin=f, capture_output=True, text=True,
                           env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["packets"] == 3 * len(frames) and res["loops_done"] == 3
