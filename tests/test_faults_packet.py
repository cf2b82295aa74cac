"""Fault injection on the packet adapter's control paths (issue 16, item 7: ≥ 90 % covered).

Bad options, a namespace that cannot be opened, a kernel that refuses promiscuous
mode, a NIC with (simulated) hardware timestamps whose configuration must come back
at close, and the VI's event-queue and wait edges.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from efvi import (
    Driver,
    EventType,
    FilterSpec,
    MemoryRegion,
    ProtectionDomain,
    SetupError,
    UnsupportedError,
    VirtualInterface,
)
from efvi import hwts
from efvi.adapters.packet import adapter as pad
from efvi.adapters.packet import ring
from efvi.constants import PKT_BUF_SIZE
from efvi.testing import netns
from efvi.testing.conformance import collect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pair() -> Iterator[netns.VethPair]:
    why = netns.why_unavailable()
    if why:
        pytest.skip(why)
    with netns.veth_pair(subnet=96) as p:
        yield p


def _open(side: netns.Side, opts: str = "") -> Driver:
    with netns.enter(side.netns):
        return Driver.open(f"packet:{side.ifname}{opts}")


@pytest.mark.parametrize("opts, what", [
    ({"dir": "sideways"}, "bad dir='sideways'"),
    ({"ts": "atomic"}, "bad ts='atomic'"),
    ({"ring": "lots"}, "bad ring='lots'"),
    ({"ring": "1"}, "ring=1 outside 2..4194304"),
    ({"snaplen": "10"}, "snaplen=10 outside 64..65553"),
    ({"retire_ms": "0x7fffffff"}, "retire_ms=2147483647 outside 1..1000"),
])
def test_bad_options_are_refused_by_name(pair: netns.VethPair, opts: dict[str, str],
                                         what: str) -> None:
    with netns.enter(pair.a.netns):
        with pytest.raises(SetupError) as ei:
            pad.PacketAdapter(pair.a.ifname, None, opts)
    assert ei.value.errno == errno.EINVAL and ei.value.message == what, ei.value
    assert ei.value.hint


def test_no_interface_and_no_namespace(pair: netns.VethPair,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SetupError) as ei:
        pad.PacketAdapter("", None, {})
    assert ei.value.errno == errno.EINVAL and "packet:IFNAME" in ei.value.hint
    closed: list[socket.socket] = []
    real_socket = socket.socket

    def tracked(*a: Any, **k: Any) -> socket.socket:
        s = real_socket(*a, **k)
        closed.append(s)
        return s

    def no_ns() -> None:
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(pad.socket, "socket", tracked)
    monkeypatch.setattr(pad.netutil, "NetnsHandle", no_ns)
    with netns.enter(pair.a.netns):
        with pytest.raises(SetupError) as ei:
            pad.PacketAdapter(pair.a.ifname, None, {})
    assert ei.value.errno == errno.EACCES and "network namespace" in ei.value.message
    assert "/proc/thread-self/ns/net" in ei.value.hint
    assert len(closed) == 1 and closed[0].fileno() == -1  # its socket was closed


def test_promiscuous_mode_refused(pair: netns.VethPair, monkeypatch: pytest.MonkeyPatch) -> None:
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        MemoryRegion(pd, 16 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=16, txq=0)

        def refuse(sock: socket.socket, ifindex: int, mr_type: int, add: bool) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(ring, "membership", refuse)
        with pytest.raises(SetupError) as ei:
            vi.filter_add(FilterSpec.unicast_all().sniff(promiscuous=True))
        assert ei.value.errno == errno.EPERM
        assert f"cannot make {pair.a.ifname} promiscuous" in ei.value.message
        assert "CAP_NET_RAW" in ei.value.hint
        monkeypatch.undo()
        vi.filter_add(FilterSpec.unicast_all().sniff(promiscuous=True))  # now it may
        flags = int(pair.a.run("cat", f"/sys/class/net/{pair.a.ifname}/flags").stdout, 16)
        assert flags & 0x100  # IFF_PROMISC
    finally:
        drv.close()


def test_hardware_timestamps_configured_and_restored(pair: netns.VethPair,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A NIC with a PTP clock (simulated: veth has none): the adapter turns RX stamping
    on, reads its clock from the PHC, and puts the old configuration back at close."""
    calls: list[bytes | None] = []
    saved = b"\x01\x00\x00\x00" + bytes(8)
    ptp_fd = os.open("/dev/null", os.O_RDONLY)

    def hwtstamp(ifname: str, config: bytes | None) -> bytes | None:
        calls.append(config)
        return saved if config is None else config

    monkeypatch.setattr(hwts, "ts_info", lambda ifname: hwts.TsInfo(
        so_timestamping=hwts.SOF_TIMESTAMPING_RAW_HARDWARE | hwts.SOF_TIMESTAMPING_RX_HARDWARE,
        phc_index=3))
    monkeypatch.setattr(hwts, "hwtstamp", hwtstamp)
    monkeypatch.setattr(hwts, "phc_clock_id",
                        lambda idx: (ptp_fd, time.CLOCK_MONOTONIC) if idx == 3 else None)
    drv = _open(pair.a, "?ts=hw")
    assert drv.capabilities.hw_timestamps and drv.adapter.clock_source == "hw"  # type: ignore[attr-defined]
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert t0 <= drv.now_ns() <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # the PHC's
    assert calls[0] is None and calls[1] is not None  # read, then set HWTSTAMP_FILTER_ALL
    drv.close()
    assert calls[-1] == saved  # the old configuration is back
    with pytest.raises(OSError) as oe:
        os.fstat(ptp_fd)  # and the PHC descriptor closed
    assert oe.value.errno == errno.EBADF
    # a driver that refuses the configuration: software stamps, or an error for ts=hw
    monkeypatch.setattr(hwts, "hwtstamp", lambda ifname, config: None)
    drv = _open(pair.a)
    assert not drv.capabilities.hw_timestamps and drv.adapter.clock_source == "sw"  # type: ignore[attr-defined]
    drv.close()
    with pytest.raises(UnsupportedError) as ui:
        _open(pair.a, "?ts=hw")
    assert "no raw hardware RX timestamps" in str(ui.value) and "ts=sw" in str(ui.value)


def test_vi_event_queue_full_waits_and_closes(pair: netns.VethPair) -> None:
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        mr = MemoryRegion(pd, 16 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=8, txq=8, evq=4)
        n = 0
        while n < 1 << 16 and vi.eventq_put(n) == 0:
            n += 1
        assert 4 <= n < 1 << 16 and vi.eventq_put(0) == -errno.EAGAIN  # full: refused
        half = n // 2 + 1
        first: list[int] = []
        while len(first) < half and (evs := vi.eventq_poll(half - len(first))):
            first += [e.len for e in evs]
        k = len(first)
        assert k >= half and first == list(range(k))
        assert [vi.eventq_put(n + i) for i in range(k)] == [0] * k  # room again
        assert vi.eventq_put(0) == -errno.EAGAIN
        rest: list[int] = []
        while len(rest) < n and (evs := vi.eventq_poll(64)):
            rest += [e.len for e in evs if e.type == EventType.SW]
        assert rest == list(range(k, n + k))  # in order across the compaction
        # a frame is in the ring: eventq_wait returns at once, well before its timeout
        vi.filter_add(FilterSpec.ip4_local("udp", pair.a.ip, 7400).sniff())
        assert vi.receive_post(mr.dma_base, 1) == 0
        with netns.enter(pair.b.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"hello", (pair.a.ip, 7400))
        s.close()
        deadline = time.monotonic() + 5
        while vi.stats()["rx_kernel_packets"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        vi.eventq_wait(30_000_000_000)
        assert time.monotonic() - t0 < 10  # (30 s if it slept)
        assert [g[0] for g in collect(vi, 1, 5.0)] == [int(EventType.RX)]
        # TX outstanding: the wait is cut to 1 ms so completions are reaped
        mr.mv[PKT_BUF_SIZE:PKT_BUF_SIZE + 60] = bytes(60)
        assert vi.transmit(mr.dma_base + PKT_BUF_SIZE, 60, 9) == 0
        done: list[int] = []
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            vi.eventq_wait(None)  # no timeout: would sleep forever without the cut
            done += vi.transmit_completed(vi.poll()).tolist()
        assert done == [9]
        vi.close()
        vi.close()
        assert vi.eventq_put(1) == -errno.EBADF and len(vi.poll()) == 0
    finally:
        drv.close()
    ad: Any = drv.adapter
    drv.close()
    with pytest.raises(SetupError) as ei:
        ad.alloc_pd()
    assert ei.value.errno == errno.EBADF and "closed" in ei.value.message
