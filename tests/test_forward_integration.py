"""``efvi forward`` between two veths in a middle namespace: A -> F -> C.

A kernel UDP socket in A sends through the forwarder (AF_XDP on both of F's
interfaces, one UMEM) to a kernel UDP socket in C, which must receive every datagram;
the forwarder must report zero user-space copies.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from efvi.testing import netns

pytestmark = pytest.mark.integration

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = dict(os.environ, PYTHONPATH=SRC)


def _run(side: netns.Side, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", side.netns, *cmd], check=True,
                          capture_output=True, text=True, timeout=60, env=ENV)


def _popen(side: netns.Side, *cmd: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", side.netns, *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


@contextlib.contextmanager
def three_namespaces(subnet: int, mtu_c: int = 1500) -> Iterator[netns.Three]:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.three_namespaces(subnet, mtu_c) as t:
        yield t


RECV = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind(("0.0.0.0", 7000)); s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
seen = set()
try:
    while len(seen) < int(sys.argv[1]):
        d, _ = s.recvfrom(4096); seen.add(int.from_bytes(d[:4], "big"))
except socket.timeout:
    pass
print(len(seen), flush=True)
"""

SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, size = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    s.sendto(i.to_bytes(4, "big") + bytes(size - 4), (sys.argv[1], 7000))
    if i % 64 == 63:
        time.sleep(0.002)
"""


def _forward(t: netns.Three, url_a: str, url_b: str, *extra: str) -> subprocess.Popen[str]:
    p = _popen(t.fa, sys.executable, "-m", "efvi.cli.main", "forward", url_a, url_b,
                "--json", *extra)
    assert p.stderr is not None
    line = p.stderr.readline()
    assert line.startswith("# forward"), line + (p.stderr.read() if p.poll() is not None else "")
    return p


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_three_namespaces_deliver_every_frame(adapter: str) -> None:
    n = 3000
    with three_namespaces(subnet=50 if adapter == "xdp" else 51) as t:
        fwd = _forward(t, f"{adapter}:{t.fa.ifname}", f"{adapter}:{t.fc.ifname}", "--idle", "3",
                       "--duration", "40")
        rx = _popen(t.c, sys.executable, "-c", RECV, str(n), "8")
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        sub = 50 if adapter == "xdp" else 51
        _run(t.a, sys.executable, "-c", SEND, f"198.18.{sub}.2", str(n), "200")
        got = int(rx.communicate(timeout=30)[0].strip())
        out, err = fwd.communicate(timeout=30)
        assert fwd.returncode == 0, err
        res = json.loads(out)
        assert got == n, (got, res)
        d = res["directions"]["A->B"]
        assert d["forwarded"] >= n  # plus any IPv6/other frames A sent
        assert res["mode"] == "zero-copy"
        if adapter == "xdp":
            assert res["user_copies"] == 0
            # B's socket joined A's UMEM across the two devices
            assert res["shared_umem_sockets"] == {"A": 0, "B": 1}
        else:  # packet copies out of its RX ring and into its TX ring
            assert res["user_copies"] == 2 * d["forwarded"]
        assert d["oversize_drops"] == d["tx_full_drops"] == 0


def test_mtu_mismatch_counts_oversize_and_never_sends_cut() -> None:
    with three_namespaces(subnet=52, mtu_c=1000) as t:
        fwd = _forward(t, f"xdp:{t.fa.ifname}", f"xdp:{t.fc.ifname}", "--idle", "2",
                       "--duration", "30")
        rx = _popen(t.c, sys.executable, "-c", RECV, "100", "4")
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        _run(t.a, sys.executable, "-c", SEND, "198.18.52.2", "100", "1200")  # > 1000
        _run(t.a, sys.executable, "-c", SEND, "198.18.52.2", "100", "500")
        got = int(rx.communicate(timeout=30)[0].strip())
        out, err = fwd.communicate(timeout=30)
        res = json.loads(out)
        d = res["directions"]["A->B"]
        assert d["oversize_drops"] == 100, res
        assert got == 100  # only the 500-byte datagrams (C would drop cut frames anyway)


def test_side_going_down_stops_cleanly() -> None:
    with three_namespaces(subnet=53) as t:
        fwd = _forward(t, f"xdp:{t.fa.ifname}", f"xdp:{t.fc.ifname}", "--duration", "30")
        subprocess.run(["ip", "-n", t.fc.netns, "link", "set", t.fc.ifname, "down"], check=True)
        out, err = fwd.communicate(timeout=20)
        assert fwd.returncode == 1, err
        assert "went down" in err and t.fc.ifname in err
        assert json.loads(out)["stopped_by"].startswith("link-down")


def test_both_ways_ping_through_the_forwarder() -> None:
    """--both on xdp: ARP and ICMP cross in both directions (A pings C without
    neighbour entries), zero copies, each direction counted."""
    with three_namespaces(subnet=54) as t:
        for side, peer in ((t.a, t.c), (t.c, t.a)):
            subprocess.run(["ip", "-n", side.netns, "neigh", "del", peer.ip, "dev",
                            side.ifname], capture_output=True)
        fwd = _forward(t, f"xdp:{t.fa.ifname}", f"xdp:{t.fc.ifname}", "--both",
                       "--duration", "30", "--idle", "2")
        ping = subprocess.run(["ip", "netns", "exec", t.a.netns, "ping", "-c", "3", "-i",
                               "0.3", "-W", "2", t.c.ip], capture_output=True, text=True)
        assert ping.returncode == 0 and "3 received" in ping.stdout, ping.stdout
        out, err = fwd.communicate(timeout=30)
        res = json.loads(out)
        d = res["directions"]
        assert d["A->B"]["forwarded"] >= 4 and d["B->A"]["forwarded"] >= 4  # ARP + 3 ICMP
        assert res["user_copies"] == 0 and res["mode"] == "zero-copy"


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_side_deleted_mid_traffic_stops_cleanly(adapter: str) -> None:
    """One side's interface deleted while frames flow: one line naming it, the
    counters so far, exit 1 — no traceback, no hang."""
    with three_namespaces(subnet=56 if adapter == "xdp" else 57) as t:
        fwd = _forward(t, f"{adapter}:{t.fa.ifname}", f"{adapter}:{t.fc.ifname}",
                       "--duration", "30")
        flood = _popen(t.a, sys.executable, "-c", SEND, "198.18.%d.2" % (56 if adapter == "xdp"
                                                                       else 57), "20000", "100")
        time.sleep(0.5)
        subprocess.run(["ip", "-n", t.fc.netns, "link", "del", t.fc.ifname], check=True)
        out, err = fwd.communicate(timeout=20)
        flood.kill()
        flood.communicate()
        assert fwd.returncode == 1, err
        lines = [ln for ln in err.splitlines() if not ln.startswith((" ", "#"))]
        assert "Traceback" not in err and t.fc.ifname in lines[-1], err
        res = json.loads(out)
        assert res["stopped_by"].startswith("link-down"), res
        assert res["directions"]["A->B"]["forwarded"] > 0, res
