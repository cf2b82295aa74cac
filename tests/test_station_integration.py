"""``efvi station`` on a veth pair, checked with ping, ping -6, arping and a kernel UDP
socket in the peer namespace, while the kernel's own address keeps answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from efvi.testing import netns

pytestmark = pytest.mark.integration

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = dict(os.environ, PYTHONPATH=SRC)
STATION = "198.18.41.10"
STATION6 = "fd00:198:18::10"


@pytest.fixture
def pair6() -> Iterator[netns.VethPair]:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair(subnet=41) as p:
        for s, ip6 in ((p.a, "fd00:198:18::1"), (p.b, "fd00:198:18::2")):
            s.run("sysctl", "-qw", f"net.ipv6.conf.{s.ifname}.disable_ipv6=0")
            s.run("ip", "addr", "add", f"{ip6}/64", "dev", s.ifname, "nodad")
        yield p


def _station(side: netns.Side, *args: str, adapter: str = "packet") -> subprocess.Popen[bytes]:
    return side.popen(sys.executable, "-m", "efvi.cli.main", "station", f"{adapter}:{side.ifname}",
                      *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def _wait_header(p: subprocess.Popen[bytes]) -> None:
    assert p.stderr is not None
    line = p.stderr.readline().decode()  # with --json progress goes to stderr
    assert line.startswith("# station"), line


@pytest.mark.parametrize("adapter", ["packet", "xdp"])
def test_ping_ping6_arping_udp_answered_kernel_still_answers(pair6: netns.VethPair,
                                                             adapter: str) -> None:
    """On xdp the station steals its frames with the precise bpf filters; on packet it
    sniffs them. Either way the kernel keeps answering for its own address."""
    a, b = pair6.a, pair6.b
    st = _station(a, "--ip", f"{STATION}/24", "--ipv6", STATION6, "--udp-echo", "7",
                  "--duration", "30", "--json", adapter=adapter)
    try:
        _wait_header(st)
        ping = b.run("ping", "-c", "3", "-i", "0.2", "-W", "2", STATION, check=False)
        assert ping.returncode == 0 and "3 received" in ping.stdout, ping.stdout + ping.stderr
        ping6 = b.run("ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", STATION6, check=False)
        assert ping6.returncode == 0 and "3 received" in ping6.stdout, ping6.stdout
        arp = b.run("arping", "-c", "2", "-I", b.ifname, STATION, check=False)
        assert arp.returncode == 0 and a.mac in arp.stdout.lower(), arp.stdout + arp.stderr
        udp = b.run(sys.executable, "-c",
                    "import socket,sys\n"
                    "for fam, host in ((socket.AF_INET, sys.argv[1]),\n"
                    "                  (socket.AF_INET6, sys.argv[2])):\n"
                    "    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3)\n"
                    "    s.sendto(b'echo me', (host, 7)); d, src = s.recvfrom(100)\n"
                    "    assert d == b'echo me' and src[1] == 7, (d, src)\n"
                    "print('ok')", STATION, STATION6, check=False)
        assert udp.stdout.strip() == "ok", udp.stderr
        # the kernel's own addresses still answer (ARP/ND for them is not taken)
        b.run("ip", "neigh", "del", a.ip, "dev", b.ifname)  # the fixture's permanent entry
        b.run("ip", "neigh", "flush", "dev", b.ifname)
        own = b.run("ping", "-c", "2", "-i", "0.2", "-W", "2", a.ip, check=False)
        assert own.returncode == 0 and "2 received" in own.stdout, own.stdout
        assert a.mac in b.run("ip", "neigh", "show", a.ip, "dev", b.ifname).stdout
        own6 = b.run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:198:18::1",
                     check=False)
        assert own6.returncode == 0 and "2 received" in own6.stdout, own6.stdout
    finally:
        st.send_signal(signal.SIGTERM)
        out, err = st.communicate(timeout=20)
    assert st.returncode == 0, err.decode()
    res = json.loads(out)
    c = res["counters"]
    assert c["icmp_echo"] >= 3 and c["icmp6_echo"] >= 3 and c["udp_echo"] == 2
    assert c["arp_replies_sent"] >= 2 and c["ndp_adverts_sent"] >= 1
    assert c["arp_gratuitous_sent"] == 1 and res["conflicts"] == []


def test_refuses_the_kernels_own_address(pair6: netns.VethPair) -> None:
    a = pair6.a
    p = _station(a, "--ip", f"{a.ip}/24", "--duration", "5")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1  # a runtime error (the interface's state), not a usage error
    msg = err.decode().strip()
    assert msg.count("\n") == 0 and f"{a.ip} is already the kernel's address on {a.ifname}" in msg


def test_link_down_mid_run_stops_cleanly(pair6: netns.VethPair) -> None:
    a = pair6.a
    st = _station(a, "--ip", f"{STATION}/24", "--duration", "30", "--json")
    _wait_header(st)
    a.run("ip", "link", "set", a.ifname, "down")
    t0 = time.monotonic()
    out, err = st.communicate(timeout=20)
    assert time.monotonic() - t0 < 10
    assert st.returncode == 1, err.decode()
    assert "went down" in err.decode()
    assert json.loads(out)["stopped_by"] == "link-down"


def test_ping_flood_answers_stay_within_the_rate(pair6: netns.VethPair) -> None:
    """A peer flooding ICMP (ping -f with a preload) gets at most --rate answers a
    second (plus the burst); the rest are counted, and the kernel's own address still
    answers meanwhile."""
    a, b = pair6.a, pair6.b
    st = _station(a, "--ip", f"{STATION}/24", "--rate", "50", "--duration", "30", "--json",
                  adapter="xdp")
    try:
        _wait_header(st)
        t0 = time.monotonic()
        flood = b.run("ping", "-f", "-l", "20", "-w", "2", "-W", "1", STATION, check=False)
        flood_s = time.monotonic() - t0
        sent = int(flood.stdout.split(" packets transmitted")[0].split()[-1])
        got = int(flood.stdout.split(" received")[0].split()[-1])
        own = b.run("ping", "-c", "2", "-i", "0.2", "-W", "2", a.ip, check=False)
        assert own.returncode == 0 and "2 received" in own.stdout, own.stdout
    finally:
        st.send_signal(signal.SIGTERM)
        out, err = st.communicate(timeout=20)
    assert st.returncode == 0, err.decode()
    c = json.loads(out)["counters"]
    assert sent > 200, flood.stdout  # a flood, not a trickle
    # the station's token bucket: 50 a second plus a burst of 50 (ARP has its own);
    # every request is counted once: answered (icmp_echo) or dropped by the limit
    assert 0.95 * sent <= c["icmp_echo"] + c["icmp_rate_drops"] <= sent, (c, flood.stdout)
    assert got <= c["icmp_echo"] <= 50 * flood_s + 50 + 1, (c, flood_s)
    assert c["icmp_rate_drops"] > 0


def test_arp_conflict_is_reported(pair6: netns.VethPair) -> None:
    """A peer claiming the station's address (arping's unsolicited ARP with the
    station's address as its source, from another MAC) is reported: the conflict
    names the address and the claimant, exit 1."""
    a, b = pair6.a, pair6.b
    st = _station(a, "--ip", f"{STATION}/24", "--duration", "30", "--json")
    try:
        _wait_header(st)
        # "who-has STATION tell STATION" from the peer's MAC (arping -S: source IP);
        # the station answers nobody (it would answer itself) — only the claim counts
        b.run("arping", "-U", "-S", STATION, "-c", "2", "-W", "0.1", "-I", b.ifname, STATION,
              check=False)
        time.sleep(0.5)
    finally:
        st.send_signal(signal.SIGTERM)
        out, err = st.communicate(timeout=20)
    assert st.returncode == 1, err.decode()  # a conflict is a runtime problem
    res = json.loads(out)
    assert res["counters"]["arp_conflicts"] >= 1, res
    assert {"address": STATION, "mac": b.mac} in res["conflicts"], res
