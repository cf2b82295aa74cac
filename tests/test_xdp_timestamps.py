"""Hardware RX timestamps on xdp: the kfunc program variant, its fallbacks, the decode.

The BTF scan and the variant's encoding are pure. Over veth (root): veth implements
the ``bpf_xdp_metadata_rx_timestamp`` op but has no clock, so the device-bound kfunc
program loads and runs while every frame keeps its software stamp (``xdp-sw``,
CLOCK_REALTIME); skb mode, ``ts=sw``, a missing kfunc and a program the kernel refuses
all fall back to the plain program. The user-space decode of a hardware stamp is
checked by writing a flagged stamp into a received frame's metadata before the poll.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from efvi import (Driver, FilterSpec, MemoryRegion, ProtectionDomain, UnsupportedError,
                  VirtualInterface)
from efvi.bpf import ebpf as asm, syscall as bpf
from efvi.adapters.xdp.adapter import RX_FLAG_HW_TS, XdpAdapter, XdpVI
from efvi.adapters.xdp.program import HW_TS_FLAG, RX_TS_KFUNC, build_program
from efvi.adapters.xdp.xsk import ADDR_MASK, OFFSET_SHIFT
from efvi.events import EventType
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp, xdp_attached


# ---- pure ---------------------------------------------------------------------------------
def _btf_blob(types: list[tuple[str, int, int, bytes]]) -> bytes:
    """A minimal BTF file: (name, kind, vlen, extra bytes) per type."""
    strs = b"\0"
    recs = b""
    for name, kind, vlen, extra in types:
        off = len(strs)
        strs += name.encode() + b"\0"
        recs += struct.pack("<III", off, (kind << 24) | vlen, 0) + extra
    hdr = struct.pack("<HBBIIIII", bpf.BTF_MAGIC, 1, 0, 24, 0, len(recs), len(recs), len(strs))
    return hdr + recs + strs


def test_btf_scan_skips_kind_specific_bytes(tmp_path: object) -> None:
    import pathlib
    p = pathlib.Path(str(tmp_path)) / "btf"
    p.write_bytes(_btf_blob([
        ("int", 1, 0, bytes(4)),                     # id 1: INT + 4
        ("s", 4, 2, bytes(24)),                      # id 2: STRUCT, 2 members
        ("proto", 13, 2, bytes(16)),                 # id 3: FUNC_PROTO, 2 params
        (RX_TS_KFUNC + "_x", 12, 0, b""),            # id 4: a longer name, not ours
        (RX_TS_KFUNC, 12, 0, b""),                   # id 5: the FUNC
    ]))
    assert bpf.btf_find_func(RX_TS_KFUNC, str(p)) == 5
    assert bpf.btf_find_func("s", str(p)) is None  # a STRUCT, not a FUNC
    assert bpf.btf_find_func(RX_TS_KFUNC, str(p) + ".missing") is None


def test_kfunc_variant_calls_the_kfunc_and_flags_hardware_stamps() -> None:
    plain = asm.decode(build_program().assemble({n: 3 for n in
                                                 ("config", "ftable", "kmacs", "xsks")}))
    hw = asm.decode(build_program(rx_ts_kfunc=4242).assemble(
        {n: 3 for n in ("config", "ftable", "kmacs", "xsks")}))
    kcall = [i for i in hw if i[0] == 0x85 and i[2] == asm.BPF_PSEUDO_KFUNC_CALL]
    assert len(kcall) == 1 and kcall[0][4] == 4242
    assert not [i for i in plain if i[0] == 0x85 and i[2] == asm.BPF_PSEUDO_KFUNC_CALL]
    # the 64-bit flag is loaded as an immediate (second slot holds the high half)
    his = [hw[k + 1][4] for k, i in enumerate(hw) if i[0] == 0x18 and i[2] == 0]
    assert (HW_TS_FLAG >> 32) - (1 << 32) in his


# ---- over veth -------------------------------------------------------------------------------
@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=73) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _open(side: netns.Side, url: str) -> Driver:
    with netns.enter(side.netns):
        return Driver.open(url)


def _adapter(drv: Driver) -> XdpAdapter:
    a = drv.adapter
    assert isinstance(a, XdpAdapter)
    return a


def _receive(side_a: netns.Side, side_b: netns.Side, drv: Driver, port: int,
             count: int = 1) -> tuple[VirtualInterface, list[tuple[int, int]], int, int]:
    """Steal UDP ``port`` on a VI, send ``count`` datagrams from the peer; return
    (vi, [(flags, ts_ns)] of the RX events, t0, t1) with t0/t1 realtime around it."""
    pd = ProtectionDomain(drv)
    mr = MemoryRegion(pd, 64 * 2048)
    vi = VirtualInterface(pd)
    vi.filter_add(FilterSpec.ip4_local("udp", side_a.ip, port))
    vi.receive_post_batch(mr.dma_addrs()[:32], np.arange(32, dtype=np.uint32))
    with netns.enter(side_b.netns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.time_ns()
    for i in range(count):
        tx.sendto(b"ts%d" % i, (side_a.ip, port))
    tx.close()
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        got += [(int(e.flags), int(e.ts_ns)) for e in vi.eventq_poll(64)  # type: ignore[attr-defined]
                if e.type == EventType.RX]
    t1 = time.time_ns()
    return vi, got, t0, t1


def test_kfunc_program_runs_on_veth_and_frames_keep_software_stamps(
        pair: netns.VethPair) -> None:
    a, b = pair.a, pair.b
    if bpf.btf_find_func(RX_TS_KFUNC) is None:
        pytest.skip(f"kernel without {RX_TS_KFUNC}")
    drv = _open(a, f"xdp:{a.ifname}")
    try:
        ad = _adapter(drv)
        info = ad.rx_timestamp_info
        assert info["path"] == "kfunc" and ad.program.hw_kfunc and ad.attach_mode == "drv"
        # veth: the op exists but there is no clock, and ethtool -T lists no hardware
        assert info["driver_hw_rx"] is False and drv.capabilities.hw_timestamps is False
        assert "ethtool -T" in str(info["why_not"])
        line = xdp_attached(a)
        assert "prog/xdp" in line and "xdpgeneric" not in line
        vi, got, t0, t1 = _receive(a, b, drv, 7101, count=3)
        assert len(got) == 3
        for flags, ts in got:
            assert isinstance(ts, int) and t0 - 1_000_000 <= ts <= t1
            assert not flags & RX_FLAG_HW_TS
        assert vi.clock_source == "xdp-sw"
    finally:
        drv.close()


@pytest.mark.parametrize("url_opts,note", [
    ("?mode=skb", "drv"),
    ("?ts=sw", "ts=sw"),
])
def test_fallback_to_the_plain_program(pair: netns.VethPair, url_opts: str, note: str) -> None:
    a, b = pair.a, pair.b
    drv = _open(a, f"xdp:{a.ifname}{url_opts}")
    try:
        ad = _adapter(drv)
        assert not ad.program.hw_kfunc and ad.rx_timestamp_info["path"] == "ktime"
        assert note in str(ad.rx_timestamp_info["why_not"])
        assert drv.capabilities.hw_timestamps is False
        vi, got, t0, t1 = _receive(a, b, drv, 7102)
        assert len(got) == 1 and t0 - 1_000_000 <= got[0][1] <= t1
        assert vi.clock_source == "xdp-sw"
    finally:
        drv.close()


def test_missing_kfunc_and_refused_program_fall_back_silently(
        pair: netns.VethPair, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair.a, pair.b
    monkeypatch.setattr(bpf, "btf_find_func", lambda name, path="": None)
    drv = _open(a, f"xdp:{a.ifname}")
    try:
        ad = _adapter(drv)
        assert not ad.program.hw_kfunc and ad.attach_mode == "drv"
        assert RX_TS_KFUNC in str(ad.rx_timestamp_info["why_not"])
    finally:
        drv.close()
    # a BTF id that is no kfunc (id 1 is a plain type): the verifier refuses the variant
    monkeypatch.setattr(bpf, "btf_find_func", lambda name, path="": 1)
    drv = _open(a, f"xdp:{a.ifname}")
    try:
        ad = _adapter(drv)
        assert not ad.program.hw_kfunc
        assert "refused" in str(ad.rx_timestamp_info["why_not"])
        vi, got, t0, t1 = _receive(a, b, drv, 7103)
        assert len(got) == 1 and t0 - 1_000_000 <= got[0][1] <= t1
    finally:
        drv.close()
    # ts=hw makes the refusal an error (and leaves nothing attached)
    with pytest.raises(UnsupportedError, match="ts=hw"):
        _open(a, f"xdp:{a.ifname}?ts=hw")
    assert not xdp_attached(a)


def test_ts_hw_in_skb_mode_is_unsupported(pair: netns.VethPair) -> None:
    with pytest.raises(UnsupportedError, match="drv"):
        _open(pair.a, f"xdp:{pair.a.ifname}?mode=skb&ts=hw")


@pytest.mark.parametrize("count", [1, 12])  # scalar and numpy harvest paths
def test_flagged_metadata_decodes_as_a_hardware_stamp(pair: netns.VethPair,
                                                      count: int) -> None:
    """A frame whose metadata word has bit 63 set carries a raw hardware stamp."""
    a, b = pair.a, pair.b
    drv = _open(a, f"xdp:{a.ifname}")
    try:
        pd = ProtectionDomain(drv)
        mr = MemoryRegion(pd, 64 * 2048)
        vi = VirtualInterface(pd)
        hw = vi._hw
        assert isinstance(hw, XdpVI)
        vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 7104))
        vi.receive_post_batch(mr.dma_addrs()[:32], np.arange(32, dtype=np.uint32))
        with netns.enter(b.netns):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(count):
            tx.sendto(b"x%d" % i, (a.ip, 7104))
        tx.close()
        ring = hw.rx_socks[0][1].rx
        assert ring is not None
        deadline = time.monotonic() + 5
        while int(ring.prod[0]) < count and time.monotonic() < deadline:
            time.sleep(0.001)
        assert int(ring.prod[0]) == count
        umem = pd._hw.umem  # type: ignore[attr-defined]
        for j in range(0, count, 2):  # every other frame: a "hardware" stamp
            raw = int(ring.desc["addr"][j])
            data = (raw & ADDR_MASK) + (raw >> OFFSET_SHIFT)
            umem[data - 8:data] = np.frombuffer(struct.pack("<Q", HW_TS_FLAG | (1000 + j)),
                                                np.uint8)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < count and time.monotonic() < deadline:
            got += [(int(e.flags), int(e.ts_ns)) for e in vi.eventq_poll(64)  # type: ignore[attr-defined]
                    if e.type == EventType.RX]
        assert len(got) == count, f"{len(got)} of {count} frames polled in 5 s"
        for j, (flags, ts) in enumerate(got):
            if j % 2 == 0:
                assert flags & RX_FLAG_HW_TS and ts == 1000 + j
            else:
                assert not flags & RX_FLAG_HW_TS and ts > 1_000_000_000_000_000_000
        assert vi.clock_source == "hw"
    finally:
        drv.close()
