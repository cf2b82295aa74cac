"""Batch classifier: known answers, and scalar/batch agreement on generated frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efvi.wire.classify import FrameInfo, classify, classify_one

MAC_D = bytes.fromhex("01005e010203")
MAC_S = bytes.fromhex("020000000001")


def eth(et: int, *tags: tuple[int, int]) -> bytes:
    out = MAC_D + MAC_S
    for tpid, vid in tags:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", et)


def ip4(proto: int, payload: bytes, *, options: bytes = b"", frag: int = 0,
        tot: int | None = None) -> bytes:
    ihl = (20 + len(options)) // 4
    total = 20 + len(options) + len(payload) if tot is None else tot
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                       bytes([198, 18, 0, 1]), bytes([239, 1, 2, 3])) + options + payload


def ip6(nh: int, payload: bytes, plen: int | None = None) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload) if plen is None else plen, nh,
                       64, bytes.fromhex("20010db8" + "00" * 11 + "01"),
                       bytes.fromhex("ff02" + "00" * 13 + "fb")) + payload


def udp(sport: int, dport: int, data: bytes = b"x" * 4) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport: int, dport: int, doff: int = 5) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, 0x02, 1024, 0, 0) + \
        bytes(4 * doff - 20)


def batch(frames: list[bytes], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    s = width if width is not None else max([len(f) for f in frames] + [1])
    arr = np.zeros((len(frames), s), np.uint8)
    for i, f in enumerate(frames):
        k = min(len(f), s)
        arr[i, :k] = np.frombuffer(f[:k], np.uint8)
    return arr, np.array([len(f) for f in frames], np.int64)


def one(frame: bytes) -> FrameInfo:
    a, n = batch([frame])
    got = classify(a, n).row(0)
    assert got == classify_one(frame)
    return got


def test_udp_ipv4_known_answer() -> None:
    f = eth(0x0800) + ip4(17, udp(1234, 30001))
    r = one(f)
    assert r.dst_mac == 0x01005E010203 and r.src_mac == 0x020000000001
    assert (r.vlan_outer, r.vlan_inner, r.ethertype) == (-1, -1, 0x0800)
    assert (r.ip_version, r.proto) == (4, 17)
    assert r.src_ip4 == 0xC6120001 and r.dst_ip4 == 0xEF010203
    assert (r.src_port, r.dst_port) == (1234, 30001)
    assert (r.l3_offset, r.l4_offset, r.payload_offset) == (14, 34, 42)
    assert r.valid and not r.is_fragment


def test_qinq_tcp_with_ip_options() -> None:
    f = eth(0x0800, (0x88A8, 0x2064), (0x8100, 0x00C8)) + ip4(6, tcp(80, 443, doff=8),
                                                             options=b"\x01" * 8)
    r = one(f)
    assert (r.vlan_outer, r.vlan_inner, r.ethertype) == (100, 200, 0x0800)
    assert r.l3_offset == 22 and r.l4_offset == 22 + 28 and r.payload_offset == 50 + 32
    assert (r.src_port, r.dst_port, r.proto) == (80, 443, 6)


def test_ipv6_ext_headers_and_fragment() -> None:
    hop = bytes([60, 0]) + bytes(6)              # hop-by-hop -> dstopts
    dst = bytes([44, 1]) + bytes(14)             # dstopts (16 bytes) -> fragment
    frag = bytes([17, 0]) + struct.pack("!H", 1) + bytes(4)  # offset 0, M=1 -> UDP
    f = eth(0x86DD) + ip6(0, hop + dst + frag + udp(5000, 6000))
    r = one(f)
    assert (r.ip_version, r.proto, r.is_fragment) == (6, 17, True)
    assert r.l4_offset == 14 + 40 + 8 + 16 + 8
    assert (r.src_port, r.dst_port) == (5000, 6000)
    assert r.src_ip6 == bytes.fromhex("20010db8" + "00" * 11 + "01")
    assert r.dst_ip6[:2] == b"\xff\x02"
    later = bytes([17, 0]) + struct.pack("!H", 8 << 3) + bytes(4)
    r2 = one(eth(0x86DD) + ip6(44, later + b"payload!"))
    assert (r2.proto, r2.is_fragment, r2.l4_offset, r2.src_port) == (17, True, -1, 0)
    assert r2.valid


def test_ipv4_non_first_fragment_has_no_ports() -> None:
    r = one(eth(0x0800) + ip4(17, udp(1, 2), frag=0x0010))
    assert r.is_fragment and r.proto == 17 and r.l4_offset == -1 and r.src_port == 0
    r = one(eth(0x0800) + ip4(17, udp(1, 2), frag=0x2000))  # MF, offset 0: ports there
    assert r.is_fragment and r.src_port == 1


def test_truncated_frames_are_invalid_not_errors() -> None:
    full = eth(0x0800, (0x8100, 5)) + ip4(17, udp(1, 2))
    for cut in range(len(full)):
        r = one(full[:cut])
        if cut < 14 + 4 + 20 + 8:
            assert not r.valid, cut
            assert r.src_port == 0 and r.l4_offset == -1
    r = one(eth(0x0800) + ip4(17, b"", tot=10))  # total length < header
    assert not r.valid and r.l4_offset == -1 and r.ip_version == 4


def test_padding_after_short_datagram_is_not_a_header() -> None:
    # A 20-byte IPv4 datagram claiming UDP, padded to 60 bytes: the padding is not UDP.
    f = (eth(0x0800) + ip4(17, b"", tot=20)).ljust(60, b"\xaa")
    r = one(f)
    assert not r.valid and r.l4_offset == -1 and r.src_port == 0


def test_arp_and_other_ethertypes() -> None:
    r = one(eth(0x0806) + bytes(28))
    assert r.valid and r.ethertype == 0x0806 and r.ip_version == 0 and r.l3_offset == -1
    assert not one(eth(0x0806) + bytes(27)).valid
    r = one(eth(0x88CC) + bytes(50))
    assert r.valid and r.ethertype == 0x88CC and r.proto == 0


def test_row_width_limits_what_is_read() -> None:
    f = eth(0x0800) + ip4(17, udp(7, 8))
    a, n = batch([f], width=30)  # the row holds only 30 bytes of a 46-byte frame
    assert classify(a, n).row(0) == classify_one(f[:30])
    assert not classify(a, n).valid[0]


def test_empty_and_misuse() -> None:
    cols = classify(np.zeros((0, 64), np.uint8), np.zeros(0, np.int64))
    assert len(cols) == 0 and cols.src_ip6.shape == (0, 16)
    with pytest.raises(ValueError):
        classify(np.zeros((2, 64), np.int32), np.zeros(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        classify(np.zeros((2, 64), np.uint8), np.zeros(3))
    assert not classify(np.zeros((1, 0), np.uint8), np.array([60])).valid[0]


def test_agrees_with_scapy_dissection() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    Ether, Dot1Q, IP, IPv6, UDP, TCP = (scapy_all.Ether, scapy_all.Dot1Q, scapy_all.IP,
                                        scapy_all.IPv6, scapy_all.UDP, scapy_all.TCP)
    pkts = [
        Ether() / IP(src="198.18.0.1", dst="198.19.0.2") / UDP(sport=9, dport=10) / b"hi",
        Ether() / Dot1Q(vlan=7) / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(
            sport=11, dport=12),
    ]
    for p in pkts:
        r = classify_one(bytes(p))
        ip = p[IP] if IP in p else p[IPv6]
        l4 = p[UDP] if UDP in p else p[TCP]
        assert (r.src_port, r.dst_port) == (l4.sport, l4.dport)
        assert r.l4_offset == len(bytes(p)) - len(bytes(l4))
        assert r.l3_offset == len(bytes(p)) - len(bytes(ip))
        assert r.payload_offset == len(bytes(p)) - len(bytes(l4.payload))


# Property test: the batch and scalar paths agree on every frame -------------------

_tpid = st.sampled_from([0x8100, 0x88A8, 0x9100, 0x0800, 0x86DD])


@st.composite
def l4_bytes(draw: st.DrawFn, v6: bool) -> tuple[int, bytes]:
    kind = draw(st.sampled_from(["udp", "tcp", "icmp", "other"]))
    if kind == "udp":
        return 17, udp(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                       draw(st.binary(max_size=12)))
    if kind == "tcp":
        doff = draw(st.integers(0, 15))
        return 6, tcp(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), 5)[:12] + \
            bytes([doff << 4]) + draw(st.binary(min_size=7, max_size=60))
    if kind == "icmp":
        return (58 if v6 else 1), draw(st.binary(min_size=0, max_size=16))
    return draw(st.integers(0, 255)), draw(st.binary(max_size=16))


@st.composite
def ipv6_ext_chain(draw: st.DrawFn, final_nh: int) -> tuple[int, bytes]:
    kinds = draw(st.lists(st.sampled_from([0, 43, 44, 51, 60, 50, 59]), max_size=10))
    out = b""
    nh = final_nh
    for k in reversed(kinds):
        if k == 44:
            off = draw(st.sampled_from([0, 0, 1, 100]))
            hdr = bytes([nh, 0]) + struct.pack("!H", (off << 3) | draw(st.integers(0, 1))) + \
                bytes(4)
        elif k == 51:
            ln = draw(st.integers(0, 4))
            hdr = bytes([nh, ln]) + bytes((ln + 2) * 4 - 2)
        elif k in (50, 59):
            hdr = draw(st.binary(max_size=12))
        else:
            ln = draw(st.integers(0, 2))
            hdr = bytes([nh, ln]) + bytes((ln + 1) * 8 - 2)
        out = hdr + out
        nh = k
    return nh, out


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=120))
    tags = draw(st.lists(st.tuples(_tpid, st.integers(0, 0xFFFF)), max_size=3))
    et = draw(st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x1234]))
    head = eth(et, *tags)
    if et == 0x0800:
        proto, payload = draw(l4_bytes(False))
        opts = draw(st.binary(max_size=40))
        opts = opts[: len(opts) // 4 * 4]
        frag = draw(st.sampled_from([0, 0, 0x2000, 0x0001, 0x4000, draw(st.integers(0, 0xFFFF))]))
        tot = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
        body = bytearray(ip4(proto, payload, options=opts, frag=frag, tot=tot))
        if draw(st.booleans()):
            body[0] = draw(st.integers(0, 255))  # any version / IHL
        body_b = bytes(body)
    elif et == 0x86DD:
        proto, payload = draw(l4_bytes(True))
        nh, chain = draw(ipv6_ext_chain(proto))
        plen = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
        body = bytearray(ip6(nh, chain + payload, plen))
        if draw(st.booleans()):
            body[0] = draw(st.integers(0, 255))
        body_b = bytes(body)
    else:
        body_b = draw(st.binary(max_size=40))
    frame = head + body_b
    if draw(st.booleans()):
        frame = frame.ljust(60, b"\x00")
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=24), st.integers(0, 140))
def test_batch_agrees_with_scalar(fs: list[bytes], width: int) -> None:
    a, n = batch(fs, width=width)
    cols = classify(a, n)
    for i, f in enumerate(fs):
        assert cols.row(i) == classify_one(f[:width]), (i, f.hex())
    # And a full-width batch agrees with the frames themselves.
    a2, n2 = batch(fs)
    cols2 = classify(a2, n2)
    for i, f in enumerate(fs):
        assert cols2.row(i) == classify_one(memoryview(f)), (i, f.hex())


def test_column_dtypes() -> None:
    a, n = batch([eth(0x0800) + ip4(17, udp(1, 2))] * 3)
    c = classify(a, n)
    expect = {"dst_mac": np.uint64, "src_mac": np.uint64, "vlan_outer": np.int32,
              "vlan_inner": np.int32, "ethertype": np.uint16, "ip_version": np.uint8,
              "proto": np.uint8, "src_ip4": np.uint32, "dst_ip4": np.uint32,
              "src_ip6": np.uint8, "dst_ip6": np.uint8, "src_port": np.uint16,
              "dst_port": np.uint16, "is_fragment": np.bool_, "l4_offset": np.int32,
              "payload_offset": np.int32, "valid": np.bool_}
    for name, dt in expect.items():
        col = getattr(c, name)
        assert col.dtype == dt, name
        assert col.shape[0] == 3
