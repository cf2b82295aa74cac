"""Issue 9 on the xdp adapter: wrong hints (15, 17) and ts=hw (12), on a veth pair."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from efvi import (Driver, FilterSpec, ProtectionDomain, SetupError, UnsupportedError,
                  VirtualInterface)
from efvi.adapters.xdp import netlink as xnl
from efvi.adapters.xdp.link import detach_command
from efvi.adapters.xdp.program import FTABLE_SIZE
from efvi.bpf import ebpf as asm
from efvi.bpf import syscall as bpf
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp, xdp_attached

pytestmark = pytest.mark.integration


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=91) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _open(side: netns.Side, url: str) -> Driver:
    with netns.enter(side.netns):
        return Driver.open(url)


def test_12_ts_hw_without_hardware_stamps_is_refused(pair: netns.VethPair) -> None:
    # veth runs the device-bound kfunc program but its driver has no hardware stamps:
    # ts=hw used to run on software stamps silently; now it refuses, like packet
    with pytest.raises(UnsupportedError, match="no raw hardware RX timestamps.*ts=sw"):
        _open(pair.a, f"xdp:{pair.a.ifname}?ts=hw")
    assert xdp_attached(pair.a) == ""


@pytest.mark.parametrize("mode,word", [("skb", "xdpgeneric"), ("drv", "xdpdrv")])
def test_17_busy_hint_gives_the_command_for_the_attached_mode(pair: netns.VethPair,
                                                              mode: str, word: str) -> None:
    a = pair.a
    prog = asm.Asm()
    prog.ret(asm.XDP_PASS)
    fd = bpf.prog_load(prog.assemble(), name="not_efvi")
    try:
        with netns.enter(a.netns):
            xnl.attach(socket.if_nametoindex(a.ifname), fd, mode)
        with pytest.raises(SetupError) as ei:
            _open(a, f"xdp:{a.ifname}")
        assert ei.value.errno == errno.EBUSY
        cmd = f"ip link set dev {a.ifname} {word} off"
        assert cmd in ei.value.hint
        a.run(*cmd.split())  # the hint's command really detaches it
        assert xdp_attached(a) == ""
    finally:
        os.close(fd)
    assert "xdpgeneric off; " in detach_command("x", "multi")


def test_15_filter_table_full_names_the_table(pair: netns.VethPair) -> None:
    a = pair.a
    with _open(a, f"xdp:{a.ifname}") as d, ProtectionDomain(d) as pd:
        vi = VirtualInterface(pd, rxq=64, txq=0)
        for i in range(FTABLE_SIZE):
            vi.filter_add(FilterSpec.ip4_local("udp", "198.18.91.1", 1 + i))
        with pytest.raises(SetupError) as ei:
            vi.filter_add(FilterSpec.ip4_local("udp", "198.18.91.1", 1 + FTABLE_SIZE))
        msg = str(ei.value)
        assert "filter table" in msg and str(FTABLE_SIZE) in msg and "older" not in msg
        assert ei.value.errno == errno.ENOSPC
