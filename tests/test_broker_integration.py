"""efvid end to end: unprivileged processes (``nobody``) get VIs through the broker.

Each test starts a broker inside the receiving namespace with its own socket and
policy, runs ``efvi sink`` there as ``nobody`` (setpriv: no capabilities), sends from
the other namespace, and checks what arrived, what was refused and what was left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from efvi.testing import netns

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = dict(os.environ, PYTHONPATH=SRC)
#: for processes run as nobody: no coverage hooks (they cannot write root's data file)
NOBODY_ENV = {k: v for k, v in ENV.items() if not k.startswith("COVERAGE")}
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             "--inh-caps=-all"]


@dataclass
class Broker:
    pair: netns.VethPair
    sock: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return dict(NOBODY_ENV, EFVI_BROKER_SOCKET=self.sock)

    def client(self, *args: str) -> subprocess.Popen[str]:
        return self.pair.b.popen(*AS_NOBODY, sys.executable, "-m", "efvi.cli.main", *args,
                                 env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)

    def send(self, port: int, n: int = 500) -> None:
        a = self.pair.a
        r = a.run(sys.executable, "-m", "efvi.cli.main", "send", "-n", str(n),
                  f"packet:{a.ifname}", self.pair.b.ip, str(port), env=ENV, check=False)
        assert r.returncode == 0, r.stderr


def _policy(ifname: str) -> str:
    return f"""
[[grant]]
name = "tenants"
users = ["nobody"]
interfaces = ["{ifname}"]
filters = ["udp"]
addresses = ["198.18.0.0/15"]
ports = ["5000-5009"]
max_vis = 4
max_memory_mb = 64
"""


@pytest.fixture
def broker() -> Iterator[Broker]:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a client as nobody")
    with netns.veth_pair() as pair:
        d = tempfile.mkdtemp(prefix="efvid-")
        os.chmod(d, 0o755)
        pol = Path(d, "policy.toml")
        pol.write_text(_policy(pair.b.ifname))
        sock = f"{d}/efvid.sock"
        log = Path(d, "efvid.log")
        with open(log, "wb") as lf:
            proc = pair.b.popen(sys.executable, "-m", "efvi.cli.main", "daemon", "--socket",
                                sock, "--policy", str(pol), env=ENV, stderr=lf)
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "efvid did not start"
                time.sleep(0.05)
            yield Broker(pair, sock, proc, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(d, ignore_errors=True)


def _sink(b: Broker, url: str, flt: str, n: int) -> subprocess.Popen[str]:
    p = b.client("sink", "-n", str(n), "--duration", "20", "--json", url, flt)
    deadline = time.monotonic() + 20
    while "total-pkts" not in b.log.read_text() and "filter" not in b.log.read_text():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "sink did not get its filter"
        time.sleep(0.05)
    time.sleep(0.3)
    return p


def _xdp_prog_id(pair: netns.VethPair) -> int:
    r = pair.b.run("ip", "-j", "link", "show", pair.b.ifname)
    return int(json.loads(r.stdout)[0].get("xdp", {}).get("prog", {}).get("id", 0))


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_nobody_receives_through_the_broker(broker: Broker, adapter: str) -> None:
    flt = f"udp:{broker.pair.b.ip}:5001" + (",sniff" if adapter == "packet" else "")
    p = _sink(broker, f"{adapter}:{broker.pair.b.ifname}", flt, 500)
    broker.send(5001, 500)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    res = json.loads(out)
    assert res["rx_packets"] == 500 and res["drops"] == 0
    assert "uid 65534" in broker.log.read_text()  # the grant was logged with the caller


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_refusals_name_the_rule(broker: Broker, adapter: str) -> None:
    url = f"{adapter}:{broker.pair.b.ifname}"
    sfx = ",sniff" if adapter == "packet" else ""
    p = broker.client("sink", "-n", "1", "--duration", "1", url,
                      f"udp:{broker.pair.b.ip}:6000{sfx}")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "refused for user nobody" in err and "'tenants'" in err and "5000-5009" in err
    assert "Traceback" not in err
    p = broker.client("sink", "-n", "1", "--duration", "1", f"{adapter}:lo",
                      f"udp:127.0.0.1:5000{sfx}")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and f"{adapter}:lo is refused" in err, err
    log = broker.log.read_text()
    assert "refuse user nobody" in log and "6000" in log and f"{adapter}:lo" in log


def test_without_a_grant_or_broker(broker: Broker) -> None:
    # another policy file with no grant: default deny
    pol = Path(broker.sock).with_name("empty.toml")
    pol.write_text("")
    sock2 = broker.sock + "2"
    proc = broker.pair.b.popen(sys.executable, "-m", "efvi.cli.main", "daemon", "--socket",
                               sock2, "--policy", str(pol), "--duration", "20", env=ENV,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock2):
            assert proc.poll() is None, "the second efvid exited before listening"
            assert time.monotonic() < deadline, "the second efvid did not start"
            time.sleep(0.05)
        r = broker.pair.b.run(*AS_NOBODY, sys.executable, "-m", "efvi.cli.main", "sink",
                              "-n", "1", f"xdp:{broker.pair.b.ifname}",
                              f"udp:{broker.pair.b.ip}:5000",
                              env=dict(NOBODY_ENV, EFVI_BROKER_SOCKET=sock2), check=False)
        assert r.returncode == 1 and "no grant for user nobody" in r.stderr, r.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # asked for the broker, none running: the error says how to start it
    r = broker.pair.b.run(*AS_NOBODY, sys.executable, "-m", "efvi.cli.main", "sink", "-n",
                          "1", f"xdp:{broker.pair.b.ifname}?broker=1",
                          f"udp:{broker.pair.b.ip}:5000",
                          env=dict(NOBODY_ENV, EFVI_BROKER_SOCKET="/nonexistent/efvid.sock"),
                          check=False)
    assert r.returncode == 1 and "efvid is not running" in r.stderr
    assert "systemctl enable --now efvid" in r.stderr
    # automatic, no broker socket: the direct path's own EPERM, naming efvid as a way out
    r = broker.pair.b.run(*AS_NOBODY, sys.executable, "-m", "efvi.cli.main", "sink", "-n",
                          "1", f"packet:{broker.pair.b.ifname}",
                          f"udp:{broker.pair.b.ip}:5000,sniff",
                          env=dict(NOBODY_ENV, EFVI_BROKER_SOCKET="/nonexistent/efvid.sock"),
                          check=False)
    assert r.returncode == 1 and "CAP_NET_RAW" in r.stderr and "efvid" in r.stderr, r.stderr


def test_killed_client_leaves_nothing_attached(broker: Broker) -> None:
    p = _sink(broker, f"xdp:{broker.pair.b.ifname}", f"udp:{broker.pair.b.ip}:5002", 10**6)
    assert _xdp_prog_id(broker.pair) != 0  # the broker attached the program for it
    os.kill(p.pid, signal.SIGKILL)  # the ip-netns-exec wrapper execs: this is the client
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _xdp_prog_id(broker.pair) != 0 or \
            "disconnected; everything it held is released" not in broker.log.read_text():
        assert time.monotonic() < deadline, "program still attached after the client died"
        time.sleep(0.1)
    # and the queue is free for the next client
    q = _sink(broker, f"xdp:{broker.pair.b.ifname}", f"udp:{broker.pair.b.ip}:5002", 100)
    broker.send(5002, 100)
    out, err = q.communicate(timeout=30)
    assert q.returncode == 0 and json.loads(out)["rx_packets"] == 100, err


def test_two_tenants_see_only_their_flows(broker: Broker) -> None:
    url = f"packet:{broker.pair.b.ifname}"
    ip = broker.pair.b.ip
    t1 = _sink(broker, url, f"udp:{ip}:5003,sniff", 300)
    t2 = _sink(broker, url, f"udp:{ip}:5004,sniff", 200)
    broker.send(5003, 300)
    broker.send(5004, 200)
    o1, e1 = t1.communicate(timeout=30)
    o2, e2 = t2.communicate(timeout=30)
    assert t1.returncode == 0 and t2.returncode == 0, (e1, e2)
    r1, r2 = json.loads(o1), json.loads(o2)
    assert r1["rx_packets"] == 300 and r1["rx_after_limit"] == 0
    assert r2["rx_packets"] == 200 and r2["rx_after_limit"] == 0


def test_garbage_and_half_requests_do_not_stop_the_broker(broker: Broker) -> None:
    from efvi.testing.netns import enter

    with enter(broker.pair.b.netns):
        for junk in (b"\x00\xff garbage", b'{"op": "xdp.socket", "id": 1, "args": {}}',
                     b'{"id": 5, "op": "close", "args": {"adapter": 77}}'):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(broker.sock)
            s.send(junk)
            reply = json.loads(s.recv(70000))
            assert reply["ok"] is False and reply["error"]
            s.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(broker.sock)
        s.close()  # connect and vanish mid-conversation
    # a real client is still served
    p = _sink(broker, f"packet:{broker.pair.b.ifname}", f"udp:{broker.pair.b.ip}:5005,sniff",
              50)
    broker.send(5005, 50)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and json.loads(out)["rx_packets"] == 50, err
    assert broker.proc.poll() is None


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_in_process_client_through_the_broker(broker: Broker, adapter: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same API in this (measured) process, forced through the broker: a second
    filter swaps the packet socket, and every frame still arrives."""
    import threading

    from efvi.apps.sink import Sink
    from efvi.filters import parse_filter

    monkeypatch.setenv("EFVI_BROKER_SOCKET", broker.sock)
    ip, sfx = broker.pair.b.ip, (",sniff" if adapter == "packet" else "")
    with netns.enter(broker.pair.b.netns):
        sink = Sink(f"{adapter}:{broker.pair.b.ifname}?broker=1",
                    [parse_filter(f"udp:{ip}:5006{sfx}")], nbuf=1024, rxq=1024)
    try:
        assert sink.driver.adapter.broker is not None  # type: ignore[attr-defined]
        sink.vi.filter_add(parse_filter(f"udp:{ip}:5007{sfx}"))  # packet: a new socket
        out: list[object] = []
        t = threading.Thread(target=lambda: out.append(sink.run(count=300, duration_s=20)))
        t.start()
        time.sleep(0.5)
        broker.send(5006, 150)
        broker.send(5007, 150)
        t.join(30)
        st = out[0]
        assert st.rx_packets == 300 and st.drops == 0  # type: ignore[attr-defined]
        assert sink.vi.stats().get("rx_swap_drops", 0) == 0
    finally:
        sink.close()
    assert "uid 0" in broker.log.read_text()
