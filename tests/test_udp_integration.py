"""efvi.udp over veth between two namespaces, against kernel UDP sockets.

* kernel sockets exchange datagrams with efvi endpoints both ways (xdp and packet);
* two endpoints on one xdp queue share one VI and each gets only its flow;
* one multicast group reaches two endpoints (user-space replication on xdp);
* selectors and asyncio wake on arrival;
* a second process on the interface gets a clear refusal naming the fix.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from efvi import SetupError, UnsupportedError, udp
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp

pytestmark = pytest.mark.integration


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=74) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _ksock(side: netns.Side, port: int = 0) -> socket.socket:
    with netns.enter(side.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((side.ip, port))
    s.settimeout(5)
    return s


def _open(side: netns.Side, url: str, local: object, **kw: object) -> udp.UdpEndpoint:
    with netns.enter(side.netns):
        return udp.open(url, local, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_kernel_sockets_and_endpoints_both_ways(pair: netns.VethPair, adapter: str) -> None:
    a, b = pair.a, pair.b
    ks = _ksock(b, 7000)
    with _open(a, f"{adapter}:{a.ifname}", (a.ip, 5000)) as ep:
        for k in range(20):  # efvi -> kernel (the kernel checks IP and UDP checksums)
            msg = b"e2k-%d" % k + bytes(k * 50)
            assert ep.sendto(msg, (b.ip, 7000)) == len(msg)
            data, src = ks.recvfrom(4096)
            assert data == b"e2k-%d" % k + bytes(k * 50) and src == (a.ip, 5000)
        for k in range(20):  # kernel -> efvi
            ks.sendto(b"k2e-%d" % k, (a.ip, 5000))
            r = ep.recv(timeout=5)
            assert r is not None
            assert bytes(r[0]) == b"k2e-%d" % k and r[2] == (b.ip, 7000) and r[1] > 0
        st = ep.stats()
        assert st["drops"] == 0 and st["rx_datagrams"] == 20 and st["tx_datagrams"] == 20
    ks.close()


def test_two_endpoints_on_one_xdp_queue_each_get_their_flow(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    ks = _ksock(b)
    url = f"xdp:{a.ifname}@0"
    with _open(a, url, (a.ip, 5000)) as e1, _open(a, url, (a.ip, 5001)) as e2:
        assert e1.stack is e2.stack  # one VI on the one queue
        for k in range(10):
            ks.sendto(b"one-%d" % k, (a.ip, 5000))
            ks.sendto(b"two-%d" % k, (a.ip, 5001))
        got1 = [bytes(r[0]) for r in iter(lambda: e1.recv(timeout=1), None)]
        got2 = [bytes(r[0]) for r in iter(lambda: e2.recv(timeout=1), None)]
        assert got1 == [b"one-%d" % k for k in range(10)]
        assert got2 == [b"two-%d" % k for k in range(10)]
    ks.close()


def test_same_group_reaches_two_endpoints_on_xdp(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    ks = _ksock(b)
    ks.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(b.ip))
    url = f"xdp:{a.ifname}"
    with _open(a, url, (None, 7100), groups=["239.9.9.9"]) as m1, \
            _open(a, url, (None, 7100), groups=["239.9.9.9"]) as m2:
        # the kept kernel socket joined the group (IGMP): the kernel lists it
        maddr = a.run("ip", "maddr", "show", "dev", a.ifname).stdout
        assert "239.9.9.9" in maddr
        for k in range(5):
            ks.sendto(b"grp-%d" % k, ("239.9.9.9", 7100))
        r1 = [bytes(r[0]) for r in iter(lambda: m1.recv(timeout=1), None)]
        r2 = [bytes(r[0]) for r in iter(lambda: m2.recv(timeout=1), None)]
        assert r1 == r2 == [b"grp-%d" % k for k in range(5)]
    assert "239.9.9.9" not in a.run("ip", "maddr", "show", "dev", a.ifname).stdout
    ks.close()


def test_selectors_and_asyncio_wake_on_arrival_xdp(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    ks = _ksock(b)
    with _open(a, f"xdp:{a.ifname}", (a.ip, 5000)) as ep:
        sel = selectors.DefaultSelector()
        sel.register(ep.fileno(), selectors.EVENT_READ)
        assert sel.select(0.05) == []
        ks.sendto(b"sel", (a.ip, 5000))
        assert sel.select(5.0)
        r = ep.recv()
        assert r is not None and bytes(r[0]) == b"sel"
        sel.close()

        async def main() -> list[bytes]:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, ks.sendto, b"async-1", (a.ip, 5000))
            loop.call_later(0.10, ks.sendto, b"async-2", (a.ip, 5000))
            out = []
            async for payload, _ts, _src in ep:
                out.append(bytes(payload))
                if len(out) == 2:
                    break
            return out

        assert asyncio.run(asyncio.wait_for(main(), 5)) == [b"async-1", b"async-2"]
    ks.close()


def test_bad_input_on_a_real_interface(pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    with _open(a, f"xdp:{a.ifname}", (a.ip, 5000)) as ep:
        with pytest.raises(SetupError, match="MTU.*raise the MTU"):
            ep.sendto(bytes(1500), (b.ip, 7000))
        with pytest.raises(SetupError, match="no MAC address for 198.18.74.77.*ip neigh"):
            ep.sendto(b"x", ("198.18.74.77", 7000))
        # a second process on the interface: refused, naming the holder
        code = (f"from efvi import udp\nudp.open('xdp:{a.ifname}', ('{a.ip}', 5001))")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        r = a.run(sys.executable, "-c", code, check=False, env=env)
        assert r.returncode != 0 and f"in use by efvi process {os.getpid()}" in r.stderr
        assert f"stop process {os.getpid()}" in r.stderr
    a.run("ip", "link", "set", "dev", a.ifname, "multicast", "off")
    with pytest.raises(SetupError, match="multicast turned off.*multicast on"):
        _open(a, f"xdp:{a.ifname}", (None, 7100), groups=["239.9.9.8"])


def test_efvi_latency_ping_pong_on_xdp_with_kernel_and_plot(pair: netns.VethPair,
                                                            tmp_path: object) -> None:
    import json
    import pathlib
    a, b = pair.a, pair.b
    png = pathlib.Path(str(tmp_path)) / "lat.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cli = [sys.executable, "-m", "efvi.cli.main", "latency"]
    common = ["-n", "300", "--warm", "50", "-s", "32,256", "--kernel"]
    pong = b.popen(*cli, "pong", f"xdp:{b.ifname}", *common, "--json", env=env,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        r = a.run(*cli, "ping", f"xdp:{a.ifname}", "--peer", b.ip, *common, "--plot", str(png),
                  env=env, check=False, timeout=120)
        assert r.returncode == 0, r.stderr
        out, _ = pong.communicate(timeout=30)
    finally:
        if pong.poll() is None:
            pong.kill()
            pong.wait()
    lines = r.stdout.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln == "#\tpaylen\tmean\tmin\t50%\t95%\t99%\tmax"]
    assert len(heads) == 2  # efvi, then kernel sockets
    for h in heads:
        rows = [ln.split() for ln in lines[h + 1:h + 3]]
        assert [row[0] for row in rows] == ["32", "256"]
        for row in rows:
            v = [float(x) for x in row[1:]]
            assert 0 < v[1] <= v[2] <= v[3] <= v[4] <= v[5]
    assert "p50 ratio efvi/kernel:" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out)["served"] == 2 * 2 * 350



def _code_lines(path: str) -> int:
    """Lines of code: no blank lines, comments or the module docstring."""
    import ast
    src = open(path).read()
    doc = ast.get_docstring(ast.parse(src), clean=False) or ""
    body = src.replace(f'"""{doc}"""', "", 1)
    return sum(1 for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#"))


@pytest.mark.parametrize("name", ["udp_echo", "udp_async"])
def test_echo_examples_and_their_plain_socket_twins(pair: netns.VethPair, name: str) -> None:
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "examples"
    a, b = pair.a, pair.b
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert _code_lines(str(root / f"{name}.py")) < _code_lines(str(root / "plain_socket"
                                                                  / f"{name}.py"))
    ks = _ksock(b)
    for prog, args, port in ((root / f"{name}.py", [f"xdp:{a.ifname}", a.ip, "5000"], 5000),
                             (root / "plain_socket" / f"{name}.py", [a.ip, "5002"], 5002)):
        proc = a.popen(sys.executable, str(prog), *args, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        try:
            got = b""
            for _ in range(50):  # until the server is up
                ks.sendto(b"echo me", (a.ip, port))
                ks.settimeout(0.2)
                try:
                    got = ks.recv(100)
                    break
                except TimeoutError:
                    continue
            assert got == b"echo me", prog
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
        ts, rest = out.splitlines()[-1].split(" ", 1)
        assert int(ts) > 1_600_000_000 * 10**9 and f"('{b.ip}'," in rest and rest.endswith(" 7")
    ks.close()


def test_batch_example_and_its_plain_socket_twin(pair: netns.VethPair) -> None:
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "examples"
    a, b = pair.a, pair.b
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    assert _code_lines(str(root / "udp_batch.py")) < _code_lines(
        str(root / "plain_socket" / "udp_batch.py"))
    ks = _ksock(b)
    ks.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(b.ip))
    for prog, args, port in ((root / "udp_batch.py", [f"xdp:{a.ifname}", "239.7.7.7", "7200"],
                              7200),
                             (root / "plain_socket" / "udp_batch.py", ["239.7.7.8", "7201", a.ip],
                              7201)):
        group = args[-2] if len(args) == 3 and args[0].startswith("xdp") else args[0]
        proc = a.popen(sys.executable, str(prog), *args, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while group not in a.run("ip", "maddr", "show", "dev", a.ifname).stdout:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            time.sleep(0.5)
            for _ in range(100):
                ks.sendto(bytes(10), (group, port))
            time.sleep(1.0)
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
        rows = [[int(x) for x in ln.split()] for ln in out.splitlines()]
        assert sum(r[0] for r in rows) == 100 and sum(r[1] for r in rows) == 1000, prog
    ks.close()


def test_jumbo_datagram_arrives_whole_on_xdp() -> None:
    skip_unless_xdp()
    with netns.veth_pair(subnet=75, mtu=9000) as p:
        a, b = p.a, p.b
        ks = _ksock(b, 7000)
        try:
            with _open(a, f"xdp:{a.ifname}", (a.ip, 5000)) as ep:
                big = bytes((i * 13) & 0xFF for i in range(8972))  # MTU 9000 - 28
                ks.sendto(big, (a.ip, 5000))
                ks.sendto(b"after", (a.ip, 5000))
                r = ep.recv(timeout=5)
                assert r is not None and len(r[0]) == len(big) and bytes(r[0]) == big
                assert r[2] == (b.ip, 7000)
                r2 = ep.recv(timeout=5)
                assert r2 is not None and bytes(r2[0]) == b"after"
                st = ep.stats()
                assert st["rx_jumbo"] == 1 and st["drops"] == 0 and st["rx_packets"] == 2
                # AF_XDP sends one 2 KiB chunk per frame here: a clear refusal beyond it
                with pytest.raises(SetupError, match="at most 2006 bytes"):
                    ep.sendto(bytes(3000), (b.ip, 7000))
        finally:
            ks.close()
            no_xdp_left(a, b)


def test_tx_timestamps_on_packet_and_declared_absent_on_xdp(pair: netns.VethPair) -> None:
    """packet: each send's SO_TIMESTAMPING stamp (error queue) comes back with its TX
    completion, between the clock readings around it; xdp (veth: no AF_XDP TX
    metadata) refuses the flag as declared."""
    a, b = pair.a, pair.b
    ks = _ksock(b, 7002)
    with _open(a, f"packet:{a.ifname}", (a.ip, 5002), tx_timestamps=True) as ep:
        for k in range(10):
            t0 = time.time_ns()
            assert ep.sendto(b"ts-%d" % k, (b.ip, 7002)) == 4
            ts = ep.wait_sent(timeout=5)
            t1 = time.time_ns()
            assert t0 <= ts <= t1, (t0, ts, t1)
            assert ks.recvfrom(64)[0] == b"ts-%d" % k
        st = ep.stats()
        assert st["tx_timestamp_missing"] == 0 and st["drops"] == 0
    with pytest.raises(UnsupportedError, match="no tx timestamps; use the sim or packet"):
        _open(a, f"xdp:{a.ifname}", (a.ip, 5003), tx_timestamps=True)
    ks.close()


def test_pio_send_on_xdp_reaches_a_kernel_socket(pair: netns.VethPair) -> None:
    """xdp: a connected endpoint with pio=True sends from its PIO-staged header
    template (payload and checksums patched in place); the kernel socket, which checks
    both checksums, gets every datagram. packet has no PIO: refused, naming the fix."""
    a, b = pair.a, pair.b
    ks = _ksock(b, 7004)
    with _open(a, f"xdp:{a.ifname}", (a.ip, 5004), remote=(b.ip, 7004), pio=True) as ep:
        for k, n in enumerate([3, 18, 64, 700, 1472, 40]):
            assert ep.send(bytes([65 + k]) * n) == n
            data, src = ks.recvfrom(2048)
            assert data == bytes([65 + k]) * n and src == (a.ip, 5004)
        st = ep.stats()
        assert st["tx_pio"] == 6 and st["drops"] == 0
    with pytest.raises(UnsupportedError, match="no PIO; use sim or xdp"):
        _open(a, f"packet:{a.ifname}", (a.ip, 5005), remote=(b.ip, 7004), pio=True)
    ks.close()
