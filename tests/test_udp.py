"""efvi.udp on the sim adapter: socket-like receive/send, demultiplexing by the filter
that matched, multicast replication, batches, fileno/selectors/asyncio, jumbo chains,
and the errors bad input gets."""

from __future__ import annotations

import asyncio
import itertools
import selectors
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import ClosedError, SetupError, udp
from efvi.adapters.sim.port import FABRIC

_n = itertools.count()


@pytest.fixture
def wire() -> Iterator[str]:
    name = f"udpw{next(_n)}"
    yield name
    FABRIC.flush()


def _pair(wire: str, mtu: int = 1500) -> tuple[udp.UdpEndpoint, udp.UdpEndpoint]:
    a = udp.open(f"sim:{wire}a?wire={wire}&ip=198.18.9.1&mtu={mtu}", ("198.18.9.1", 5000))
    b = udp.open(f"sim:{wire}b?wire={wire}&ip=198.18.9.2&mtu={mtu}", ("198.18.9.2", 6000))
    return a, b


def test_sendto_recv_both_ways(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        assert b.recv() is None
        assert a.sendto(b"hello", ("198.18.9.2", 6000)) == 5
        r = b.recv(timeout=1)
        assert r is not None
        payload, ts, src = r
        assert bytes(payload) == b"hello" and src == ("198.18.9.1", 5000) and ts > 0
        b.sendto(bytes(range(200)), src)
        r2 = a.recv(timeout=1)
        assert r2 is not None and bytes(r2[0]) == bytes(range(200))
        assert r2[2] == ("198.18.9.2", 6000) and r2[1] > ts
        assert a.stats()["drops"] == 0


def test_connected_send_and_iteration(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        a.connect(("198.18.9.2", 6000))
        for k in range(5):
            a.send(b"%d" % k)
        got = []
        for payload, _ts, _src in b:
            got.append(bytes(payload))
            if len(got) == 5:
                break
        assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_recv_batch_columns(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        sent = [bytes([k]) * (10 + k) for k in range(40)]
        assert a.send_batch(sent, ("198.18.9.2", 6000)) == 40
        bt = b.recv_batch(64)
        assert len(bt) == 40
        assert [bytes(bt.payload(i)) for i in range(40)] == sent
        assert (bt.src_port == 5000).all()
        assert (bt.src_ip == int.from_bytes(socket.inet_aton("198.18.9.1"), "big")).all()
        assert (np.diff(bt.ts_ns) >= 0).all()
        assert len(b.recv_batch()) == 0


def test_two_endpoints_one_vi_each_gets_its_flow(wire: str) -> None:
    a, b = _pair(wire)
    b2 = udp.open(f"sim:{wire}b?wire={wire}&ip=198.18.9.2", ("198.18.9.2", 6001))
    with a, b, b2:
        assert b2.stack is b.stack  # one VI underneath
        for k in range(6):
            a.sendto(b"to6000-%d" % k, ("198.18.9.2", 6000))
            a.sendto(b"to6001-%d" % k, ("198.18.9.2", 6001))
        got1 = [bytes(r[0]) for r in iter(lambda: b.recv(timeout=0.5), None)]
        got2 = [bytes(r[0]) for r in iter(lambda: b2.recv(timeout=0.5), None)]
        assert got1 == [b"to6000-%d" % k for k in range(6)]
        assert got2 == [b"to6001-%d" % k for k in range(6)]


def test_same_group_on_two_endpoints_is_replicated(wire: str) -> None:
    a, b = _pair(wire)
    url = f"sim:{wire}b?wire={wire}&ip=198.18.9.2"
    m1 = udp.open(url, (None, 7000), groups=["239.1.2.3"])
    m2 = udp.open(url, (None, 7000), groups=["239.1.2.3", "239.1.2.4"])
    with a, b, m1, m2:
        a.sendto(b"g3", ("239.1.2.3", 7000))
        a.sendto(b"g4", ("239.1.2.4", 7000))
        r1 = [bytes(r[0]) for r in iter(lambda: m1.recv(timeout=0.3), None)]
        r2 = [bytes(r[0]) for r in iter(lambda: m2.recv(timeout=0.3), None)]
        assert r1 == [b"g3"] and r2 == [b"g3", b"g4"]
        # the shared buffer went back to the ring once both were done with it
        assert m1.stack.vi.receive_fill_level() == m1.stack.vi.receive_capacity()


def test_selectors_and_asyncio_wake_on_arrival(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        sel = selectors.DefaultSelector()
        sel.register(b.fileno(), selectors.EVENT_READ)
        assert sel.select(0.05) == []
        a.sendto(b"wake", ("198.18.9.2", 6000))
        assert sel.select(1.0)
        r = b.recv()
        assert r is not None and bytes(r[0]) == b"wake"
        sel.close()

        async def main() -> bytes:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, a.sendto, b"async", ("198.18.9.2", 6000))
            payload, _, _ = await asyncio.wait_for(b.arecv(), 2.0)
            return bytes(payload)

        assert asyncio.run(main()) == b"async"


def test_jumbo_datagram_reassembled_from_a_chain(wire: str) -> None:
    a, b = _pair(wire, mtu=9000)
    with a, b:
        big = bytes(np.arange(8000, dtype=np.uint8) * 7)
        assert a.sendto(big, ("198.18.9.2", 6000)) == 8000
        r = b.recv(timeout=1)
        assert r is not None and bytes(r[0]) == big
        assert b.stats()["rx_jumbo"] == 1


@pytest.mark.parametrize("local,kw,words", [
    (("198.18.9.1", 0), {}, "not a UDP port"),
    (("198.18.9.1", 70000), {}, "not a UDP port"),
    (("198.18.9.300", 5000), {}, "not an IPv4 address"),
    (("198.18.77.1", 5000), {}, "not an address of"),
    ((None, 5000), {"groups": ["198.18.9.9"]}, "not a multicast group"),
    ((None, 5000), {"groups": ["239.1.1"]}, "not an IPv4 address"),
])
def test_bad_addresses_name_the_fix(wire: str, local: tuple[str, int],
                                    kw: dict[str, object], words: str) -> None:
    with pytest.raises(SetupError, match=words) as ei:
        udp.open(f"sim:{wire}a?wire={wire}&ip=198.18.9.1", local, **kw)
    assert " — " in str(ei.value)  # a hint follows


def test_payload_larger_than_mtu_and_use_after_close(wire: str) -> None:
    a, b = _pair(wire)
    with b:
        with pytest.raises(SetupError, match="1500-byte MTU.*raise the MTU"):
            a.sendto(bytes(1473), ("198.18.9.2", 6000))
        assert a.sendto(bytes(1472), ("198.18.9.2", 6000)) == 1472
        a.close()
        a.close()  # idempotent
        with pytest.raises(ClosedError):
            a.recv()
        with pytest.raises(ClosedError):
            a.sendto(b"x", ("198.18.9.2", 6000))
        with pytest.raises(ClosedError):
            a.fileno()
        with pytest.raises(SetupError, match="no remote"):
            b.send(b"x")


def test_same_port_twice_in_one_process(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        with pytest.raises(SetupError, match="already has an endpoint"):
            udp.open(f"sim:{wire}a?wire={wire}&ip=198.18.9.1", ("198.18.9.1", 5000))


def test_poll_rx1_takes_whole_frames_and_leaves_the_rest(wire: str) -> None:
    a, b = _pair(wire)
    with a, b:
        vi = b.stack.vi
        assert vi.poll_rx1() == -1
        a.sendto(b"one", ("198.18.9.2", 6000))
        i = vi.poll_rx1()
        while i == -2:  # sim: a's TX completion is not in b's queue, but be safe
            vi.poll(1)
            i = vi.poll_rx1()
        assert i >= 0
        ofs, ln, ts = vi.rx1
        assert ln == 60 and ts > 0
        frame = bytes(b.stack.mv[i * 2048 + ofs:i * 2048 + ofs + ln])
        assert frame[42:45] == b"one"
        vi.receive_post(b.stack.base + i * 2048, i)
        # a's own queue starts with its TX completion: poll_rx1 says "harvest it"
        assert a.stack.vi.poll_rx1() == -2


def test_latency_cli_prints_the_eflatency_table_on_sim(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from efvi.cli.main import main
    assert main(["latency", "ping", f"sim:lat{next(_n)}", "-n", "300", "--warm", "20",
                 "-s", "0,64"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = lines.index("#\tpaylen\tmean\tmin\t50%\t95%\t99%\tmax")
    rows = [ln.split() for ln in lines[head + 1:head + 3]]
    assert [r[0] for r in rows] == ["0", "64"]
    vals = [[float(x) for x in r[1:]] for r in rows]
    for v in vals:  # the virtual clock: every round trip takes the same time
        assert v[1] <= v[2] <= v[3] <= v[4] <= v[5] and v[1] > 0
    assert vals[1][2] > vals[0][2]  # a longer frame takes longer on the wire
    assert "clock: virtual" in out and "mean round-trip time:" in out


def test_latency_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from efvi.cli.main import main
    assert main(["latency", "ping", "sim", "-n", "0"]) == 2
    assert main(["latency", "ping", "sim", "-s", "1:x"]) == 2
    assert "bad payload sizes" in capsys.readouterr().err


def test_latency_plot_without_matplotlib_says_how(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from efvi.cli.main import main
    monkeypatch.setitem(__import__('sys').modules, "matplotlib", None)
    assert main(["latency", "ping", "sim", "-n", "10", "--plot", "x.png"]) == 2
    assert "pip install 'efvi[plot]'" in capsys.readouterr().err


def test_latency_ping_stops_on_sigint_with_a_summary() -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "efvi.cli.main", "latency", "ping",
                          "sim:sigint", "-n", "10000000", "--warm", "0"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "mean round-trip time:" in out


def test_latency_pio_on_sim_sends_from_the_pio_area(capsys: pytest.CaptureFixture[str]) -> None:
    from efvi.cli.main import main
    assert main(["latency", "ping", f"sim:pio{next(_n)}", "-n", "200", "--warm", "5",
                 "-s", "32", "--pio", "--json"]) == 0
    import json
    obj = json.loads(capsys.readouterr().out)
    assert obj["tx_mode"] == "pio" and obj["results"][0]["n"] == 200
    assert obj["results"][0]["50%"] > 0


def test_tx_timestamps_come_back_with_completions(wire: str) -> None:
    url = f"sim:{wire}a?wire={wire}&ip=198.18.9.1"
    a = udp.open(url, ("198.18.9.1", 5000), tx_timestamps=True)
    b = udp.open(f"sim:{wire}b?wire={wire}&ip=198.18.9.2", ("198.18.9.2", 6000))
    with a, b:
        assert a.last_tx_ts_ns == 0
        stamps = []
        for k in range(3):
            a.sendto(b"t%d" % k, ("198.18.9.2", 6000))
            stamps.append(a.wait_sent())
            r = b.recv(timeout=1)
            assert r is not None and bytes(r[0]) == b"t%d" % k
            assert 0 < stamps[-1] <= r[1], "sent after it arrived?"
        assert stamps == sorted(set(stamps)), "one stamp per send, increasing"
        # a plain endpoint on a stack without them: no stamp, and a later opener on
        # that stack cannot ask for them (one VI is shared)
        b.sendto(b"x", ("198.18.9.1", 5000))
        assert b.wait_sent() == 0
        with pytest.raises(SetupError, match="tx_timestamps=True"):
            udp.open(f"sim:{wire}b?wire={wire}&ip=198.18.9.2", ("198.18.9.2", 6001),
                     tx_timestamps=True)


def test_connected_send_from_pio_staged_frames(wire: str) -> None:
    b = udp.open(f"sim:{wire}b?wire={wire}&ip=198.18.9.2", ("198.18.9.2", 6000))
    a = udp.open(f"sim:{wire}a?wire={wire}&ip=198.18.9.1", ("198.18.9.1", 5000),
                 remote=("198.18.9.2", 6000), pio=True)
    with a, b:
        sizes = [1, 17, 18, 100, 1472, 5, 300]
        for k, n in enumerate(sizes):
            assert a.send(bytes([k]) * n) == n
            r = b.recv(timeout=1)
            assert r is not None and bytes(r[0]) == bytes([k]) * n
            assert r[2] == ("198.18.9.1", 5000)
        st = a.stats()
        assert st["tx_pio"] == len(sizes) and st["drops"] == 0
        # the frame really went from the PIO area: the last one is still staged there
        pio = a.stack.vi.pio
        staged = bytes(pio.mv[0:2 * 1536])
        assert bytes([6]) * 300 in staged
        # sendto another destination and payloads over a slot take TX buffers
        a.sendto(b"x" * 40, ("198.18.9.2", 6000))  # same remote via sendto: PIO too
        assert a.stats()["tx_pio"] == len(sizes) + 1
        assert a.send_batch([b"y" * 20, b"z" * 20]) == 2
        assert a.stats()["tx_pio"] == len(sizes) + 1
        got = [bytes(b.recv(timeout=1)[0]) for _ in range(3)]  # type: ignore[index]
        assert got == [b"x" * 40, b"y" * 20, b"z" * 20]
