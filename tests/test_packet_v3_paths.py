"""The ``packet`` adapter's TPACKET_V3 block path against its V2 slot path, and the
coalesced wake-ups of ``efvi sink``.

The same traffic is sniffed by a V2 VI and a V3 VI on one interface: the frames, their
lengths, flags and order must be identical — the V3 VI taking runs of one stride through
strided views (buffers posted in address order, then shuffled; a small ring so the
descriptor FIFO wraps), frames of a few lengths within one 8-byte word, multicast frames
and long frames through the general path. Nothing here asserts on time.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface)
from efvi.apps.sink import Sink
from efvi.cli.main import main as cli_main
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError
from efvi.events import RxFlags
from efvi.testing import netns
from efvi.wire.build import udp_frame

PORT = 9100


def _skip_unless_possible() -> None:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    _skip_unless_possible()
    with netns.veth_pair(subnet=47) as p:
        yield p


class Rx:
    """A sniffing VI whose buffers go back to the ring as their events are read."""

    def __init__(self, url: str, rxq: int, order: list[int]) -> None:
        self.driver = Driver.open(url)
        self.pd = ProtectionDomain(self.driver)
        self.mr = MemoryRegion(self.pd, len(order) * PKT_BUF_SIZE)
        self.vi = VirtualInterface(self.pd, rxq=rxq, txq=0)
        self.vi.filter_add(FilterSpec.expression(f"udp and dst port {PORT}", sniff=True))
        self.order = order  # buffer ids in the order they are posted
        self.addrs = self.mr.dma_addrs()
        self.next = 0
        self.got: list[tuple[int, int, bytes]] = []  # (flags, len, frame)
        self.ts: list[int] = []
        self._post(self.vi.receive_capacity())

    def _post(self, n: int) -> None:
        ids = np.array([self.order[(self.next + i) % len(self.order)] for i in range(n)],
                       dtype=np.uint32)
        assert self.vi.receive_post_batch(self.addrs[ids], ids) == n
        self.next += n

    def collect(self, want: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < want and time.monotonic() < deadline:
            b = self.vi.poll()
            done = 0
            for e in b.events():
                if e.type == EventType.RX:
                    frame = self.mr.read(self.mr.dma_base + e.rq_id * PKT_BUF_SIZE, e.len)
                    self.got.append((int(e.flags), e.len, frame))
                    self.ts.append(e.ts_ns)
                    done += 1
                else:
                    assert e.type == EventType.RX, e  # no discards, no truncation here
            if done:
                self._post(done)
            else:
                self.vi.eventq_wait(2_000_000)

    def close(self) -> None:
        self.driver.close()


def _traffic(pair: netns.VethPair) -> list[bytes]:
    a, b = pair.a, pair.b
    out = []
    for i in range(700):
        if i >= 650 and i % 5 == 0:  # long frames: the general path, changes of stride
            payload = bytes([i & 0xFF]) * 900
        elif 300 <= i < 400:  # 60..64 bytes: one stride, lengths within one word
            payload = b"%03d" % i + bytes(15 + i % 5)
        else:
            payload = b"%03d" % i + bytes(15)  # 60 bytes: one stride
        dst_mac, dst_ip = (("01:00:5e:01:02:03", "239.1.2.3") if i % 7 == 3
                           else (b.mac, b.ip))  # multicast: the MULTICAST flag
        out.append(udp_frame(dst_mac, a.mac, a.ip, dst_ip, 40000, PORT, payload))
    return out


@pytest.mark.integration
def test_v3_blocks_deliver_what_v2_slots_deliver(pair: netns.VethPair) -> None:
    frames = _traffic(pair)
    with netns.enter(pair.b.netns):
        v2 = Rx(f"packet:{pair.b.ifname}?rx_ring=v2", 1024, list(range(1024)))
        shuffled = list(range(512))
        random.Random(7).shuffle(shuffled)  # buffers in no address order
        v3 = Rx(f"packet:{pair.b.ifname}?rx_ring=v3&retire_ms=2", 256, shuffled)
        # in address order (one slice store), and dir=inout (the OUTGOING flag is read)
        v3o = Rx(f"packet:{pair.b.ifname}?rx_ring=v3&retire_ms=2&dir=inout", 256,
                 list(range(512)))
    try:
        assert v2.vi._hw._blocks is None and v3.vi._hw._blocks is not None  # type: ignore[attr-defined]
        with netns.enter(pair.a.netns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((pair.a.ifname, 0))
        try:
            for i in range(0, len(frames), 100):  # bursts: blocks of many frames
                for f in frames[i:i + 100]:
                    s.send(f)
                for rx in (v2, v3, v3o):  # keep each VI's buffers coming back
                    rx.collect(i + 100, timeout=5.0)
        finally:
            s.close()
        for rx in (v2, v3, v3o):
            rx.collect(len(frames))
        want = [(int(RxFlags.SOP) | (int(RxFlags.MULTICAST) if f[0] & 1 else 0), len(f), f)
                for f in frames]
        assert v2.got == want
        assert v3.got == want
        assert v3o.got == want
        for rx in (v2, v3, v3o):
            assert all(t > 0 for t in rx.ts) and rx.ts == sorted(rx.ts)
            st = rx.vi.stats()
            assert st["rx_packets"] == len(frames) and st["rx_nodesc_drops"] == 0, st
            assert st["rx_bytes"] == sum(len(f) for f in frames)
    finally:
        for rx in (v2, v3, v3o):
            rx.close()


@pytest.mark.integration
@pytest.mark.parametrize("url", ["packet:{IF}", "xdp:{IF}?mode=skb"])
def test_sink_with_a_latency_budget_counts_every_frame(pair: netns.VethPair,
                                                       url: str) -> None:
    """Small bursts with gaps between: the sink naps after each small batch (xdp), or
    the V3 retire timeout holds them (packet); every frame is counted, none dropped."""
    a, b = pair.a, pair.b
    frames = [udp_frame(b.mac, a.mac, a.ip, b.ip, 40000, PORT, b"%05d" % i + bytes(13))
              for i in range(400)]
    spec = FilterSpec.ip4_local("udp", b.ip, PORT)
    if url.startswith("packet"):
        spec = spec.sniff()
    with netns.enter(b.netns):
        sink = Sink(url.replace("{IF}", b.ifname), [spec], nbuf=4096, rxq=4096,
                    latency_ms=20)
    with netns.enter(a.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.ifname, 0))

    def feed() -> None:
        for i in range(0, len(frames), 8):
            for f in frames[i:i + 8]:
                s.send(f)
            time.sleep(0.002)

    seen: list[bytes] = []
    t = threading.Thread(target=feed)
    try:
        if url.startswith("packet"):  # the budget became the V3 retire timeout
            assert sink.driver.adapter.retire_ms == 20  # type: ignore[attr-defined]
        t.start()
        st = sink.run(count=len(frames), duration_s=20,
                      on_packet=lambda ts, f, fl: seen.append(f[42:47]))
    finally:
        t.join()
        s.close()
        sink.close()
    assert st.rx_packets == len(frames), st
    assert seen == [b"%05d" % i for i in range(len(frames))]
    assert st.drops == 0, st.drop_causes


def test_sink_latency_budget_is_checked() -> None:
    with pytest.raises(SetupError, match="latency budget"):
        Sink("sim", [FilterSpec.unicast_all()], latency_ms=-1)
    with pytest.raises(SetupError, match="latency budget"):
        Sink("sim", [FilterSpec.unicast_all()], latency_ms=1001)


def test_cli_sink_rejects_a_bad_latency(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["sink", "--latency-ms", "-3", "sim", "unicast-all"]) == 2
    assert "--latency-ms" in capsys.readouterr().err
