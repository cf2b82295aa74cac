"""Integration tests of the packet adapter over veth pairs and lo in test namespaces.

Waiting is bounded (``_collect`` stops at a deadline) but nothing asserts on time:
every assertion is on frames, bytes and counters.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  UnsupportedError, VirtualInterface, VISet)
from efvi.constants import PKT_BUF_SIZE
from efvi.events import DiscardReason, Event, RxFlags, TxErrorType
from efvi.netutil import link_info
from efvi.testing import netns
from efvi.wire.build import udp_frame
from efvi.wire.ethernet import VlanTag, qinq

pytestmark = pytest.mark.integration

RXISH = (EventType.RX, EventType.RX_DISCARD, EventType.RX_NO_DESC_TRUNC)


class Ep:
    """A PD + region + VI on ``driver``, with all buffers but one posted."""

    def __init__(self, driver: Driver, nbuf: int = 256, rxq: int = 256, txq: int = 64,
                 post: int | None = None) -> None:
        self.pd = ProtectionDomain(driver)
        self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
        self.vi = VirtualInterface(self.pd, rxq=rxq, txq=txq)
        n = min(nbuf, rxq - 1) if post is None else post
        if n:
            assert self.vi.receive_post_batch(self.mr.dma_addrs()[:n],
                                              np.arange(n, dtype=np.uint32)) == n

    def frame(self, ev: Event) -> bytes:
        return self.mr.read(self.mr.dma_base + ev.rq_id * PKT_BUF_SIZE, ev.len)


def _collect(vi: VirtualInterface, want: int, timeout: float = 5.0,
             quiet: float = 0.0) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        evs = [e for e in vi.eventq_poll(256) if e.type in RXISH]
        got += evs
        if not evs:
            vi.eventq_wait(2_000_000)
    end = time.monotonic() + quiet
    while time.monotonic() < end:
        got += [e for e in vi.eventq_poll(256) if e.type in RXISH]
        time.sleep(0.002)
    return got


def _udp(side: netns.Side, bind: tuple[str, int] | None = None) -> socket.socket:
    with netns.enter(side.netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if bind:
            s.bind(bind)
    s.settimeout(5)
    return s


@pytest.fixture
def drv(veth: netns.VethPair) -> Iterator[Driver]:
    """A packet driver on side a of the veth pair."""
    with netns.enter(veth.a.netns):
        d = Driver.open(f"packet:{veth.a.ifname}")
    try:
        yield d
    finally:
        d.close()


def _payload(frame: bytes) -> bytes:
    return frame[42:]


# ---- sniff semantics ----------------------------------------------------------------------------
def test_sniff_leaves_the_kernel_its_copy(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000).sniff())
    rx = _udp(a, (a.ip, 5000))
    tx = _udp(b)
    msgs = [b"msg-%03d" % i for i in range(20)]
    for m in msgs:
        tx.sendto(m, (a.ip, 5000))
    tx.sendto(b"not-ours", (a.ip, 5001))
    kernel = [rx.recv(100) for _ in msgs]
    got = _collect(ep.vi, 20, quiet=0.05)
    assert kernel == msgs
    assert [_payload(ep.frame(e)) for e in got] == msgs
    assert all(e.type == EventType.RX and e.sop and not e.cont for e in got)
    assert ep.vi.clock_source == "sw"
    st = ep.vi.stats()
    assert st["rx_packets"] == 20 and st["drops"] == 0


def test_several_filters_on_one_vi(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    for port in (6000, 6002):
        ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, port).sniff())
    tx = _udp(b)
    for port in (6000, 6001, 6002, 6003):
        tx.sendto(b"p%d" % port, (a.ip, port))
    got = _collect(ep.vi, 2, quiet=0.1)
    assert sorted(_payload(ep.frame(e)) for e in got) == [b"p6000", b"p6002"]


def test_outgoing_frames_are_not_received(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.filter_add(FilterSpec.port_sniff(promiscuous=False))
    _udp(a).sendto(b"from-a", (b.ip, 7000))  # leaves through ea: outgoing
    _udp(b).sendto(b"from-b", (a.ip, 7000))  # arrives on ea
    got = _collect(ep.vi, 1, quiet=0.1)
    pays = [_payload(ep.frame(e)) for e in got if ep.frame(e)[12:14] == b"\x08\x00"]
    assert b"from-b" in pays and b"from-a" not in pays


# ---- VLAN ---------------------------------------------------------------------------------------
def _send_raw(side: netns.Side, frames: list[bytes]) -> None:
    """Transmit ``frames`` through a packet VI on ``side`` (tags and all, as given)."""
    with netns.enter(side.netns):
        d = Driver.open(f"packet:{side.ifname}")
    try:
        tx = Ep(d, post=0, txq=max(64, len(frames) + 1))
        for i, f in enumerate(frames):
            tx.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
        lens = np.array([len(f) for f in frames], np.uint32)
        assert tx.vi.transmit_batch(tx.mr.dma_addrs()[:len(frames)], lens,
                                    np.arange(len(frames), dtype=np.uint32)) == len(frames)
        done = 0
        deadline = time.monotonic() + 5
        while done < len(frames) and time.monotonic() < deadline:
            done += len(tx.vi.transmit_completed(tx.vi.poll()))
        assert done == len(frames)
    finally:
        d.close()


def test_vlan_filter_and_tag_reinserted(veth: netns.VethPair, drv: Driver) -> None:
    """The kernel strips the outer tag on receive; filters see it, captures get it back."""
    a, b = veth.a, veth.b
    ep10, ep11, any_, qq = Ep(drv), Ep(drv), Ep(drv), Ep(drv)
    ep10.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000).vlan(10).sniff())
    ep11.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000).vlan(11).sniff())
    any_.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5000).sniff())
    qq.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5001).vlan(100).sniff())
    tagged = [udp_frame(a.mac, b.mac, b.ip, a.ip, 4000, 5000, b"tagged-%d" % i,
                        vlans=(VlanTag(10, pcp=5),)) for i in range(5)]
    qinq_f = udp_frame(a.mac, b.mac, b.ip, a.ip, 4000, 5001, b"qinq", vlans=qinq(100, 7))
    _send_raw(b, [*tagged, qinq_f])
    got = _collect(ep10.vi, 5)
    assert [ep10.frame(e) for e in got] == tagged, "the stripped VLAN tag was not put back"
    assert got[0].len == 14 + 4 + 20 + 8 + 8
    assert [any_.frame(e) for e in _collect(any_.vi, 5)] == tagged  # VLAN-any sees them
    assert _collect(ep11.vi, 1, timeout=0.2) == []
    q = _collect(qq.vi, 1)
    assert [qq.frame(e) for e in q] == [qinq_f]  # 802.1ad outer re-inserted, inner kept


# ---- overflow and drops -------------------------------------------------------------------------
def test_ring_overflow_is_counted(veth: netns.VethPair) -> None:
    a, b = veth.a, veth.b
    with netns.enter(a.netns):
        d = Driver.open(f"packet:{a.ifname}?ring=64")
    try:
        ep = Ep(d, nbuf=512, rxq=512)
        ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5100).sniff())
        tx = _udp(b)
        sent = 2000
        for i in range(sent):  # nobody polls: a very slow reader
            tx.sendto(struct.pack("!I", i), (a.ip, 5100))
        got: list[Event] = []
        deadline = time.monotonic() + 10
        drops = 0
        while time.monotonic() < deadline:
            got += _collect(ep.vi, sent, timeout=0.05)
            st = ep.vi.stats()
            drops = st["rx_ring_drops"] + st["rx_nodesc_drops"]
            if len(got) + drops >= sent:
                break
            if len(got) + 1 >= 511:
                break
        st = ep.vi.stats()
        assert st["rx_ring_drops"] > 0, st
        assert len(got) + st["rx_ring_drops"] + st["rx_nodesc_drops"] == sent, st
        assert st["drops"] >= st["rx_ring_drops"]
        seqs = [struct.unpack("!I", ep.frame(e)[42:46])[0] for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        d.close()


def test_no_descriptor_then_post(veth: netns.VethPair, drv: Driver) -> None:
    """Frames that arrive while no buffer is posted are dropped even if buffers come later."""
    a, b = veth.a, veth.b
    ep = Ep(drv, post=0)
    ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5200).sniff())
    tx = _udp(b)
    for _ in range(10):
        tx.sendto(b"early", (a.ip, 5200))
    deadline = time.monotonic() + 5
    while ep.vi.stats()["rx_kernel_packets"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    ep.vi.receive_post_batch(ep.mr.dma_addrs()[:32], np.arange(32, dtype=np.uint32))
    tx.sendto(b"late", (a.ip, 5200))
    got = _collect(ep.vi, 1, quiet=0.05)
    assert [_payload(ep.frame(e)) for e in got] == [b"late"]
    assert ep.vi.stats()["rx_nodesc_drops"] == 10


def test_a_poll_leaves_frames_that_land_while_it_copies(veth: netns.VethPair, drv: Driver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A harvest takes the run of frames ready when it looks; later arrivals wait for the
    next poll. (Chasing a stream kept the caller from reposting until every buffer was
    used, then dropped frames as rx_nodesc_drops.)"""
    from efvi.adapters.packet import ring
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5210).sniff())
    tx = _udp(b)
    hw = ep.vi._hw
    r = hw._rx
    start = hw._cur

    def landed(lo: int, hi: int) -> None:  # wait (bounded) until the kernel wrote them
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
                r.status[(start + i) % r.nslots] & ring.TP_STATUS_USER for i in range(lo, hi)):
            time.sleep(0.001)

    for i in range(3):
        tx.sendto(b"first-%d" % i, (a.ip, 5210))
    landed(0, 3)
    take_fast = hw._take_fast
    calls = []

    def arrive_during_copy(cur: int, n: int) -> int:
        if not calls:
            for i in range(3):
                tx.sendto(b"second-%d" % i, (a.ip, 5210))
            landed(3, 6)
        calls.append(n)
        return int(take_fast(cur, n))

    monkeypatch.setattr(hw, "_take_fast", arrive_during_copy)
    first = [e for e in ep.vi.eventq_poll(256) if e.type in RXISH]
    assert [_payload(ep.frame(e)) for e in first] == [b"first-%d" % i for i in range(3)]
    second = _collect(ep.vi, 3)
    assert [_payload(ep.frame(e)) for e in second] == [b"second-%d" % i for i in range(3)]
    assert ep.vi.stats()["drops"] == 0


# ---- jumbo chains and truncation ----------------------------------------------------------------
def test_sop_cont_chain_and_no_desc_trunc(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.receive_set_buffer_len(512)
    ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5300).sniff())
    data = bytes(range(256)) * 5 + b"end"
    _udp(b).sendto(data, (a.ip, 5300))
    evs = _collect(ep.vi, 3)
    total = 42 + len(data)
    assert [e.len for e in evs] == [512, 1024, total]
    assert [e.flags & (RxFlags.SOP | RxFlags.CONT) for e in evs] == [
        RxFlags.SOP | RxFlags.CONT, RxFlags.CONT, 0]
    frame = b"".join(ep.mr.read(ep.mr.dma_base + e.rq_id * PKT_BUF_SIZE, 512) for e in evs)
    assert frame[42:total] == data
    # only two buffers left for the next one: RX, RX, then RX_NO_DESC_TRUNC
    short = Ep(drv, post=2)
    short.vi.receive_set_buffer_len(512)
    short.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5301).sniff())
    _udp(b).sendto(data, (a.ip, 5301))
    evs = _collect(short.vi, 3)
    assert [e.type for e in evs] == [EventType.RX, EventType.RX, EventType.RX_NO_DESC_TRUNC]
    assert short.vi.stats()["rx_nodesc_trunc_drops"] == 1


def test_snaplen_truncation_is_a_trunc_discard(veth: netns.VethPair) -> None:
    a, b = veth.a, veth.b
    with netns.enter(a.netns):
        d = Driver.open(f"packet:{a.ifname}?snaplen=256")
    try:
        ep = Ep(d)
        ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5400).sniff())
        tx = _udp(b)
        tx.sendto(bytes(600), (a.ip, 5400))
        tx.sendto(b"small", (a.ip, 5400))
        evs = _collect(ep.vi, 2)
        assert [(e.type, e.discard_reason) for e in evs] == [
            (EventType.RX_DISCARD, DiscardReason.TRUNC), (EventType.RX, None)]
        assert evs[0].len == 642
        st = ep.vi.stats()
        assert st["rx_trunc_drops"] == 1 and st["rx_packets"] == 1
    finally:
        d.close()


# ---- timestamps ---------------------------------------------------------------------------------
def test_software_timestamps(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5500).sniff())
    t0 = time.time_ns()
    _udp(b).sendto(b"when", (a.ip, 5500))
    evs = _collect(ep.vi, 1)
    t1 = time.time_ns()
    assert len(evs) == 1 and isinstance(evs[0].ts_ns, int)
    assert t0 <= evs[0].ts_ns <= t1
    assert drv.capabilities.rx_timestamps and not drv.capabilities.hw_timestamps
    assert t0 <= drv.now_ns()


def test_hw_timestamps_refused_on_veth(veth: netns.VethPair) -> None:
    with netns.enter(veth.a.netns), pytest.raises(UnsupportedError, match="ethtool -T"):
        Driver.open(f"packet:{veth.a.ifname}?ts=hw")


# ---- promiscuous mode ---------------------------------------------------------------------------
def _promiscuity(side: netns.Side) -> int:
    with netns.enter(side.netns):
        return link_info(side.ifname).promiscuity


def test_promiscuous_while_needed_and_restored(veth: netns.VethPair) -> None:
    a = veth.a
    with netns.enter(a.netns):
        d = Driver.open(f"packet:{a.ifname}")
    try:
        ep = Ep(d)
        assert _promiscuity(a) == 0
        c1 = ep.vi.filter_add(FilterSpec.unicast_all().sniff())
        c2 = ep.vi.filter_add(FilterSpec.port_sniff(promiscuous=True))
        assert _promiscuity(a) == 1
        ep.vi.filter_del(c1)
        assert _promiscuity(a) == 1
        ep.vi.filter_del(c2)
        assert _promiscuity(a) == 0
        ep.vi.filter_add(FilterSpec.eth_local("02:00:c6:12:99:99").sniff())
        assert _promiscuity(a) == 1
        ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 1).sniff())
    finally:
        d.close()
    assert _promiscuity(a) == 0


def test_unicast_mismatch_sees_frames_for_other_macs(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    ep = Ep(drv)
    ep.vi.filter_add(FilterSpec.unicast_mismatch().sniff())
    with netns.enter(b.netns):
        dtx = Driver.open(f"packet:{b.ifname}")
    try:
        tx = Ep(dtx, post=0)
        frames = [udp_frame("02:00:c6:12:77:77", b.mac, b.ip, a.ip, 1, 9000, b"foreign"),
                  udp_frame(a.mac, b.mac, b.ip, a.ip, 1, 9000, b"mine")]
        for i, f in enumerate(frames):
            tx.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
            assert tx.vi.transmit(tx.mr.dma_base + i * PKT_BUF_SIZE, len(f), i) == 0
        got = _collect(ep.vi, 1, quiet=0.1)
        assert [_payload(ep.frame(e)) for e in got] == [b"foreign"]
    finally:
        dtx.close()


# ---- TX -----------------------------------------------------------------------------------------
def test_tx_reaches_kernel_socket_with_good_checksums(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    rx = _udp(b, (b.ip, 8000))
    ep = Ep(drv, post=0)
    good = [udp_frame(b.mac, a.mac, a.ip, b.ip, 4000, 8000, b"good-%d" % i) for i in range(50)]
    bad = bytearray(udp_frame(b.mac, a.mac, a.ip, b.ip, 4000, 8000, b"bad-checksum"))
    bad[40] ^= 0xFF  # corrupt the UDP checksum: the kernel must drop it
    frames = [*good[:25], bytes(bad), *good[25:]]
    for i, f in enumerate(frames):
        ep.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
    addrs = ep.mr.dma_addrs()[:len(frames)]
    lens = np.array([len(f) for f in frames], np.uint32)
    assert ep.vi.transmit_batch(addrs, lens, np.arange(len(frames), dtype=np.uint32)) == 51
    got = [rx.recv(100) for _ in good]
    assert got == [b"good-%d" % i for i in range(50)]
    rx.settimeout(0.2)
    with pytest.raises(socket.timeout):
        rx.recv(100)
    done: list[int] = []
    deadline = time.monotonic() + 5
    while len(done) < 51 and time.monotonic() < deadline:
        done += ep.vi.transmit_completed(ep.vi.poll()).tolist()
    assert done == list(range(51))
    st = ep.vi.stats()
    assert st["tx_packets"] == 51 and st["tx_bytes"] == int(lens.sum())


def test_tx_too_big_is_a_tx_error(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    rx = _udp(b, (b.ip, 8100))
    ep = Ep(drv, post=0)
    big = udp_frame(b.mac, a.mac, a.ip, b.ip, 4000, 8100, bytes(1600))
    ok = udp_frame(b.mac, a.mac, a.ip, b.ip, 4000, 8100, b"after")
    ep.mr.mv[0:len(big)] = big
    ep.mr.mv[4096:4096 + len(ok)] = ok
    assert ep.vi.transmit(ep.mr.dma_base, len(big), 1) == 0
    assert ep.vi.transmit(ep.mr.dma_base + 4096, len(ok), 2) == 0
    assert rx.recv(100) == b"after"
    evs: list[Event] = []
    deadline = time.monotonic() + 5
    while len(evs) < 2 and time.monotonic() < deadline:
        evs += ep.vi.eventq_poll()
    assert [(e.type, e.subtype) for e in evs] == [(EventType.TX_ERROR, TxErrorType.TOO_BIG),
                                                   (EventType.TX, 0)]
    assert [ep.vi.transmit_unbundle(e) for e in evs] == [[1], [2]]
    assert ep.vi.stats()["tx_too_big_drops"] == 1


def test_transmitv_gathers_pieces(veth: netns.VethPair, drv: Driver) -> None:
    a, b = veth.a, veth.b
    rx = _udp(b, (b.ip, 8200))
    ep = Ep(drv, post=0)
    f = udp_frame(b.mac, a.mac, a.ip, b.ip, 4000, 8200, b"three-pieces")
    parts = [f[:14], f[14:34], f[34:]]
    iov = []
    for i, p in enumerate(parts):
        ep.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(p)] = p
        iov.append((ep.mr.dma_base + i * PKT_BUF_SIZE, len(p)))
    assert ep.vi.transmitv(iov, 9) == 0
    assert rx.recv(100) == b"three-pieces"
    deadline = time.monotonic() + 5
    evs: list[Event] = []
    while not evs and time.monotonic() < deadline:
        evs = [e for e in ep.vi.eventq_poll() if e.type == EventType.TX]
    assert evs[0].rq_id == 3 and ep.vi.transmit_unbundle(evs[0]) == [9]


# ---- VI sets: fanout ----------------------------------------------------------------------------
@contextlib.contextmanager
def _lo_ns() -> Iterator[str]:
    with netns.veth_pair(subnet=42) as pair:
        ns = pair.a.netns
        for host in ("198.18.42.1/32", "198.18.42.2/32"):
            subprocess.run(["ip", "-n", ns, "addr", "add", host, "dev", "lo"], check=True,
                           capture_output=True)
        yield ns


def test_vi_set_fanout_is_symmetric_on_lo(veth: netns.VethPair) -> None:
    with _lo_ns() as ns:
        with netns.enter(ns):
            d = Driver.open("packet:lo")
        try:
            pd = ProtectionDomain(d)
            mr = MemoryRegion(pd, 4 * 128 * PKT_BUF_SIZE)
            vs = VISet(pd, 4, rxq=128)
            for k, vi in enumerate(vs.vis):
                ids = np.arange(k * 128, k * 128 + 127, dtype=np.uint32)
                assert vi.receive_post_batch(mr.dma_addrs()[ids], ids) == 127
            vs.filter_add(FilterSpec.ip_proto(17).sniff())
            flows = 16
            with netns.enter(ns):
                left = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
                right = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
            for i in range(flows):
                left[i].bind(("198.18.42.1", 20000 + i))
                right[i].bind(("198.18.42.2", 30000 + i))
            for i in range(flows):
                left[i].sendto(b"fwd", ("198.18.42.2", 30000 + i))
                right[i].sendto(b"rev", ("198.18.42.1", 20000 + i))
            where: dict[tuple[int, int], set[int]] = {}
            total = 0
            deadline = time.monotonic() + 5
            while total < 2 * flows and time.monotonic() < deadline:
                for k, vi in enumerate(vs.vis):
                    for e in vi.eventq_poll(64):
                        if e.type != EventType.RX:
                            continue
                        f = mr.read(mr.dma_base + e.rq_id * PKT_BUF_SIZE, e.len)
                        sport, dport = struct.unpack_from("!HH", f, 34)
                        where.setdefault((min(sport, dport), max(sport, dport)), set()).add(k)
                        total += 1
            assert total == 2 * flows, f"got {total} of {2 * flows} frames"
            assert len(where) == flows
            assert all(len(v) == 1 for v in where.values()), f"a flow was split: {where}"
            assert len(set().union(*where.values())) >= 2, "hash did not spread the flows"
            for s in left + right:
                s.close()
        finally:
            d.close()


def test_multicast_sniff_on_two_vis(veth: netns.VethPair, drv: Driver) -> None:
    b = veth.b
    e1, e2 = Ep(drv), Ep(drv)
    spec = FilterSpec.ip4_local("udp", "239.18.1.1", 5600).sniff()
    e1.vi.filter_add(spec)
    e2.vi.filter_add(spec)
    b.run("ip", "route", "add", "239.0.0.0/8", "dev", b.ifname)
    tx = _udp(b)
    for i in range(5):
        tx.sendto(b"m%d" % i, ("239.18.1.1", 5600))
    for ep in (e1, e2):
        got = _collect(ep.vi, 5)
        assert [_payload(ep.frame(e)) for e in got] == [b"m%d" % i for i in range(5)]
        assert all(e.flags & RxFlags.MULTICAST for e in got)


def test_steal_names_xdp(drv: Driver) -> None:
    ep = Ep(drv, post=0)
    with pytest.raises(UnsupportedError, match="xdp"):
        ep.vi.filter_add(FilterSpec.ip4_local("udp", "198.18.0.1", 1))
    caps = drv.capabilities
    assert not caps.steal and caps.sniff and caps.vi_sets and not caps.zero_copy


def test_poll_rx1_one_frame_path(veth: netns.VethPair, drv: Driver) -> None:
    """The one-packet-in-flight receive on packet: each frame through ``poll_rx1`` with
    its bytes, length and stamp; a VLAN-tagged frame and pending events go to poll()."""
    ep = Ep(drv, nbuf=64, rxq=64)
    a, b = veth.a, veth.b
    ep.vi.filter_add(FilterSpec().ip4_local("udp", a.ip, 7100).sniff())
    assert ep.vi.poll_rx1() == -1  # nothing waits
    s = _udp(b)
    got: list[tuple[int, bytes, int]] = []
    t0 = time.time_ns()
    for k in range(5):
        s.sendto(b"rx1-%d" % k, (a.ip, 7100))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            i = ep.vi.poll_rx1()
            if i >= 0:
                ofs, n, ts = ep.vi.rx1
                got.append((i, ep.mr.read(ep.mr.dma_base + i * PKT_BUF_SIZE + ofs, n), ts))
                break
            assert i == -1, i
            time.sleep(0.001)
    s.close()
    assert [g[1][-5:] for g in got] == [b"rx1-%d" % k for k in range(5)]
    assert all(t0 <= g[2] <= time.time_ns() for g in got)
    assert ep.vi.stats()["rx_packets"] == 5
    ep.vi.close()
    assert ep.vi.poll_rx1() < 0  # closed: -EBADF, never raises
