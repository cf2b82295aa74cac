"""efvi replay into a veth pair, checked by tcpdump on the peer; -x/-p/-t/-l/-L on the
xdp and packet adapters; the same app on the capture-fed sim port and on packet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from efvi.adapters.sim.port import FABRIC
from efvi.pcap import open_capture
from efvi.testing import netns

sys.path.insert(0, os.path.dirname(__file__))
from test_replay import odd_frames, write_pcap
from test_sim_feed import feed_frames, run_app, write
from xdp_helpers import no_xdp_left, skip_unless_xdp

pytestmark = pytest.mark.integration
_SRC = str(Path(__file__).parent.parent / "src")


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=71) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def efvi_replay(side: netns.Side, *args: str, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
    return side.run(sys.executable, "-m", "efvi.cli.main", "replay", *args, check=False,
                    timeout=timeout, env=dict(os.environ, PYTHONPATH=_SRC))


class Tcpdump:
    """tcpdump -Q in on a side, writing a pcap; stop() returns its frames in order."""

    def __init__(self, side: netns.Side, path: Path) -> None:
        self.path = path
        self.p = side.popen("tcpdump", "-i", side.ifname, "-Q", "in", "-n", "-U", "-s", "0",
                            "--immediate-mode",
                            "-w", str(path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        assert self.p.stderr is not None
        line = self.p.stderr.readline().decode()
        assert "listening on" in line, line

    def stop(self) -> list[bytes]:
        time.sleep(0.3)
        self.p.send_signal(2)
        self.p.wait(timeout=10)
        with open_capture(str(self.path)) as r:
            return [rec.data for rec in r]


def _peer_rx(side: netns.Side) -> int:
    # ip netns exec mounts the namespace's own /sys
    return int(side.run("cat", f"/sys/class/net/{side.ifname}/statistics/rx_packets").stdout)


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_odd_frames_arrive_byte_identical_and_in_order(pair: netns.VethPair, tmp_path: Path,
                                                        adapter: str) -> None:
    frames = odd_frames()
    cap = tmp_path / "odd.pcap"
    write_pcap(cap, [f for f, _ in frames], gap_ns=200_000)
    dump = Tcpdump(pair.b, tmp_path / "peer.pcap")
    res = efvi_replay(pair.a, "-i", f"{adapter}:{pair.a.ifname}", "--json", str(cap))
    got = dump.stop()
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    want = [f for f, what in frames if what == "ok"]
    assert got == want
    assert st["packets"] == len(want) and st["failed"] == 3
    assert st["failed_causes"] == {"runt": 1, "over_buffer": 1, "too_big": 1}
    assert st["vi_stats"]["tx_packets"] == len(want)


def test_rates_loops_and_limits_on_packet(pair: netns.VethPair, tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frames = [bytes(Ether(dst=pair.b.mac, src=pair.a.mac) /
                    IP(src=pair.a.ip, dst=pair.b.ip) / UDP(sport=7, dport=9) /
                    i.to_bytes(4, "big")) for i in range(40)]
    cap = tmp_path / "u.pcap"
    write_pcap(cap, frames, gap_ns=5_000_000)  # 40 frames, 5 ms apart: 195 ms recorded
    url = f"packet:{pair.a.ifname}"
    base = _peer_rx(pair.b)

    t = time.monotonic()
    res = efvi_replay(pair.a, "-i", url, "-x", "4", "--json", str(cap))  # ~49 ms
    took = time.monotonic() - t
    st = json.loads(res.stdout)
    assert res.returncode == 0 and st["packets"] == 40 and st["mode"] == "multiplier"
    assert 0.195 / 4 <= st["seconds"] < took
    assert st["lateness_us"]["p50"] < 5_000

    res = efvi_replay(pair.a, "-i", url, "-p", "1000", "-L", "25", "--json", str(cap))
    st = json.loads(res.stdout)
    assert res.returncode == 0 and st["packets"] == 25 and st["mode"] == "pps"
    assert st["seconds"] >= 0.024

    res = efvi_replay(pair.a, "-i", url, "-t", "-l", "5", "--json", str(cap))
    st = json.loads(res.stdout)
    assert res.returncode == 0 and st["packets"] == 200 and st["loops_done"] == 5
    assert st["lateness_us"] is None and st["mode"] == "topspeed"

    res = efvi_replay(pair.a, "-i", url, "-t", "-l", "0", "-L", "100", str(cap))
    assert res.returncode == 0 and res.stdout.startswith("Actual: 100 packets (")
    deadline = time.monotonic() + 5
    while _peer_rx(pair.b) - base < 40 + 25 + 200 + 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _peer_rx(pair.b) - base == 40 + 25 + 200 + 100


def test_topspeed_and_limit_on_xdp(pair: netns.VethPair, tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    f = bytes(Ether(dst=pair.b.mac, src=pair.a.mac) / IP(src=pair.a.ip, dst=pair.b.ip) /
              UDP(sport=7, dport=9) / bytes(18))
    cap = tmp_path / "u.pcap"
    write_pcap(cap, [f] * 1000, gap_ns=1000)
    base = _peer_rx(pair.b)
    res = efvi_replay(pair.a, "-i", f"xdp:{pair.a.ifname}", "-t", "-l", "0", "-L", "20000",
                      "--json", str(cap))
    st = json.loads(res.stdout)
    assert res.returncode == 0, res.stderr
    assert st["packets"] == 20000 and st["failed"] == 0 and st["loops_done"] >= 20
    deadline = time.monotonic() + 5
    while _peer_rx(pair.b) - base < 20000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _peer_rx(pair.b) - base == 20000


def test_interface_down_mid_run_ends_with_one_line_and_counters(pair: netns.VethPair,
                                                                tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    f = bytes(Ether(dst=pair.b.mac, src=pair.a.mac) / IP(src=pair.a.ip, dst=pair.b.ip) /
              UDP(sport=7, dport=9) / bytes(18))
    cap = tmp_path / "u.pcap"
    write_pcap(cap, [f] * 100, gap_ns=1000)
    p = pair.a.popen(sys.executable, "-m", "efvi.cli.main", "replay", "-i",
                     f"packet:{pair.a.ifname}", "-p", "2000", "-l", "0", str(cap),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     env=dict(os.environ, PYTHONPATH=_SRC))
    assert p.stderr is not None
    assert p.stderr.readline().startswith(b"replay: ")  # sending for a second
    pair.a.run("ip", "link", "set", pair.a.ifname, "down")
    out, err = p.communicate(timeout=30)
    text = out.decode()
    assert p.returncode == 1, (text, err)
    assert text.startswith("Actual: ") and "Failed packets:" in text
    last = err.decode().strip().splitlines()
    assert last[-1].startswith("efvi replay: ") and pair.a.ifname in last[-1]
    assert "Traceback" not in err.decode()


def test_same_app_on_the_capture_fed_sim_and_on_packet(pair: netns.VethPair,
                                                       tmp_path: Path) -> None:
    """The app of test_sim_feed, unchanged: fed by the sim port, then by efvi replay
    through a veth into the packet adapter — the same frames, in the same order."""
    recs = feed_frames(60)
    cap = tmp_path / "md.pcap"
    write(cap, recs)
    FABRIC.reset()
    on_sim, _, _ = run_app(f"sim:md?pcap={cap}", 60)
    FABRIC.reset()
    result: list[list[tuple[int, bytes]]] = []

    def app() -> None:
        with netns.enter(pair.b.netns):
            got, _, _ = run_app(f"packet:{pair.b.ifname}", 60, max_polls=2_000_000)
        result.append(got)

    th = threading.Thread(target=app)
    th.start()
    time.sleep(1.0)  # the app's socket is up
    res = efvi_replay(pair.a, "-i", f"packet:{pair.a.ifname}", "-x", "10", "-q", str(cap))
    th.join(timeout=60)
    assert res.returncode == 0, res.stderr
    assert [f for _, f in result[0]] == [f for _, f in on_sim]
    assert [t for t, _ in on_sim] == [t for t, f in recs if f[12:14] == b"\x08\x00"]
