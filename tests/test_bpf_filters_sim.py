"""bpf filters (classic BPF / tcpdump expressions) in the sim adapter's filter table."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from test_sim import received, udp

from efvi import FilterSpec, MemoryRegion, ProtectionDomain, VISet
from efvi.bpf import libpcap
from efvi.constants import PKT_BUF_SIZE
from efvi.testing.conformance import Endpoint, Link, collect, send, sim_link

pytestmark = pytest.mark.skipif(not libpcap.available(), reason="needs libpcap0.8")


@pytest.fixture
def link() -> Iterator[Link]:
    with sim_link() as lk:
        yield lk


def _kernel(link: Link) -> int:
    assert link.kernel_rx_count is not None
    return link.kernel_rx_count()


def test_bpf_steal_takes_matches_from_the_kernel(link: Link) -> None:
    tx, rx = Endpoint(link.tx), Endpoint(link.rx)
    try:
        rx.vi.filter_add(FilterSpec.expression("udp dst port 5000 and udp[8] & 1 = 1"))
        rx.post(range(64))
        fs = [udp(link, 5000, payload=bytes([i]) * 22) for i in range(10)]
        fs += [udp(link, 5001, payload=b"\x01" * 22)] * 3
        k0 = _kernel(link)
        send(tx, fs)
        assert received(rx) == [f for i, f in enumerate(fs[:10]) if i & 1]
        assert _kernel(link) - k0 == 5 + 3
        for f in fs:  # one frame at a time: the scalar receive path, same answer
            send(tx, [f])
        assert received(rx) == [f for i, f in enumerate(fs[:10]) if i & 1]
    finally:
        rx.close()
        tx.close()


def test_bpf_sniff_copies_and_table_steal_wins(link: Link) -> None:
    tx, sniffer, stealer, table = (Endpoint(link.tx), Endpoint(link.rx), Endpoint(link.rx),
                                   Endpoint(link.rx))
    try:
        sniffer.vi.filter_add(FilterSpec.expression("udp", sniff=True))
        stealer.vi.filter_add(FilterSpec.expression("udp portrange 6000-6009"))
        table.vi.filter_add(FilterSpec.ip4_local("udp", link.rx_ip, 6001))
        for e in (sniffer, stealer, table):
            e.post(range(64))
        fs = [udp(link, 6000 + i) for i in range(12)]
        k0 = _kernel(link)
        send(tx, fs)
        assert received(sniffer) == fs  # a copy of everything it matches
        assert received(table) == [fs[1]]  # the table's level comes first
        assert received(stealer) == [f for i, f in enumerate(fs) if i < 10 and i != 1]
        assert _kernel(link) - k0 == 2  # 6010, 6011: nobody stole them
    finally:
        for e in (sniffer, stealer, table, tx):
            e.close()


def test_bpf_filter_removed_and_viset_spread(link: Link) -> None:
    tx = Endpoint(link.tx)
    pd = ProtectionDomain(link.rx)
    mr = MemoryRegion(pd, 256 * PKT_BUF_SIZE)
    try:
        vs = VISet(pd, 4, rxq=64, txq=0)
        h = vs.filter_add(FilterSpec.expression("udp dst port 7000"))
        for k, vi in enumerate(vs.vis):
            vi.receive_post_batch(mr.dma_addrs()[k * 64:k * 64 + 60],
                                  np.arange(k * 64, k * 64 + 60, dtype=np.uint32))
        send(tx, [udp(link, 7000, sport=1000 + i) for i in range(64) for _ in range(2)])
        counts = [len(collect(vi, 999, 0.0, quiet=0.01)) for vi in vs.vis]
        assert sum(counts) == 128 and sum(1 for c in counts if c) >= 2
        vs.filter_del(h)
        send(tx, [udp(link, 7000, sport=1)])
        assert sum(len(collect(vi, 999, 0.0, quiet=0.01)) for vi in vs.vis) == 0
    finally:
        pd.close()
        tx.close()
