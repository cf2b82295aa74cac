"""efvi rss: per-VI counts and flow stickiness (sim in-process; xdp and packet on a
4-queue veth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from efvi import Driver, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.apps.rss import RssCounter, RssRunner, flow_keys
from efvi.constants import PKT_BUF_SIZE
from efvi.testing import netns
from efvi.wire import udp_frame

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _frames(nflows: int, per: int) -> list[bytes]:
    return [udp_frame("02:00:c6:12:00:0b", "02:00:c6:12:00:0a", "198.18.0.1", "198.18.0.2",
                      10000 + f, 7000, bytes(20))
            for _ in range(per) for f in range(nflows)]


def test_flow_keys_are_per_5_tuple() -> None:
    fr = _frames(3, 2)
    rows = np.zeros((len(fr), 96), np.uint8)
    for i, f in enumerate(fr):
        rows[i, :min(96, len(f))] = np.frombuffer(f[:96], np.uint8)
    keys, is_ip = flow_keys(rows, np.array([len(f) for f in fr]))
    assert is_ip.all()
    assert len(set(keys.tolist())) == 3 and keys[0] == keys[3] and keys[1] != keys[0]


def test_counter_reports_split_flows() -> None:
    fr = _frames(2, 1)
    rows = np.stack([np.frombuffer(f[:60].ljust(96, b"\0"), np.uint8) for f in fr])
    c = RssCounter(2)
    c.add(0, rows, np.array([60, 60]))
    c.add(1, rows[:1], np.array([60]))  # flow 0 again, on another VI
    st = c.stats
    assert st.per_vi == [2, 1] and st.flows == 2 and st.split_flows == 1


def test_sim_vi_set_spreads_by_flow() -> None:
    w = f"rss{os.getpid()}"
    with Driver.open(f"sim:tx{w}?wire={w}") as dtx, \
            RssRunner(f"sim:rx{w}?wire={w}", 4, rxq=512) as r:
        pd = ProtectionDomain(dtx)
        mr = MemoryRegion(pd, 256 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=0, txq=256)
        frames = _frames(64, 20)
        for k in range(0, len(frames), 64):
            chunk = frames[k:k + 64]
            for j, f in enumerate(chunk):
                mr.mv[j * PKT_BUF_SIZE:j * PKT_BUF_SIZE + len(f)] = f
            lens = np.array([len(f) for f in chunk], np.uint32)
            assert vi.transmit_batch(mr.dma_addrs()[:len(chunk)], lens,
                                     np.arange(len(chunk), dtype=np.uint32)) == len(chunk)
            for _ in range(20):
                vi.transmit_completed(vi.poll())
                r.poll_once()
        st = r.counter.stats
        assert st.packets == len(frames) and st.flows == 64 and st.split_flows == 0
        assert sum(1 for p in st.per_vi if p) >= 3  # 64 flows over 4 VIs
        assert sum(st.flows_per_vi) == 64


SEND = """
import socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + i)); socks.append(s)
for rep in range(int(sys.argv[3])):
    for s in socks:
        s.sendto(b"x" * 64, (sys.argv[1], 7000))
    time.sleep(0.005)
"""


@pytest.mark.integration
@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_rss_on_a_4_queue_veth_keeps_each_flow_on_one_vi(adapter: str) -> None:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair(queues=4, subnet=44 if adapter == "xdp" else 45) as p:
        a, b = p.a, p.b
        env = dict(os.environ, PYTHONPATH=SRC)
        rss = a.popen(sys.executable, "-m", "efvi.cli.main", "rss", f"{adapter}:{a.ifname}",
                      "-n", "4", "--idle", "2", "--duration", "40", "--json",
                      "--filter", f"udp:{a.ip}:7000" + (",sniff" if adapter == "packet" else ""),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        assert rss.stderr is not None
        line = rss.stderr.readline()
        assert line.startswith("# rss"), line + rss.stderr.read()
        # several CPUs' worth of senders: veth picks the RX queue from the sender's TX
        # queue, which follows the flow (XPS / flow hash)
        b.run(sys.executable, "-c", SEND, a.ip, "32", "30", env=env)
        out, err = rss.communicate(timeout=60)
        res = json.loads(out)
        assert res["packets"] == 32 * 30, res
        assert res["flows"] == 32 and res["split_flows"] == 0, res
        assert sum(1 for c in res["per_vi"] if c) >= 2, res  # spread over VIs
        assert rss.returncode == 0, err
