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
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from efvi.testing import netns

pytestmark = pytest.mark.integration

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = dict(os.environ, PYTHONPATH=SRC)


@dataclass(frozen=True)
class Three:
    ns_a: str
    ns_f: str
    ns_c: str
    if_a: str  # in A
    if_fa: str  # in F, facing A
    if_fc: str  # in F, facing C
    if_c: str  # in C

    def run(self, ns: str, *cmd: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=check,
                              capture_output=True, text=True, timeout=timeout, env=ENV)

    def popen(self, ns: str, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@contextlib.contextmanager
def three_namespaces(subnet: int = 50, mtu_c: int = 1500) -> Iterator[Three]:
    """A --veth-- F --veth-- C; A is 198.18.<subnet>.1, C .2, one L2 segment through F
    (whose interfaces have no addresses). Torn down on exit, also on failure."""
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}{subnet}"
    t = Three(f"efA{os.getpid()}_f{tag}", f"efB{os.getpid()}_f{tag}",
              f"efA{os.getpid()}_c{tag}", f"fa{tag}", f"ff{tag}", f"fg{tag}", f"fc{tag}")
    made: list[str] = []
    try:
        for ns in (t.ns_a, t.ns_f, t.ns_c):
            _ip("netns", "add", ns)
            made.append(ns)
            netns._live.add(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", t.if_a, "netns", t.ns_a, "type", "veth", "peer", "name", t.if_fa,
            "netns", t.ns_f)
        _ip("link", "add", t.if_fc, "netns", t.ns_f, "type", "veth", "peer", "name", t.if_c,
            "netns", t.ns_c)
        mac_a, mac_c = f"02:00:c6:12:{subnet:02x}:01", f"02:00:c6:12:{subnet:02x}:02"
        for ns, ifn, mac, ip_, peer_ip, peer_mac in (
                (t.ns_a, t.if_a, mac_a, f"198.18.{subnet}.1", f"198.18.{subnet}.2", mac_c),
                (t.ns_c, t.if_c, mac_c, f"198.18.{subnet}.2", f"198.18.{subnet}.1", mac_a)):
            _ip("-n", ns, "link", "set", ifn, "address", mac)
            _ip("-n", ns, "addr", "add", f"{ip_}/24", "dev", ifn)
            _ip("-n", ns, "link", "set", ifn, "up")
            _ip("-n", ns, "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", ifn,
                "nud", "permanent")
        # a veth hands locally sent frames on with the UDP checksum still partial (TX
        # offload); a forwarder outside the kernel sends the bytes as they are, so the
        # sender must compute it (a real NIC would, on the wire)
        subprocess.run(["ip", "netns", "exec", t.ns_a, "ethtool", "-K", t.if_a, "tx", "off"],
                       capture_output=True, check=True)
        _ip("-n", t.ns_c, "link", "set", t.if_c, "mtu", str(mtu_c))
        _ip("-n", t.ns_f, "link", "set", t.if_fc, "mtu", str(mtu_c))
        for ifn in (t.if_fa, t.if_fc):
            _ip("-n", t.ns_f, "link", "set", ifn, "up")
        for ns in (t.ns_a, t.ns_f, t.ns_c):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv6.conf.all.disable_ipv6=1"], capture_output=True)
        yield t
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)
            netns._live.discard(ns)


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


def _forward(t: Three, url_a: str, url_b: str, *extra: str) -> subprocess.Popen[str]:
    p = t.popen(t.ns_f, sys.executable, "-m", "efvi.cli.main", "forward", url_a, url_b,
                "--json", *extra)
    assert p.stderr is not None
    line = p.stderr.readline()
    assert line.startswith("# forward"), line + (p.stderr.read() if p.poll() is not None else "")
    return p


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_three_namespaces_deliver_every_frame(adapter: str) -> None:
    n = 3000
    with three_namespaces(subnet=50 if adapter == "xdp" else 51) as t:
        fwd = _forward(t, f"{adapter}:{t.if_fa}", f"{adapter}:{t.if_fc}", "--idle", "3",
                       "--duration", "40")
        rx = t.popen(t.ns_c, sys.executable, "-c", RECV, str(n), "8")
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        sub = 50 if adapter == "xdp" else 51
        t.run(t.ns_a, sys.executable, "-c", SEND, f"198.18.{sub}.2", str(n), "200")
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
        fwd = _forward(t, f"xdp:{t.if_fa}", f"xdp:{t.if_fc}", "--idle", "2", "--duration", "30")
        rx = t.popen(t.ns_c, sys.executable, "-c", RECV, "100", "4")
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        t.run(t.ns_a, sys.executable, "-c", SEND, "198.18.52.2", "100", "1200")  # > 1000
        t.run(t.ns_a, sys.executable, "-c", SEND, "198.18.52.2", "100", "500")
        got = int(rx.communicate(timeout=30)[0].strip())
        out, err = fwd.communicate(timeout=30)
        res = json.loads(out)
        d = res["directions"]["A->B"]
        assert d["oversize_drops"] == 100, res
        assert got == 100  # only the 500-byte datagrams (C would drop cut frames anyway)


def test_side_going_down_stops_cleanly() -> None:
    with three_namespaces(subnet=53) as t:
        fwd = _forward(t, f"xdp:{t.if_fa}", f"xdp:{t.if_fc}", "--duration", "30")
        _ip("-n", t.ns_f, "link", "set", t.if_fc, "down")
        out, err = fwd.communicate(timeout=20)
        assert fwd.returncode == 1, err
        assert "went down" in err and t.if_fc in err
        assert json.loads(out)["stopped_by"].startswith("link-down")
