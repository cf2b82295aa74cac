"""The adapter conformance suite: every adapter passes the same tests.

Use it from a test module by subclassing :class:`AdapterConformance` and providing a
``link`` fixture that yields a :class:`Link` — two open drivers whose ports are
joined, so frames ``link.tx`` transmits arrive at ``link.rx``'s port::

    class TestSimConformance(AdapterConformance):
        @pytest.fixture
        def link(self) -> Iterator[Link]:
            with sim_link() as l:
                yield l

The suite adapts to capabilities: on an adapter that cannot steal, filters are
added as sniff filters. Every capability an adapter declares is asserted — what it
declares it has must work, what it declares it lacks must be refused. A test that
needs a capability the adapter declares it lacks first asserts the refusal, then
skips *by design* naming that capability (:func:`skip_if_lacking`; the reason starts
with :data:`BY_DESIGN`, which CI's per-area gate allows); any other skip or an
``UnsupportedError`` from an adapter that declared the capability is a failure.
Waiting is bounded (``Link.timeout``): real adapters deliver asynchronously.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from efvi import (ClosedError, Driver, EventType, FilterExistsError, FilterSpec,
                  MemoryRegion, ProtectionDomain, SetupError, UnsupportedError, ViFlags,
                  VirtualInterface, VISet)
from efvi.adapters.base import Capabilities
from efvi.constants import EF_VI_TRANSMIT_BATCH, PKT_BUF_SIZE
from efvi.events import Event, EventBatch
from efvi.wire.build import udp_frame

_wire_ids = itertools.count()

#: how a by-design skip's reason starts (CI's per-area gate allows only these)
BY_DESIGN = "by design: "


def skip_if_lacking(caps: Capabilities, name: str,
                    refused: Callable[[], object] | None = None) -> None:
    """Return if the adapter declares capability ``name``; else assert that ``refused()``
    raises UnsupportedError (the lack is real) and skip by design, naming ``name``."""
    if getattr(caps, name):
        return
    if refused is not None:
        with pytest.raises(UnsupportedError):
            refused()
    pytest.skip(f"{BY_DESIGN}{caps.adapter} declares capabilities.{name} = False")


@dataclass
class Link:
    """Two drivers joined by a wire (see the module doc).

    ``tx_ip``/``rx_ip`` and MACs are the ports' own addresses. ``kernel_rx_count``
    (optional) returns how many frames the kernel side of ``rx`` has received so far.
    """

    tx: Driver
    rx: Driver
    tx_mac: str
    rx_mac: str
    tx_ip: str
    rx_ip: str
    timeout: float = 5.0
    kernel_rx_count: Callable[[], int] | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@contextlib.contextmanager
def sim_link() -> Iterator[Link]:
    """A link between two fresh sim ports (the reference adapter)."""
    from efvi.filters import format_mac
    n = next(_wire_ids)
    tx = Driver.open(f"sim:ctx{n}?wire=cw{n}&ip=198.18.7.1")
    rx = Driver.open(f"sim:crx{n}?wire=cw{n}&ip=198.18.7.2")
    port = rx.adapter.port  # type: ignore[attr-defined]
    try:
        yield Link(tx, rx, format_mac(tx.interface.mac), format_mac(rx.interface.mac),
                   "198.18.7.1", "198.18.7.2",
                   kernel_rx_count=lambda: int(port.counters["kernel_rx_packets"]))
    finally:
        tx.close()
        rx.close()


# ---- helpers -------------------------------------------------------------------------

class Endpoint:
    """A PD, a memory region of ``nbuf`` buffers and one VI on a driver."""

    def __init__(self, driver: Driver, nbuf: int = 512, rxq: int = 512, txq: int = 512) -> None:
        self.pd = ProtectionDomain(driver)
        self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
        self.vi = VirtualInterface(self.pd, rxq=rxq, txq=txq)
        self.nbuf = nbuf

    def addr(self, i: int) -> int:
        return self.mr.dma_base + i * PKT_BUF_SIZE

    def post(self, ids: range) -> int:
        addrs = np.array([self.addr(i) for i in ids], dtype=np.uint64)
        return self.vi.receive_post_batch(addrs, np.array(list(ids), dtype=np.uint32))

    def close(self) -> None:
        self.pd.close()


def spec_for(link: Link, spec: FilterSpec) -> FilterSpec:
    """``spec`` as the adapter can take it: a sniff filter where it cannot steal."""
    return spec if link.rx.capabilities.steal else spec.sniff()


def frames(link: Link, n: int, dport: int = 31000, size: int = 64,
           dst_ip: str | None = None, dst_mac: str | None = None) -> list[bytes]:
    """``n`` UDP frames tx → rx with a sequence number in the payload."""
    pay = max(size - 42, 8)
    return [udp_frame(dst_mac or link.rx_mac, link.tx_mac, link.tx_ip, dst_ip or link.rx_ip,
                      40000, dport, struct.pack("!Q", i) + bytes(pay - 8))
            for i in range(n)]


def send(ep: Endpoint, fs: list[bytes], first_id: int = 0) -> None:
    """Stage frames in ``ep``'s buffers and transmit them in one batch (waits for room)."""
    for i, f in enumerate(fs):
        o = i * PKT_BUF_SIZE
        ep.mr.mv[o:o + len(f)] = f
    addrs = np.array([ep.addr(i) for i in range(len(fs))], dtype=np.uint64)
    lens = np.array([len(f) for f in fs], dtype=np.uint32)
    ids = np.arange(first_id, first_id + len(fs), dtype=np.uint32)
    done = 0
    deadline = time.monotonic() + 10
    while done < len(fs):
        rc = ep.vi.transmit_batch(addrs[done:], lens[done:], ids[done:])
        assert rc >= 0, f"transmit_batch returned {rc}"
        done += rc
        ep.vi.transmit_completed(ep.vi.poll())
        if time.monotonic() > deadline:
            raise AssertionError(f"TX stalled after {done} of {len(fs)} frames")


def collect(vi: VirtualInterface, want: int, timeout: float, quiet: float = 0.0
            ) -> list[tuple[int, int, int, int, int, int]]:
    """Poll until ``want`` RX-ring events arrived (or timeout); then ``quiet`` s more.

    Returns (type, rq_id, len, flags, ts_ns, ofs) per event (``ofs``: where the frame
    starts in the posted buffer — 0 on sim/packet, the AF_XDP headroom on xdp).
    """
    got: list[tuple[int, int, int, int, int, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        b = vi.poll()
        _extend(got, b)
        if len(b) == 0:
            time.sleep(0.001)
    end = time.monotonic() + quiet
    while time.monotonic() < end:
        _extend(got, vi.poll())
        time.sleep(0.001)
    return got


def _extend(got: list[tuple[int, int, int, int, int, int]], b: EventBatch) -> None:
    sel = (b.type == int(EventType.RX)) | (b.type == int(EventType.RX_DISCARD)) | (
        b.type == int(EventType.RX_NO_DESC_TRUNC))
    for t, r, ln, fl, ts, of in zip(b.type[sel].tolist(), b.rq_id[sel].tolist(),
                                    b.len[sel].tolist(), b.flags[sel].tolist(),
                                    b.ts_ns[sel].tolist(), b.ofs[sel].tolist()):
        got.append((t, r, ln, fl, ts, of))


def payload_seq(ep: Endpoint, rq_id: int, ofs: int = 0) -> int:
    o = rq_id * PKT_BUF_SIZE + ofs + 42
    return int(struct.unpack("!Q", bytes(ep.mr.mv[o:o + 8]))[0])


# ---- the suite --------------------------------------------------------------------------

class AdapterConformance:
    """The tests every adapter passes. Subclass and provide a ``link`` fixture."""

    port = 31000

    @pytest.fixture
    def eps(self, link: Link) -> Iterator[tuple[Endpoint, Endpoint]]:
        tx = Endpoint(link.tx)
        rx = Endpoint(link.rx)
        try:
            yield tx, rx
        finally:
            rx.close()
            tx.close()

    # ---- control path ----------------------------------------------------------------
    def test_ring_sizes_round_up(self, link: Link) -> None:
        with ProtectionDomain(link.rx) as pd:
            vi = VirtualInterface(pd, rxq=100, txq=300)
            assert vi.receive_capacity() == 127
            assert vi.transmit_capacity() == 511
            vi.close()
            vi = VirtualInterface(pd, rxq=-1, txq=0)
            assert vi.receive_capacity() == 511 and vi.transmit_capacity() == 0
            vi.close()
            for bad in (-5, 1 << 40):
                with pytest.raises(SetupError):
                    VirtualInterface(pd, rxq=bad)

    def test_memory_region_rules(self, link: Link) -> None:
        with ProtectionDomain(link.rx) as pd:
            for bad in (0, 1000, 2049, -2048):
                with pytest.raises(SetupError):
                    MemoryRegion(pd, bad)
            mr = MemoryRegion(pd, 16 * PKT_BUF_SIZE)
            assert mr.dma_addr(4096) == mr.dma_base + 4096
            assert mr.address % 4096 == 0
            with pytest.raises(SetupError):
                mr.dma_addr(16 * PKT_BUF_SIZE)

    def test_bad_data_path_arguments(self, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        EINVAL = -errno.EINVAL
        assert rx.vi.receive_init(rx.addr(0), 0xFFFFFFFF) == EINVAL
        assert rx.vi.receive_init(rx.addr(0) + rx.nbuf * PKT_BUF_SIZE, 1) == EINVAL
        assert rx.vi.receive_init(1 << 62, 1) == EINVAL
        assert tx.vi.transmit(tx.addr(0), 13, 1) == EINVAL
        assert tx.vi.transmit(tx.addr(tx.nbuf - 1), 4096, 1) == EINVAL  # past the region
        assert tx.vi.transmit(tx.addr(0), 60, 0xFFFFFFFF) == EINVAL
        assert tx.vi.transmit_fill_level() == 0 and rx.vi.receive_fill_level() == 0
        assert tx.vi.stats()["rejected_calls"] == 3 and rx.vi.stats()["rejected_calls"] == 3

    def test_fill_level_and_ring_full(self, link: Link) -> None:
        ep = Endpoint(link.rx, nbuf=64, rxq=32)
        try:
            for i in range(31):
                assert ep.vi.receive_init(ep.addr(i), i) == 0
            assert ep.vi.receive_init(ep.addr(31), 31) == -errno.EAGAIN
            assert ep.vi.receive_fill_level() == 31 and ep.vi.receive_space() == 0
            assert ep.vi.receive_push() == 31
        finally:
            ep.close()

    def test_filter_spec_conflicts_rejected(self) -> None:
        with pytest.raises(SetupError):
            FilterSpec.ip4_local("udp", "198.18.0.1", 1).eth_local("02:00:00:00:00:01")
        with pytest.raises(SetupError):
            FilterSpec.unicast_all().multicast_all()
        with pytest.raises(SetupError):
            FilterSpec.ip4_local("udp", "not-an-ip", 1)

    def test_declared_capabilities_hold(self, link: Link) -> None:
        """Each declared capability works; each declared lack is refused."""
        caps = link.rx.capabilities
        assert caps.adapter == link.rx.adapter.name
        assert caps.steal or caps.sniff
        assert caps.rx_queues >= 1
        now = link.rx.now_ns()
        assert type(now) is int and now > 0  # noqa: E721 (an int, not a numpy scalar)
        assert link.rx.now_ns() >= now, "the adapter clock went backwards"
        info = link.rx.interface
        assert len(info.mac) == 6 and info.mtu >= 576 and link.rx_ip in info.ipv4

        def check(declared: bool, attempt: Callable[[], object]) -> None:
            if declared:
                attempt()
            else:
                with pytest.raises(UnsupportedError):
                    attempt()

        with ProtectionDomain(link.rx) as pd:
            MemoryRegion(pd, 16 * PKT_BUF_SIZE)
            vi = VirtualInterface(pd)
            check(caps.sniff, lambda: vi.filter_add(
                FilterSpec.ip4_local("udp", link.rx_ip, self.port + 20).sniff()))
            check(caps.steal, lambda: vi.filter_add(
                FilterSpec.ip4_local("udp", link.rx_ip, self.port + 21)))
            check(caps.multi_region, lambda: MemoryRegion(pd, 16 * PKT_BUF_SIZE))
            check(caps.pio, lambda: vi.pio)
            check(caps.vi_sets, lambda: VISet(pd, 1).close())
            for flag, name in ((ViFlags.RX_TIMESTAMPS, "rx_timestamps"),
                               (ViFlags.TX_TIMESTAMPS, "tx_timestamps"),
                               (ViFlags.RX_ZEROCOPY, "zero_copy")):
                def open_close(f: ViFlags = flag) -> None:
                    VirtualInterface(pd, flags=f).close()

                check(getattr(caps, name), open_close)
            rc = vi.eventq_put(0x77)
            if caps.sw_events:
                assert rc == 0
                evs = vi.eventq_poll(4)
                assert [(e.type, e.len) for e in evs] == [(EventType.SW, 0x77)]
            else:
                assert rc < 0 and vi.eventq_poll(4) == []

    # ---- data path -------------------------------------------------------------------
    def test_udp_delivery_batch(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port)))
        assert rx.post(range(256)) == 256
        fs = frames(link, 200, self.port)
        t0 = link.rx.now_ns()
        send(tx, fs)
        got = collect(rx.vi, 200, link.timeout)
        t1 = link.rx.now_ns()
        assert len(got) == 200, f"received {len(got)} of 200"
        assert all(t == int(EventType.RX) for t, *_ in got)
        seqs = [payload_seq(rx, rq, of) for _, rq, _, _, _, of in got]
        assert seqs == list(range(200)), "frames lost, duplicated or reordered"
        ln0 = len(fs[0])
        assert all(ln in (ln0, max(ln0, 60)) for _, _, ln, *_ in got)
        o = got[0][1] * PKT_BUF_SIZE + got[0][5]
        assert bytes(rx.mr.mv[o:o + ln0]) == fs[0]
        ts = [g[4] for g in got]
        if link.rx.capabilities.rx_timestamps:  # stamped on the adapter's clock, in the window
            assert all(t0 <= t <= t1 for t in ts), (t0, ts[0], ts[-1], t1)
        else:
            assert ts == [0] * len(ts)
        assert ts == sorted(ts), "RX timestamps go backwards"
        assert rx.vi.clock_source and (rx.vi.clock_source == "hw") <= \
            link.rx.capabilities.hw_timestamps
        st = rx.vi.stats()
        assert st["rx_packets"] >= 200 and st["rx_bytes"] >= 200 * ln0

    def test_tx_completions_in_order(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, _ = eps
        fs = frames(link, 300, self.port + 1)
        for i, f in enumerate(fs):
            tx.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
        ids: list[int] = []
        sent = 0
        deadline = time.monotonic() + link.timeout
        while (sent < 300 or len(ids) < 300) and time.monotonic() < deadline:
            if sent < 300:
                rc = tx.vi.transmit_init(tx.addr(sent), len(fs[sent]), 1000 + sent)
                if rc == 0:
                    sent += 1
                    if sent % 7 == 0 or sent == 300:
                        tx.vi.transmit_push()
                else:
                    assert rc == -errno.EAGAIN
                    tx.vi.transmit_push()
            for ev in tx.vi.eventq_poll(64):
                if ev.type == EventType.TX:
                    got = tx.vi.transmit_unbundle(ev)
                    assert 1 <= len(got) <= EF_VI_TRANSMIT_BATCH
                    ids.extend(got)
        assert ids == [1000 + i for i in range(300)]
        assert tx.vi.transmit_fill_level() == 0
        assert tx.vi.stats()["tx_packets"] >= 300

    def test_tx_timestamps(self, link: Link) -> None:
        """With ``ViFlags.TX_TIMESTAMPS`` every sent frame completes with its own TX
        event whose ``ts_ns`` lies between the clock's readings around the send."""
        with ProtectionDomain(link.tx) as pd:
            skip_if_lacking(link.tx.capabilities, "tx_timestamps",
                            lambda: VirtualInterface(pd, flags=ViFlags.TX_TIMESTAMPS))
            mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
            vi = VirtualInterface(pd, rxq=0, txq=64, flags=ViFlags.TX_TIMESTAMPS)
            fs = frames(link, 40, self.port + 2)
            for i, f in enumerate(fs):
                mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
            t0 = link.tx.now_ns()
            for i, f in enumerate(fs):
                assert vi.transmit(mr.dma_base + i * PKT_BUF_SIZE, len(f), 500 + i) == 0
            ids: list[int] = []
            stamps: list[int] = []
            deadline = time.monotonic() + link.timeout
            while len(ids) < 40 and time.monotonic() < deadline:
                for ev in vi.eventq_poll(64):
                    assert ev.type == EventType.TX
                    got = vi.transmit_unbundle(ev)
                    assert len(got) == 1, "a TX event per frame with TX timestamps on"
                    ids.extend(got)
                    stamps.append(ev.ts_ns)
            t1 = link.tx.now_ns()
            assert ids == [500 + i for i in range(40)]
            assert all(t0 <= t <= t1 for t in stamps), (t0, stamps[:3], t1)
            assert stamps == sorted(stamps)
            assert vi.stats().get("tx_timestamp_missing", 0) == 0

    def test_per_packet_receive(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port + 2)))
        for i in range(16):
            assert rx.vi.receive_post(rx.addr(i), i) == 0
        send(tx, frames(link, 10, self.port + 2))
        evs: list[Event] = []
        deadline = time.monotonic() + link.timeout
        while len(evs) < 10 and time.monotonic() < deadline:
            evs += [e for e in rx.vi.eventq_poll(8) if e.type == EventType.RX]
        assert [payload_seq(rx, e.rq_id, e.ofs) for e in evs] == list(range(10))
        assert all(e.sop and not e.cont for e in evs)
        assert rx.vi.receive_fill_level() == 6

    def test_per_packet_loop_refill(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        """efsink's loop — ``eventq_poll``, ``receive_init`` per RX event, one
        ``receive_push`` per poll — takes 40 frames in order on 8 buffers reused 5 times."""
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port + 11)))
        rx.post(range(8))
        fs = frames(link, 40, self.port + 11)
        seqs: list[int] = []
        for burst in range(5):
            send(tx, fs[8 * burst:8 * burst + 8], first_id=8 * burst)
            deadline = time.monotonic() + link.timeout
            while len(seqs) < 8 * burst + 8 and time.monotonic() < deadline:
                for e in rx.vi.eventq_poll(64):
                    if e.type == EventType.RX:
                        assert e.sop and not e.cont and 0 <= e.rq_id < 8
                        seqs.append(payload_seq(rx, e.rq_id, e.ofs))
                        assert rx.vi.receive_init(rx.addr(e.rq_id), e.rq_id) == 0
                assert rx.vi.receive_push() >= 0
        assert seqs == list(range(40))
        assert rx.vi.receive_fill_level() == 8 and rx.vi.stats()["rx_packets"] >= 40

    def test_poll_rx1_one_frame_path(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        """``poll_rx1`` hands over whole frames one by one (id, ``rx1`` = ofs, len, ts) or
        says -2 "take it with poll()"; together they deliver every frame once, in order."""
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port + 9)))
        assert rx.vi.poll_rx1() in (-1, -2)  # nothing waits (-2: no one-frame path here)
        rx.post(range(16))
        fs = frames(link, 10, self.port + 9)
        send(tx, fs)
        seqs: list[int] = []
        deadline = time.monotonic() + link.timeout
        while len(seqs) < 10 and time.monotonic() < deadline:
            i = rx.vi.poll_rx1()
            if i >= 0:
                ofs, ln, ts = rx.vi.rx1
                assert 0 <= i < 16 and ln in (len(fs[0]), max(len(fs[0]), 60))
                assert ts > 0 or not link.rx.capabilities.rx_timestamps
                seqs.append(payload_seq(rx, i, ofs))
            elif i == -2:  # not the one-frame case: the batch poll takes it
                got: list[tuple[int, int, int, int, int, int]] = []
                _extend(got, rx.vi.poll())
                seqs += [payload_seq(rx, rq, of) for t, rq, _, _, _, of in got
                         if t == int(EventType.RX)]
            else:
                assert i == -1
        assert seqs == list(range(10)), seqs
        assert rx.vi.receive_fill_level() == 6 and rx.vi.stats()["rx_packets"] >= 10

    def test_filter_del_stops_delivery(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        cookie = rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip,
                                                                      self.port + 3)))
        rx.post(range(64))
        send(tx, frames(link, 5, self.port + 3))
        assert len(collect(rx.vi, 5, link.timeout)) == 5
        rx.vi.filter_del(cookie)
        send(tx, frames(link, 5, self.port + 3))
        assert collect(rx.vi, 1, 0.3) == []
        with pytest.raises(SetupError):
            rx.vi.filter_del(cookie)

    def test_other_flows_are_not_taken(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port + 4)))
        rx.post(range(64))
        before = link.kernel_rx_count() if link.kernel_rx_count else 0
        send(tx, frames(link, 8, self.port + 5))  # another port: not ours
        assert collect(rx.vi, 1, 0.3) == []
        if link.kernel_rx_count is not None:
            deadline = time.monotonic() + link.timeout
            while link.kernel_rx_count() - before < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert link.kernel_rx_count() - before >= 8, "the kernel did not get its frames"

    def test_bpf_expression_filter(self, link: Link, eps: tuple[Endpoint, Endpoint]) -> None:
        """A tcpdump expression (libpcap's classic BPF) as a filter: only what it accepts
        arrives; a steal leaves the rest to the kernel, and removing it stops delivery."""
        from efvi.bpf import libpcap
        if not libpcap.available():
            pytest.skip("needs libpcap0.8 (apt-get install libpcap0.8)")
        tx, rx = eps
        port = self.port + 11
        # the payload starts with a big-endian u64 sequence number: udp[15] is its low byte
        expr = f"udp dst port {port} and udp[15] & 1 = 1"
        cookie = rx.vi.filter_add(spec_for(link, FilterSpec.expression(expr)))
        rx.post(range(64))
        before = link.kernel_rx_count() if link.kernel_rx_count else 0
        send(tx, frames(link, 20, port) + frames(link, 4, port + 1))
        got = collect(rx.vi, 10, link.timeout, quiet=0.05)
        ofs = got[0][5] if got else 0
        assert sorted(payload_seq(rx, r, ofs) for _, r, _, _, _, _ in got) == list(range(1, 20, 2))
        if link.kernel_rx_count is not None:
            want = 14 if link.rx.capabilities.steal else 24
            deadline = time.monotonic() + link.timeout
            while link.kernel_rx_count() - before < want and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            assert link.kernel_rx_count() - before == want
        rx.vi.filter_del(cookie)
        send(tx, frames(link, 4, port))
        assert collect(rx.vi, 1, 0.3) == []

    def test_no_descriptor_drops_are_counted(self, link: Link,
                                             eps: tuple[Endpoint, Endpoint]) -> None:
        tx, rx = eps
        rx.vi.filter_add(spec_for(link, FilterSpec.ip4_local("udp", link.rx_ip, self.port + 6)))
        rx.post(range(8))
        send(tx, frames(link, 40, self.port + 6))
        got = collect(rx.vi, 40, 0.5, quiet=0.2)
        st = rx.vi.stats()
        assert len(got) == 8
        assert st["drops"] >= 32, f"only {st['drops']} drops counted: {st}"

    def test_duplicate_unicast_filter(self, link: Link) -> None:
        with ProtectionDomain(link.rx) as pd:
            a, b = VirtualInterface(pd), VirtualInterface(pd)
            spec = FilterSpec.ip4_local("udp", link.rx_ip, self.port + 7)
            # duplicates of a sniff filter only copy: the test is about stealing
            skip_if_lacking(link.rx.capabilities, "steal", lambda: a.filter_add(spec))
            a.filter_add(spec)
            with pytest.raises(FilterExistsError):
                b.filter_add(spec)
            with pytest.raises(FilterExistsError):
                a.filter_add(spec)

    def test_multicast_filter_replicates(self, link: Link) -> None:
        group = "239.18.0.7"
        ep1, ep2, tx = Endpoint(link.rx), Endpoint(link.rx), Endpoint(link.tx)
        try:
            spec = spec_for(link, FilterSpec.ip4_local("udp", group, self.port + 8))
            ep1.vi.filter_add(spec)
            skip_if_lacking(link.rx.capabilities, "mcast_replicate",
                            lambda: ep2.vi.filter_add(spec))
            ep2.vi.filter_add(spec)
            ep1.post(range(32))
            ep2.post(range(32))
            send(tx, frames(link, 10, self.port + 8, dst_ip=group,
                            dst_mac="01:00:5e:12:00:07"))
            assert len(collect(ep1.vi, 10, link.timeout)) == 10
            assert len(collect(ep2.vi, 10, link.timeout)) == 10
        finally:
            for e in (ep1, ep2, tx):
                e.close()

    def test_sw_events_and_close(self, link: Link) -> None:
        pd = ProtectionDomain(link.rx)
        mr = MemoryRegion(pd, 4 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd)
        rc = vi.eventq_put(0x1234)
        if link.rx.capabilities.sw_events:
            assert rc == 0
            evs = vi.eventq_poll(4)
            assert [(e.type, e.len) for e in evs] == [(EventType.SW, 0x1234)]
        else:
            assert rc < 0
        vi.close()
        vi.close()
        # the data path returns, never raises: -EBADF, or an empty batch
        EBADF = -errno.EBADF
        addrs = np.array([mr.dma_base], np.uint64)
        ids = np.array([1], np.uint32)
        assert vi.closed
        assert vi.transmit(mr.dma_base, 60, 1) == EBADF
        assert vi.transmit_init(mr.dma_base, 60, 1) == EBADF
        assert vi.transmitv(((mr.dma_base, 60),), 1) == EBADF
        assert vi.transmit_batch(addrs, np.array([60], np.uint32), ids) == EBADF
        assert vi.transmit_push() == EBADF
        assert vi.transmit_pio(0, 64, 1) == EBADF
        assert vi.transmit_copy_pio(0, bytes(64), 1) == EBADF
        assert vi.receive_post(mr.dma_base, 1) == EBADF
        assert vi.receive_init(mr.dma_base, 1) == EBADF
        assert vi.receive_post_batch(addrs, ids) == EBADF
        assert vi.receive_push() == EBADF
        assert vi.eventq_put(1) == EBADF
        assert vi.poll_rx1() == EBADF
        assert len(vi.poll()) == 0 and vi.eventq_poll() == []
        t0 = time.monotonic()
        vi.eventq_wait(30_000_000_000)  # returns, not blocks 30 s: nothing will arrive
        assert time.monotonic() - t0 < 10.0, "eventq_wait blocked on a closed VI"
        tx_ev = Event(EventType.TX, 0, 0, 0, 0, 1, 0, 0)
        assert vi.transmit_unbundle(tx_ev) == []
        assert len(vi.transmit_completed(vi.poll())) == 0
        with pytest.raises(ClosedError):  # the control path raises
            vi.filter_add(FilterSpec.unicast_all())
        pd.close()
        pd.close()
        with pytest.raises(ClosedError):
            VirtualInterface(pd)
