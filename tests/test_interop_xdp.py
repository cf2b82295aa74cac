"""Interop of the xdp adapter with programs no one here wrote.

* a kernel UDP socket in the peer namespace sends; ``efvi sink xdp:...`` steals and
  receives exactly what was sent (every datagram once, in order, bytes intact) while
  the local kernel socket gets the datagrams before and after the filter's lifetime;
* ``efvi send xdp:...`` frames reach a kernel UDP socket (the kernel verifies the IP
  and UDP checksums: ``InCsumErrors`` stays 0);
* ``ping`` through the same interface keeps working while a UDP filter steals a port;
* after each test ``ip link`` shows no XDP program on either side.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import Driver, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.events import EventType
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp

pytestmark = pytest.mark.integration
_CLI = ["-m", "efvi.cli.main"]


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=60) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _sock(side: netns.Side, bind: tuple[str, int] | None = None) -> socket.socket:
    with netns.enter(side.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: never overflow here
    if bind:
        s.bind(bind)
    return s


def _hexdump_payloads(text: str) -> list[bytes]:
    """Frames of ``efvi sink -d`` output (hexdump lines after each ``len=`` line)."""
    frames: list[bytearray] = []
    for line in text.splitlines():
        if " len=" in line and "flags=" in line:
            frames.append(bytearray())
        elif frames and line.startswith("  ") and len(line.split()) > 1:
            frames[-1] += bytes.fromhex("".join(line.split()[1:]))
    return [bytes(f) for f in frames]


def test_efvi_sink_steals_exactly_what_a_kernel_socket_sent(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    local = _sock(a, (a.ip, 5000))  # the kernel's own socket for the port
    local.setblocking(False)
    tx = _sock(b)
    n = 50
    proc = a.popen(sys.executable, *_CLI, "sink", f"xdp:{a.ifname}", f"udp:{a.ip}:5000",
                   "-n", str(n), "-d", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # bursts: one poll sees many frames, so -n must cut inside a batch
            for _ in range(32):
                tx.sendto(b"seq-%06d" % sent, (a.ip, 5000))
                sent += 1
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().strip().splitlines()
    res = json.loads(lines[-1])
    assert res["rx_packets"] == n and res["clock"] == "xdp-sw", res
    assert res["drops"] == 0, res
    frames = _hexdump_payloads(out.decode() + err.decode())  # -d dumps go to stderr
    assert len(frames) == n
    stolen = [f[42:] for f in frames]
    first = int(stolen[0][4:])
    assert stolen == [b"seq-%06d" % i for i in range(first, first + n)], "not what was sent"
    for f in frames:  # headers intact: our MACs and addresses, UDP port 5000
        assert f[0:6] == bytes.fromhex(a.mac.replace(":", ""))
        assert socket.inet_ntoa(f[26:30]) == b.ip and f[36:38] == (5000).to_bytes(2, "big")
    # the kernel socket got everything else: before the filter, and after sink exited
    tx.sendto(b"last", (a.ip, 5000))
    kernel: list[bytes] = []
    local.settimeout(5)
    while True:
        d = local.recv(100)
        if d == b"last":
            break
        kernel.append(d)
    # frames after the n-th that XDP stole (harvested in the last batch, or still in the
    # ring when the sink exited) reach neither; all others went to the kernel, in order
    late = first + n + res["rx_after_limit"]
    assert kernel[:first] == [b"seq-%06d" % i for i in range(first)]
    rest = [int(d[4:]) for d in kernel[first:]]
    assert rest == sorted(rest) and all(i >= late for i in rest), (first, n, rest[:5])


def test_efvi_send_reaches_a_kernel_socket_with_good_checksums(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    rx = _sock(b, (b.ip, 7777))
    rx.settimeout(5)
    n = 300
    r = a.run(sys.executable, *_CLI, "send", f"xdp:{a.ifname}", b.ip, "7777", "-n", str(n),
              "-m", "64", "--json", check=False)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["tx_packets"] == n and res["completed"] == n
    got = 0
    while got < n:
        data = rx.recv(2048)
        assert len(data) == 64
        got += 1
    snmp = b.run("cat", "/proc/net/snmp").stdout.splitlines()
    udp = dict(zip(snmp[-4].split()[1:], map(int, snmp[-3].split()[1:])))
    assert udp["InCsumErrors"] == 0 and udp["InErrors"] == 0


def test_ping_keeps_working_while_a_udp_filter_steals_a_port(pair: netns.VethPair) -> None:
    if shutil.which("ping") is None:
        pytest.skip("needs ping (apt-get install iputils-ping)")
    a, b = pair.a, pair.b
    with netns.enter(a.netns):
        drv = Driver.open(f"xdp:{a.ifname}")
    try:
        pd = ProtectionDomain(drv)
        mr = MemoryRegion(pd, 64 * 2048)
        vi = VirtualInterface(pd)
        vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000))
        vi.receive_post_batch(mr.dma_addrs(), np.arange(64, dtype=np.uint32))
        r = b.run("ping", "-c", "3", "-i", "0.2", "-W", "2", a.ip, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert " 0% packet loss" in r.stdout
        tx = _sock(b)
        tx.sendto(b"stolen", (a.ip, 5000))
        deadline = time.monotonic() + 5
        evs: list[object] = []
        while not evs and time.monotonic() < deadline:
            evs = [e for e in vi.eventq_poll(8) if e.type == EventType.RX]
        assert evs, "the UDP filter did not steal its port"
        e = evs[0]
        o = e.rq_id * 2048 + e.ofs  # type: ignore[attr-defined]
        assert bytes(mr.mv[o + 42:o + 48]) == b"stolen"
        r = b.run("ping", "-c", "2", "-i", "0.2", "-W", "2", a.ip, check=False)
        assert r.returncode == 0, r.stdout
    finally:
        drv.close()
    assert "xdp" not in a.run("ip", "link", "show", "dev", a.ifname).stdout
