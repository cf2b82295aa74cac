"""Bad input and faults on the packet adapter: each is a SetupError naming the fix."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from efvi import Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.adapters.packet import ring
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError
from efvi.testing import netns

pytestmark = pytest.mark.integration


def _open(side: netns.Side, query: str = "", ifname: str | None = None) -> Driver:
    with netns.enter(side.netns):
        return Driver.open(f"packet:{ifname or side.ifname}{query}")


def test_missing_interface(veth: netns.VethPair) -> None:
    with pytest.raises(SetupError) as ei:
        _open(veth.a, ifname="nosuch0")
    assert ei.value.errno == errno.ENODEV and "ip link" in ei.value.hint


def test_no_interface_in_url() -> None:
    with pytest.raises(SetupError, match="needs an interface"):
        Driver.open("packet:")


def test_interface_down(veth: netns.VethPair) -> None:
    veth.a.run("ip", "link", "set", veth.a.ifname, "down")
    with pytest.raises(SetupError) as ei:
        _open(veth.a)
    assert ei.value.errno == errno.ENETDOWN
    assert f"ip link set {veth.a.ifname} up" in ei.value.hint


@pytest.mark.parametrize("query,what", [("?ts=bogus", "ts="), ("?ring=abc", "ring="),
                                        ("?snaplen=10", "snaplen=")])
def test_bad_options(veth: netns.VethPair, query: str, what: str) -> None:
    with pytest.raises(SetupError, match=what):
        _open(veth.a, query)


def test_missing_cap_net_raw(veth: netns.VethPair) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux setpriv to drop CAP_NET_RAW")
    code = ("import sys\n"
            "from efvi import Driver\n"
            "from efvi.errors import SetupError\n"
            f"try:\n    Driver.open('packet:{veth.a.ifname}')\n"
            "except SetupError as e:\n    print('ERR', e.errno, e); sys.exit(3)\n"
            "print('opened')\n")
    r = veth.a.run("setpriv", "--bounding-set", "-net_raw", "--", sys.executable, "-c", code,
                   check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"ERR {errno.EPERM}" in r.stdout and "CAP_NET_RAW" in r.stdout


def test_ring_beyond_kernel_limit(veth: netns.VethPair) -> None:
    d = _open(veth.a, "?ring=4000000")
    try:
        pd = ProtectionDomain(d)
        with pytest.raises(SetupError, match="4 GiB") as ei:
            VirtualInterface(pd)
        assert "ring=N" in ei.value.hint
    finally:
        d.close()


def test_ring_too_large_for_memory(veth: netns.VethPair,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring, "mem_available", lambda: 16 << 20)
    d = _open(veth.a, "?ring=8192")  # 16 MiB of slots: more than half of "16 MiB"
    try:
        pd = ProtectionDomain(d)
        with pytest.raises(SetupError) as ei:
            VirtualInterface(pd)
        assert ei.value.errno == errno.ENOMEM and "ring=N" in ei.value.hint
        VirtualInterface(pd, rxq=0, txq=64)  # a TX-only VI still fits
    finally:
        d.close()


def test_filter_beyond_bpf_limit_keeps_the_old_program(veth: netns.VethPair) -> None:
    a, b = veth.a, veth.b
    d = _open(a)
    try:
        pd = ProtectionDomain(d)
        mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=64)
        vi.receive_post_batch(mr.dma_addrs()[:63], np.arange(63, dtype=np.uint32))
        vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000).sniff())
        with pytest.raises(SetupError) as ei:
            for p in range(300):
                vi.filter_add(FilterSpec.ip4_full("udp", a.ip, 5001, b.ip, 10000 + p).sniff())
        # the kernel's limits: 4096 classic instructions (we check before asking), and
        # net.core.optmem_max bytes for the program once translated (ENOMEM)
        assert ei.value.errno in (errno.E2BIG, errno.ENOMEM) and "xdp" in ei.value.hint
        if ei.value.errno == errno.ENOMEM:
            assert "optmem_max" in ei.value.hint
        n_ok = len(vi.filters)
        assert 100 < n_ok < 300
        # the refused filter is not installed; the others still work
        with netns.enter(b.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((b.ip, 10000))
        s.sendto(b"first", (a.ip, 5000))
        s.sendto(b"full", (a.ip, 5001))
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            got += [mr.read(mr.dma_base + e.rq_id * PKT_BUF_SIZE, e.len)[42:]
                    for e in vi.eventq_poll() if e.type == EventType.RX]
        assert got == [b"first", b"full"]
        s.close()
    finally:
        d.close()


def test_close_is_idempotent_and_releases_sockets(veth: netns.VethPair) -> None:
    d = _open(veth.a)
    pd = ProtectionDomain(d)
    vi = VirtualInterface(pd)
    vi.filter_add(FilterSpec.port_sniff())
    fds_before = len(os.listdir("/proc/self/fd"))
    d.close()
    d.close()
    assert len(os.listdir("/proc/self/fd")) < fds_before
    out = subprocess.run(["ip", "netns", "exec", veth.a.netns, "cat", "/proc/net/packet"],
                         capture_output=True, text=True, check=True).stdout
    assert len(out.strip().splitlines()) == 1, f"packet sockets left open:\n{out}"
