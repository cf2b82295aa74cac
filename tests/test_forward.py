"""efvi forward on the sim adapter: zero-copy through a region shared by two PDs,
buffers back to RX only after TX completion, drops counted by cause."""

from __future__ import annotations

import numpy as np
import pytest

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface)
from efvi.apps.forward import Forwarder
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.wire import udp_frame


def _frame(i: int, size: int = 100, dst: str = "02:00:c6:12:00:99") -> bytes:
    return udp_frame(dst, "02:00:c6:12:00:01", "198.18.0.1", "198.18.1.2", 1000 + i % 50,
                     7000, i.to_bytes(4, "big") + bytes(max(0, size - 46)))


class Port:
    """A test port with a VI: sends frames, counts what it receives."""

    def __init__(self, url: str, rx: bool = True) -> None:
        self.d = Driver.open(url)
        pd = ProtectionDomain(self.d)
        self.mr = MemoryRegion(pd, 1024 * PKT_BUF_SIZE)
        self.vi = VirtualInterface(pd, rxq=512, txq=256)
        if rx:
            self.vi.filter_add(FilterSpec.unicast_all())
            self.vi.receive_post_batch(self.mr.dma_addrs()[:511], np.arange(511, dtype=np.uint32))
        self.got: list[bytes] = []
        self.tx_free = list(range(512, 1024))

    def send(self, frames: list[bytes]) -> int:
        sent = 0
        for f in frames:
            if not self.tx_free:
                break
            k = self.tx_free.pop()
            self.mr.mv[k * PKT_BUF_SIZE:k * PKT_BUF_SIZE + len(f)] = f
            if self.vi.transmit(self.mr.dma_addr(k * PKT_BUF_SIZE), len(f), k) != 0:
                self.tx_free.append(k)
                break
            sent += 1
        return sent

    def poll(self) -> None:
        for ev in self.vi.eventq_poll(256):
            if ev.type == EventType.RX:
                off = ev.rq_id * PKT_BUF_SIZE + ev.ofs
                self.got.append(bytes(self.mr.mv[off:off + ev.len]))
                self.vi.receive_post(self.mr.dma_addr(ev.rq_id * PKT_BUF_SIZE), ev.rq_id)
            elif ev.type in (EventType.TX, EventType.TX_ERROR):
                self.tx_free.extend(self.vi.transmit_unbundle(ev))


def _pump(gen: Port, fwd: Forwarder, sink: Port, frames: list[bytes]) -> None:
    i = 0
    for _ in range(20000):
        if i < len(frames):
            i += gen.send(frames[i:i + 64])
        gen.poll()
        fwd.step()
        sink.poll()
        if i >= len(frames) and len(sink.got) >= len(frames):
            break
    for _ in range(50):
        fwd.step()
        sink.poll()
        gen.poll()


def test_sim_forward_zero_copy_delivers_every_frame_in_order() -> None:
    w = f"fw{id(object())}"
    gen, sink = Port(f"sim:g{w}?wire={w}a", rx=False), Port(f"sim:s{w}?wire={w}b")
    fwd = Forwarder(f"sim:fa{w}?wire={w}a", f"sim:fb{w}?wire={w}b", rxq=256, txq=256,
                    pool=512)
    try:
        assert fwd.mode == "zero-copy"
        assert fwd.b.mr is not None and fwd.b.mr.origin is fwd.a.mr
        frames = [_frame(i) for i in range(5000)]
        _pump(gen, fwd, sink, frames)
        st = fwd.dirs[0]
        assert sink.got == frames
        assert st.forwarded == 5000 and st.drops == 0 and st.user_copies == 0
    finally:
        fwd.close()
        gen.d.close()
        sink.d.close()


def test_rx_buffer_is_reposted_only_after_tx_completion() -> None:
    w = f"fo{id(object())}"
    gen = Port(f"sim:g{w}?wire={w}a", rx=False)
    fwd = Forwarder(f"sim:fa{w}?wire={w}a", f"sim:fb{w}?wire={w}b", rxq=64, txq=64,
                    pool=64)
    try:
        a_vi = fwd.a.vi
        assert a_vi is not None
        start = a_vi.receive_fill_level()
        gen.send([_frame(i) for i in range(10)])
        gen.poll()
        # one poll of A forwards the frames to B's TX ring: A's RX ring is now short of
        # those 10 buffers until B's TX completions are harvested
        fwd._poll(fwd.a, fwd.b, fwd.dirs[0], None)
        assert a_vi.receive_fill_level() == start - 10
        for _ in range(5):
            fwd._poll(fwd.b, fwd.a, None, fwd.dirs[0])
        assert a_vi.receive_fill_level() == start
    finally:
        fwd.close()
        gen.d.close()


def test_oversize_frames_are_counted_never_sent_cut() -> None:
    w = f"fm{id(object())}"
    gen, sink = (Port(f"sim:g{w}?wire={w}a&mtu=9000", rx=False),
                 Port(f"sim:s{w}?wire={w}b&mtu=1500"))
    fwd = Forwarder(f"sim:fa{w}?wire={w}a&mtu=9000", f"sim:fb{w}?wire={w}b&mtu=1500",
                    rxq=256, txq=256, pool=512)
    try:
        frames = [_frame(i, size=1514 if i % 2 else 1515 + 100) for i in range(200)]
        _pump(gen, fwd, sink, frames)
        d = fwd.dirs[0]
        assert d.forwarded == 100 and d.oversize_drops == 100
        assert sink.got == [f for f in frames if len(f) <= 1514]
    finally:
        fwd.close()
        gen.d.close()
        sink.d.close()


def test_both_directions() -> None:
    w = f"fb{id(object())}"
    left, right = Port(f"sim:l{w}?wire={w}a"), Port(f"sim:r{w}?wire={w}b")
    fwd = Forwarder(f"sim:fa{w}?wire={w}a", f"sim:fb{w}?wire={w}b", both=True, rxq=256,
                    txq=256, pool=512)
    try:
        fl = [_frame(i, dst="02:00:00:00:00:0b") for i in range(300)]
        fr = [_frame(i, dst="02:00:00:00:00:0a") for i in range(300, 600)]
        for k in range(0, 300, 50):
            left.send(fl[k:k + 50])
            right.send(fr[k:k + 50])
            for _ in range(5):
                left.poll()
                right.poll()
                fwd.step()
        for _ in range(20):
            fwd.step()
            left.poll()
            right.poll()
        assert right.got == fl and left.got == fr
        assert [d.forwarded for d in fwd.dirs] == [300, 300]
    finally:
        fwd.close()
        left.d.close()
        right.d.close()


def test_share_rules() -> None:
    with Driver.open("sim:shx") as d1, Driver.open("sim:shy") as d2:
        pd1, pd2 = ProtectionDomain(d1), ProtectionDomain(d2)
        mr = MemoryRegion(pd1, 4 * PKT_BUF_SIZE)
        other = mr.share(pd2)
        assert other.dma_base != 0 and other.buf is not mr.buf
        other.buf[5] = 42
        assert mr.buf[5] == 42  # the same bytes
        with pytest.raises(SetupError, match="already registered"):
            mr.share(pd2)
        mr.close()
        assert other.buf[5] == 42  # still mapped for the other PD
        other.close()


def test_share_across_adapter_kinds_is_refused(veth_unused: None = None) -> None:
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root for a packet driver")
    from efvi.testing import netns
    with netns.veth_pair(subnet=43) as p:
        with netns.enter(p.a.netns):
            dp = Driver.open(f"packet:{p.a.ifname}")
        with dp, Driver.open("sim:kinds") as ds:
            mr = MemoryRegion(ProtectionDomain(ds), 4 * PKT_BUF_SIZE)
            with pytest.raises(UnsupportedError, match="same adapter"):
                mr.share(ProtectionDomain(dp))
