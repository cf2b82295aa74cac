"""Tenants on one interface: several PDs (processes) each receive only their own
flows and cannot touch another's buffers (issue 13, deliverable 5; packet and sim)."""

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
