"""Interop of the packet adapter with the kernel's own UDP sockets, through the CLI.

* ``efvi sink packet:IF udp:...,sniff`` counts what a kernel UDP socket sends while the
  kernel socket it is addressed to still receives every datagram (sniff semantics);
* ``efvi send packet:IF ...`` frames arrive at a kernel UDP socket (the kernel checks
  the IP and UDP checksums and drops bad ones).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time

import pytest

from efvi.testing import netns

pytestmark = pytest.mark.integration

_CLI = ["-c", "import sys; from efvi.cli.main import main; sys.exit(main())"]


def _need_cli(cmd: str) -> None:
    if importlib.util.find_spec(f"efvi.cli.{cmd}") is None:
        pytest.skip(f"efvi {cmd} is not in this build")


_BURST = 32


def _sock(side: netns.Side, bind: tuple[str, int] | None = None) -> socket.socket:
    with netns.enter(side.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: bursts never overflow
    if bind:
        s.bind(bind)
    return s


def _sink_while_sending(side: netns.Side, ifname: str, dst: str, sender: socket.socket,
                        receiver: socket.socket, n: int) -> tuple[dict[str, object], int, int]:
    """Run ``efvi sink -n n``; send datagrams until it exits. (json, sent, kernel got)."""
    proc = side.popen(sys.executable, *_CLI, "sink", f"packet:{ifname}",
                      f"udp:{dst}:5000,sniff", "-n", str(n), "--json",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receiver.setblocking(False)
    sent = got = 0
    deadline = time.monotonic() + 20
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # bursts: one poll sees many frames, so -n must cut inside a batch
            for _ in range(_BURST):
                sender.sendto(b"seq-%06d" % sent, (dst, 5000))
                sent += 1
            time.sleep(0.02)
            while True:
                try:
                    data = receiver.recv(100)
                except BlockingIOError:
                    break
                assert data == b"seq-%06d" % got
                got += 1
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    receiver.settimeout(2)
    while got < sent:
        assert receiver.recv(100) == b"seq-%06d" % got
        got += 1
    return json.loads(out.decode().strip().splitlines()[-1]), sent, got


def test_efvi_sink_sniffs_while_kernel_socket_receives(veth: netns.VethPair) -> None:
    _need_cli("sink")
    a, b = veth.a, veth.b
    rx = _sock(a, (a.ip, 5000))
    tx = _sock(b)
    res, sent, got = _sink_while_sending(a, a.ifname, a.ip, tx, rx, 50)
    assert res["rx_packets"] == 50, res  # exactly -n, though bursts of 32 arrive together
    assert res["clock"] == "sw"
    assert got == sent >= 50, "the kernel socket lost datagrams the sink sniffed"


def test_efvi_sink_on_lo(veth: netns.VethPair) -> None:
    _need_cli("sink")
    ns = veth.a.netns
    subprocess.run(["ip", "-n", ns, "addr", "add", "198.18.43.1/32", "dev", "lo"], check=True,
                   capture_output=True)
    rx = _sock(veth.a, ("198.18.43.1", 5000))
    tx = _sock(veth.a)
    res, sent, got = _sink_while_sending(veth.a, "lo", "198.18.43.1", tx, rx, 30)
    assert res["rx_packets"] == 30, res
    assert got == sent >= 30


def test_efvi_send_reaches_kernel_socket(veth: netns.VethPair) -> None:
    _need_cli("send")
    a, b = veth.a, veth.b
    rx = _sock(b, (b.ip, 8000))
    rx.settimeout(5)
    r = a.run(sys.executable, *_CLI, "send", f"packet:{a.ifname}", b.ip, "8000", "-n", "100",
              "-m", "64", "--json", check=False)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["tx_packets"] == 100
    got = [rx.recvfrom(2048) for _ in range(100)]
    assert all(len(d) == 64 and src[0] == a.ip for d, src in got)
    rx.settimeout(0.2)
    with pytest.raises(socket.timeout):
        rx.recv(2048)
