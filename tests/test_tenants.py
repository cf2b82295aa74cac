"""Tenants on one interface: several PDs (processes) each receive only their own
flows and cannot touch another's buffers (issue 13, deliverable 5): packet (processes),
sim (PDs in one process: a sim port lives in one process), xdp (processes on their own
RX queues through efvid; see docs/design.md, "Processes on one interface")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from efvi import Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.constants import PKT_BUF_SIZE
from efvi.testing import netns
from efvi.wire import udp_frame

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def test_sim_tenants_own_flows_and_own_memory() -> None:
    w = f"ten{os.getpid()}"
    with Driver.open(f"sim:tx{w}?wire={w}") as dtx, Driver.open(f"sim:rx{w}?wire={w}") as drx:
        tenants = []
        for port in (6001, 6002):
            pd = ProtectionDomain(drx)  # one PD per tenant on the same port
            mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
            vi = VirtualInterface(pd, rxq=64, txq=0)
            vi.filter_add(FilterSpec.ip4_local("udp", "198.18.9.2", port))
            vi.receive_post_batch(mr.dma_addrs()[:63], np.arange(63, dtype=np.uint32))
            tenants.append((pd, mr, vi, port))
        # a tenant cannot post (so cannot read) another tenant's buffers
        (_, mr1, _, _), (_, _, vi2, _) = tenants[0], tenants[1]
        assert vi2.receive_post(mr1.dma_addr(0), 1) < 0
        tpd = ProtectionDomain(dtx)
        tmr = MemoryRegion(tpd, 64 * PKT_BUF_SIZE)
        tvi = VirtualInterface(tpd, rxq=0, txq=64)
        for k in range(40):
            f = udp_frame("02:00:00:00:00:02", "02:00:00:00:00:01", "198.18.9.1",
                          "198.18.9.2", 1000 + k, 6001 + k % 2, k.to_bytes(2, "big"))
            tmr.mv[k * PKT_BUF_SIZE:k * PKT_BUF_SIZE + len(f)] = f
            assert tvi.transmit(tmr.dma_addr(k * PKT_BUF_SIZE), len(f), k) == 0
        got: dict[int, list[int]] = {6001: [], 6002: []}
        for _ in range(20):
            tvi.eventq_poll()
            for _, mr, vi, port in tenants:
                for ev in vi.eventq_poll():
                    if ev.type == EventType.RX:
                        frame = mr.read(mr.dma_addr(ev.rq_id * PKT_BUF_SIZE + ev.ofs), ev.len)
                        got[port].append(int.from_bytes(frame[36:38], "big"))
        assert got[6001] == [6001] * 20 and got[6002] == [6002] * 20


@pytest.mark.integration
def test_packet_tenants_are_processes_with_their_own_flows() -> None:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=SRC)
    with netns.veth_pair(subnet=46) as p:
        a, b = p.a, p.b
        sinks = [a.popen(sys.executable, "-m", "efvi.cli.main", "sink", "--json",
                         "--duration", "4", f"packet:{a.ifname}", f"udp:{a.ip}:{port},sniff",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
                 for port in (7001, 7002)]
        for s in sinks:
            assert s.stderr is not None
            assert "pkt-rate" in s.stderr.readline()
        b.run(sys.executable, "-c",
              "import socket,time\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for i in range(100):\n"
              f"    s.sendto(b'x' * 32, ({a.ip!r}, 7001 + i % 2)); time.sleep(0.001)\n", env=env)
        res = [json.loads(s.communicate(timeout=30)[0]) for s in sinks]
        # each tenant saw exactly its 50 datagrams and nothing of the other's
        assert [r["rx_packets"] for r in res] == [50, 50], res


# ---- xdp: tenants per RX queue, through efvid ---------------------------------------------
# One XDP program per interface (efvi_<pid> of the process that attached it), one AF_XDP
# socket (fill ring) per RX queue: several processes share an interface on xdp through
# efvid, which owns the program and grants each client its own queue, its own UMEM (the
# client's sealed memfd) and filters steering only to its own sockets.

TENANT_POLICY = """
[[grant]]
name = "tenants"
users = ["nobody"]
interfaces = ["{ifname}"]
adapters = ["xdp"]
queues = [0, 1]
filters = ["udp"]
addresses = ["198.18.0.0/15"]
ports = ["5000-5009"]
max_vis = 2
max_memory_mb = 64
"""


@pytest.mark.integration
def test_xdp_tenants_per_rx_queue_through_efvid() -> None:
    """Two unprivileged processes on queues 0 and 1 of a 2-queue veth, each with its
    own UMEM: each gets only its own flow (the other tenant's flow on its queue stays
    with the kernel); `efvi info` names each queue's holder; a third asking for a held
    queue is refused naming the holder's pid."""
    import shutil
    import signal
    import tempfile
    import time
    from pathlib import Path

    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run tenants as nobody")
    env = dict(os.environ, PYTHONPATH=SRC)
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
              "--inh-caps=-all"]
    with netns.veth_pair(queues=2, subnet=54) as p:
        a, b = p.a, p.b
        d = tempfile.mkdtemp(prefix="efvid-")
        os.chmod(d, 0o755)
        pol = Path(d, "policy.toml")
        pol.write_text(TENANT_POLICY.format(ifname=a.ifname))
        sock = f"{d}/efvid.sock"
        log = Path(d, "efvid.log")
        with open(log, "wb") as lf:
            efvid = a.popen(sys.executable, "-m", "efvi.cli.main", "daemon", "--socket",
                            sock, "--policy", str(pol), env=env, stderr=lf)
        tenants: list[subprocess.Popen[str]] = []
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                assert efvid.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "efvid did not start"
                time.sleep(0.05)
            cenv = {k: v for k, v in env.items() if not k.startswith("COVERAGE")}
            cenv["EFVI_BROKER_SOCKET"] = sock
            for q in (0, 1):
                t = a.popen(*nobody, sys.executable, "-m", "efvi.cli.main", "sink", "--json",
                            "--duration", "60", f"xdp:{a.ifname}@{q}",
                            f"udp:{a.ip}:{5000 + q}", env=cenv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
                tenants.append(t)
                assert t.stderr is not None
                line = t.stderr.readline()
                assert "pkt-rate" in line, line + t.stderr.read()
            # each queue is held by its tenant, and efvi info says so
            r = a.run(sys.executable, "-m", "efvi.cli.main", "info", a.ifname, "--json",
                      "--no-packet", env=env)
            prog = json.loads(r.stdout)["interfaces"][0]["xdp_program"]
            assert prog["efvi_pid"] == efvid.pid
            holders = {h["queue"]: h["pid"] for h in prog["queue_holders"]}
            assert holders == {0: tenants[0].pid, 1: tenants[1].pid}, prog
            # a third process asking for queue 0 is refused, naming the holder
            r3 = a.run(*nobody, sys.executable, "-m", "efvi.cli.main", "sink", "-n", "1",
                       "--duration", "2", f"xdp:{a.ifname}@0", f"udp:{a.ip}:5002",
                       env=cenv, check=False)
            assert r3.returncode == 1
            assert f"queue 0 of {a.ifname} is held by another efvid client " \
                   f"(pid {tenants[0].pid})" in r3.stderr, r3.stderr
            # flow 5000 arrives on queue 0, flow 5001 on queue 1 (veth delivers on the
            # sender's TX queue); then each flow on the other tenant's queue too
            for q, port, n in ((0, 5000, 300), (1, 5001, 200), (1, 5000, 70), (0, 5001, 50)):
                s = b.run(sys.executable, "-m", "efvi.cli.main", "send", "-n", str(n),
                          "--dmac", a.mac, f"xdp:{b.ifname}@{q}", a.ip, str(port), env=env,
                          check=False)
                assert s.returncode == 0, s.stderr
            time.sleep(1.0)
            res = []
            for t in tenants:
                t.send_signal(signal.SIGTERM)
                out, err = t.communicate(timeout=30)
                assert t.returncode == 0, err
                res.append(json.loads(out))
            # each tenant got exactly its own flow on its own queue, nothing else
            assert [r["rx_packets"] for r in res] == [300, 200], res
        finally:
            for t in tenants:
                if t.poll() is None:
                    t.kill()
                    t.wait()
            efvid.send_signal(signal.SIGTERM)
            try:
                efvid.wait(timeout=15)
            except subprocess.TimeoutExpired:
                efvid.kill()
                efvid.wait()
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
def test_xdp_pd_addresses_name_only_its_own_umem() -> None:
    """On xdp a PD is one UMEM and its DMA addresses are offsets in it: the same
    number in two PDs names two different buffers, and an address past the PD's own
    memory is refused — no VI can be pointed at another tenant's buffers."""
    from xdp_helpers import skip_unless_xdp
    skip_unless_xdp()
    with netns.veth_pair(queues=2, subnet=55) as p:
        with netns.enter(p.a.netns):
            d = Driver.open(f"xdp:{p.a.ifname}")
        try:
            vis, mrs = [], []
            for q in (0, 1):
                pd = ProtectionDomain(d)
                mrs.append(MemoryRegion(pd, 64 * PKT_BUF_SIZE))
                vis.append(VirtualInterface(pd, rxq=64, txq=0, queue=q))
            mrs[0].mv[:4] = b"one!"
            mrs[1].mv[:4] = b"two!"
            assert mrs[0].dma_addr(0) == mrs[1].dma_addr(0)  # per-PD offsets
            assert mrs[1].read(mrs[1].dma_addr(0), 4) == b"two!"
            end = mrs[1].dma_addr(0) + 64 * PKT_BUF_SIZE
            assert vis[1].receive_post(end, 1) < 0
            assert vis[1].receive_post(1 << 40, 2) < 0
            assert vis[1].receive_post(mrs[1].dma_addr(0), 3) == 0
        finally:
            d.close()
