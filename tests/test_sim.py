"""The software NIC: filter priority, VI sets, jumbo frames, discards, PIO, clocks."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import (DiscardReason, Driver, EventType, FilterSpec, MemoryRegion,
                  ProtectionDomain, RxFlags, SetupError, TxErrorType, UnsupportedError,
                  VISet)
from efvi.constants import PKT_BUF_SIZE
from efvi.testing.conformance import Endpoint, Link, collect, send, sim_link
from efvi.wire.build import udp_frame


@pytest.fixture
def link() -> Iterator[Link]:
    with sim_link() as lk:
        yield lk


def udp(link: Link, dport: int, *, dst_ip: str | None = None, dst_mac: str | None = None,
        sport: int = 40000, src_ip: str | None = None, payload: bytes = b"x" * 22) -> bytes:
    return udp_frame(dst_mac or link.rx_mac, link.tx_mac, src_ip or link.tx_ip,
                     dst_ip or link.rx_ip, sport, dport, payload)


def received(ep: Endpoint, timeout: float = 0.2) -> list[bytes]:
    out = []
    for t, rq, ln, _fl, _ts, ofs in collect(ep.vi, 10**6, 0.0, quiet=0.01):
        if t == int(EventType.RX):
            o = rq * PKT_BUF_SIZE + ofs
            out.append(bytes(ep.mr.mv[o:o + ln]))
    return out


def test_priority_full_beats_local_beats_mac(link: Link) -> None:
    tx, a, b, c = Endpoint(link.tx), Endpoint(link.rx), Endpoint(link.rx), Endpoint(link.rx)
    try:
        a.vi.filter_add(FilterSpec.ip4_full("udp", link.rx_ip, 5000, link.tx_ip, 40000))
        b.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 5000))
        c.vi.filter_add(FilterSpec.eth_local(link.rx_mac))
        for e in (a, b, c):
            e.post(range(32))
        send(tx, [udp(link, 5000), udp(link, 5000, sport=40001), udp(link, 5001)])
        assert len(received(a)) == 1 and len(received(b)) == 1 and len(received(c)) == 1
        assert link.kernel_rx_count is not None and link.kernel_rx_count() == 0
    finally:
        for e in (a, b, c, tx):
            e.close()


def test_vlan_specific_beats_vlan_any_and_fragments_skip_ip_filters(link: Link) -> None:
    from efvi.wire.ethernet import VlanTag
    tx, a, b = Endpoint(link.tx), Endpoint(link.rx), Endpoint(link.rx)
    try:
        a.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 6000).vlan(7))
        b.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 6000))
        a.post(range(16))
        b.post(range(16))
        tagged = udp_frame(link.rx_mac, link.tx_mac, link.tx_ip, link.rx_ip, 1, 6000, b"y" * 20,
                           vlans=(VlanTag(vid=7),))
        frag = bytearray(udp(link, 6000))
        frag[20] |= 0x20  # MF: a first fragment goes to the kernel, not to IP filters
        send(tx, [tagged, udp(link, 6000), bytes(frag)])
        assert received(a) == [tagged]
        assert len(received(b)) == 1
        assert link.kernel_rx_count is not None and link.kernel_rx_count() == 1
    finally:
        for e in (a, b, tx):
            e.close()


def test_mismatch_and_all_filters(link: Link) -> None:
    tx, mis, allu = Endpoint(link.tx), Endpoint(link.rx), Endpoint(link.rx)
    try:
        mis.vi.filter_add(FilterSpec.unicast_mismatch())
        mis.post(range(16))
        other = udp(link, 1, dst_mac="02:99:00:00:00:01")
        send(tx, [other, udp(link, 2)])
        assert received(mis) == [other]  # ours went to the kernel
        allu.vi.filter_add(FilterSpec.unicast_all())
        allu.post(range(16))
        send(tx, [other, udp(link, 2)])
        assert len(received(allu)) == 2 and received(mis) == []
    finally:
        for e in (mis, allu, tx):
            e.close()


def test_filter_miss_is_counted(link: Link) -> None:
    tx = Endpoint(link.tx)
    try:
        send(tx, [udp(link, 1, dst_mac="02:99:00:00:00:02")] * 3)
        port = link.rx.adapter.port  # type: ignore[attr-defined]
        assert port.counters["rx_filter_miss_drops"] == 3
    finally:
        tx.close()


def test_viset_spreads_flows_symmetrically(link: Link) -> None:
    tx = Endpoint(link.tx)
    pd = ProtectionDomain(link.rx)
    mr = MemoryRegion(pd, 256 * PKT_BUF_SIZE)
    try:
        vs = VISet(pd, 4, rxq=64, txq=0)
        vs.filter_add(FilterSpec.unicast_all())
        for k, vi in enumerate(vs.vis):
            vi.receive_post_batch(mr.dma_addrs()[k * 64:k * 64 + 60],
                                  np.arange(k * 64, k * 64 + 60, dtype=np.uint32))
        fs = [udp(link, 7000, sport=1000 + i) for i in range(64) for _ in range(2)]
        send(tx, fs)
        counts = [len(collect(vi, 999, 0.0, quiet=0.01)) for vi in vs.vis]
        assert sum(counts) == 128 and sum(1 for c in counts if c) >= 2
        # every flow landed on one VI only, and a reply flow hashes to the same VI
        from efvi.adapters.sim.filter_table import flow_hash
        from efvi.wire.classify import classify_one
        fwd = classify_one(udp(link, 7000, sport=1234))
        rev = classify_one(udp_frame(link.tx_mac, link.rx_mac, link.rx_ip, link.tx_ip, 7000,
                                     1234, b"z" * 22))
        assert flow_hash(fwd) == flow_hash(rev)
    finally:
        pd.close()
        tx.close()


def test_jumbo_frame_spans_buffers_with_sop_and_cont() -> None:
    with Driver.open("sim:jtx?wire=jw&mtu=9000") as dtx, \
            Driver.open("sim:jrx?wire=jw&mtu=9000") as drx:
        from efvi.filters import format_mac
        lk = Link(dtx, drx, format_mac(dtx.interface.mac), format_mac(drx.interface.mac),
                  dtx.interface.ipv4[0], drx.interface.ipv4[0])
        tx, rx = Endpoint(dtx), Endpoint(drx)
        rx.vi.filter_add(FilterSpec.ip4_local("udp", lk.rx_ip, 9000))
        rx.post(range(3))
        big = udp(lk, 9000, payload=bytes(range(256)) * 20)  # 5162 bytes: 3 buffers
        send(tx, [big])
        evs = rx.vi.eventq_poll(16)
        rxe = [e for e in evs if e.type == EventType.RX]
        assert [(e.sop, e.cont) for e in rxe] == [(True, True), (False, True), (False, False)]
        assert [e.len for e in rxe] == [2048, 4096, len(big)]
        data = b"".join(bytes(rx.mr.mv[e.rq_id * 2048:e.rq_id * 2048 + 2048]) for e in rxe)
        assert data[:len(big)] == big
        # only 2 buffers left for the next jumbo: truncated, reported, counted
        rx.post(range(3, 5))
        send(tx, [big])
        evs = rx.vi.eventq_poll(16)
        assert [e.type for e in evs if e.type != EventType.TX][-1] == EventType.RX_NO_DESC_TRUNC
        assert rx.vi.stats()["rx_nodesc_trunc_drops"] == 1


def test_oversized_frame_is_a_trunc_discard(link: Link) -> None:
    tx, rx = Endpoint(link.tx), Endpoint(link.rx)
    try:
        rx.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 9100))
        rx.post(range(8))
        big = udp(link, 9100, payload=bytes(3000))  # MTU 1500
        send(tx, [big])
        evs = [e for e in rx.vi.eventq_poll(8) if e.type == EventType.RX_DISCARD]
        assert len(evs) == 1 and evs[0].discard_reason == DiscardReason.TRUNC
        assert rx.vi.stats()["rx_trunc_drops"] == 1
    finally:
        rx.close()
        tx.close()


def test_transmitv_and_pio(link: Link) -> None:
    tx, rx = Endpoint(link.tx), Endpoint(link.rx)
    try:
        rx.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 9200))
        rx.post(range(16))
        f = udp(link, 9200)
        tx.mr.mv[0:20] = f[:20]
        tx.mr.mv[4096:4096 + len(f) - 20] = f[20:]
        assert tx.vi.transmitv([(tx.addr(0), 20), (tx.addr(2), len(f) - 20)], 77) == 0
        pio = tx.vi.pio
        assert pio.copy(64, f) == 0
        assert tx.vi.transmit_pio(64, len(f), 78) == 0
        assert tx.vi.transmit_pio(65, len(f), 79) == -errno.EINVAL
        assert tx.vi.transmit_pio(64, 15, 79) == -errno.EINVAL
        assert tx.vi.transmit_copy_pio(128, f, 80) == 0
        assert received(rx) == [f, f, f]
        ids: list[int] = []
        for ev in tx.vi.eventq_poll(8):
            ids += tx.vi.transmit_unbundle(ev)
        assert ids == [77, 78, 80]
    finally:
        rx.close()
        tx.close()


def test_tx_error_events_return_ids(link: Link) -> None:
    tx = Endpoint(link.tx)
    try:
        tx.vi.transmit_init(tx.addr(0), 60, 5)
        tx.vi.transmit_init(tx.addr(1), 60, 6)
        link.tx.adapter.port.fail_next_tx = int(TxErrorType.BUS)  # type: ignore[attr-defined]
        tx.vi.transmit_push()
        evs = tx.vi.eventq_poll(4)
        assert [e.type for e in evs] == [EventType.TX_ERROR]
        assert evs[0].subtype == TxErrorType.BUS
        assert tx.vi.transmit_unbundle(evs[0]) == [5, 6]
    finally:
        tx.close()


def test_virtual_clock_is_deterministic() -> None:
    def run() -> list[int]:
        from efvi.adapters.sim.port import FABRIC
        FABRIC.reset()
        with sim_link() as lk:
            tx, rx = Endpoint(lk.tx), Endpoint(lk.rx)
            rx.vi.filter_add(FilterSpec.ip4_local("udp", lk.rx_ip, 1))
            rx.post(range(64))
            send(tx, [udp(lk, 1)] * 50)
            return [ev[4] for ev in collect(rx.vi, 50, 1.0)]
    a, b = run(), run()
    assert a == b and len(a) == 50
    assert all(y - x == a[1] - a[0] > 0 for x, y in zip(a, a[1:]))  # line-rate spacing


def test_real_clock_option() -> None:
    import time
    with Driver.open("sim:rc?clock=real&loopback=1") as d:
        ep, tx = Endpoint(d), Endpoint(d)
        ep.vi.filter_add(FilterSpec.unicast_all())
        ep.post(range(4))
        f = udp_frame(d.interface.mac, d.interface.mac, "198.18.9.1", "198.18.9.2", 1, 2, b"q")
        t0 = time.time_ns()
        send(tx, [f])
        evs = [e for e in ep.vi.eventq_poll(4) if e.type == EventType.RX]
        assert ep.vi.clock_source == "sw" and t0 <= evs[0].ts_ns <= time.time_ns()


def test_bad_urls_and_options() -> None:
    for url in ("nosuch:eth0", "sim:x?bogus=1", "sim:x?clock=fast", "xdp:eth0@abc"):
        with pytest.raises(SetupError):
            Driver.open(url)


def test_second_region_and_unsupported_sets() -> None:
    with Driver.open("sim:mr") as d, ProtectionDomain(d) as pd:
        a = MemoryRegion(pd, 4 * PKT_BUF_SIZE)
        b = MemoryRegion(pd, 4 * PKT_BUF_SIZE)
        assert pd.region_of(b.dma_addr(100)) is b and pd.region_of(a.dma_base) is a
        with pytest.raises(SetupError):
            VISet(pd, 0)
        assert pd.dma_ok(a.dma_base, 4 * PKT_BUF_SIZE)
        assert not pd.dma_ok(a.dma_base, 4 * PKT_BUF_SIZE + 1)


def test_events_batch_columns_and_objects_agree(link: Link) -> None:
    tx, rx = Endpoint(link.tx), Endpoint(link.rx)
    try:
        rx.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 9300))
        rx.post(range(16))
        send(tx, [udp(link, 9300, payload=struct.pack("!I", i)) for i in range(5)])
        b = rx.vi.poll()
        objs = b.events()
        assert [e.rq_id for e in objs] == b.rq_id.tolist()
        assert [int(e.flags) & int(RxFlags.SOP) for e in objs] == [1] * 5
        assert all(isinstance(e.ts_ns, int) for e in objs)
    finally:
        rx.close()
        tx.close()


def test_unsupported_is_named() -> None:
    with Driver.open("sim:un") as d:
        d.require("steal", who_has="xdp")
        with pytest.raises(UnsupportedError, match="xdp"):
            d.require("hw_timestamps", who_has="xdp")


def test_remote_wire_in_one_process_and_its_errors() -> None:
    import os
    name = f"@rw{os.getpid()}"
    with Driver.open(f"sim:ra?wire={name}&ip=198.18.6.1") as da, \
            Driver.open(f"sim:rb?wire={name}&ip=198.18.6.2") as db:
        with pytest.raises(SetupError, match="already has two ends"):
            Driver.open(f"sim:rc?wire={name}")
        from efvi.filters import format_mac
        lk = Link(da, db, format_mac(da.interface.mac), format_mac(db.interface.mac),
                  "198.18.6.1", "198.18.6.2")
        tx, rx = Endpoint(da), Endpoint(db)
        rx.vi.filter_add(FilterSpec.ip4_local("udp", lk.rx_ip, 4444))
        rx.post(range(64))
        send(tx, [udp(lk, 4444, payload=bytes([i]) * 20) for i in range(40)])
        got = received(rx)
        assert len(got) == 40 and got[7][42:] == bytes([7]) * 20
    # nobody on the other end: frames are dropped and counted, not queued
    with Driver.open(f"sim:lone?wire=@nobody{os.getpid()}&ip=198.18.6.3") as d:
        ep = Endpoint(d)
        f = udp_frame("02:00:00:00:00:09", d.interface.mac, "198.18.6.3", "198.18.6.4", 1, 2,
                      b"z")
        send(ep, [f] * 3)
        assert ep.vi.stats()["port_tx_no_peer_drops"] == 3
