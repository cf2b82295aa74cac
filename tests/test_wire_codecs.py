"""Header codecs, checksums and the frame builders."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efvi.errors import FormatError
from efvi.wire.address import ip4_int, ip_bytes, ip_str, mac_bytes, mac_int, mac_str
from efvi.wire.arp import ARP
from efvi.wire.build import UdpFrameBuilder, icmp_echo_frame, ip_frame, udp_frame
from efvi.wire.checksum import (
    checksum_update,
    checksum_update16,
    internet_checksum,
    l4_checksum,
    ones_sum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
    verify,
)
from efvi.wire.classify import classify_one
from efvi.wire.ethernet import Ethernet, VlanTag, qinq
from efvi.wire.icmp import Echo
from efvi.wire.ipv4 import IP_MF, IPv4
from efvi.wire.ipv6 import IPv6, IPv6Chain, fragment_header
from efvi.wire.tcp import TCP, TCP_ACK, TCP_SYN
from efvi.wire.udp import UDP, udp_checksum

SRC4, DST4 = "198.18.0.1", "198.19.0.2"
SRC6, DST6 = "2001:2::1", "2001:2::2"
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def ref_checksum(data: bytes) -> int:
    """RFC 1071 done the slow, obvious way (the oracle)."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# Checksums --------------------------------------------------------------------------

@given(st.binary(max_size=300))
def test_internet_checksum_matches_reference(data: bytes) -> None:
    assert internet_checksum(data) == ref_checksum(data)


def test_rfc1071_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert ones_sum(b"") == 0 and internet_checksum(b"") == 0xFFFF


@given(st.binary(min_size=20, max_size=80).map(lambda b: b[: len(b) // 2 * 2]),
       st.integers(0, 30), st.integers(0, 0xFFFF))
def test_rfc1624_incremental_update_equals_recompute(data: bytes, word: int, new: int) -> None:
    word %= len(data) // 2
    ck = internet_checksum(data)
    old = struct.unpack_from("!H", data, 2 * word)[0]
    changed = bytearray(data)
    struct.pack_into("!H", changed, 2 * word, new)
    # One's complement has two zeros; RFC 1624 eqn. 3 never yields the 0x0000 form for
    # non-zero data, so compare as sums: both must verify.
    upd = checksum_update16(ck, old, new)
    full = internet_checksum(bytes(changed))
    assert upd == full or {upd, full} == {0, 0xFFFF}
    fld = bytes(changed[2 * word:2 * word + 2])
    upd2 = checksum_update(ck, data[2 * word:2 * word + 2], fld)
    assert upd2 == upd


def test_incremental_update_on_an_ipv4_header_rewrite() -> None:
    hdr = bytearray(IPv4(ip_bytes(SRC4), ip_bytes(DST4), 17, 60, ident=7).pack())
    ck = struct.unpack_from("!H", hdr, 10)[0]
    new_dst = ip_bytes("198.18.5.5")
    ck2 = checksum_update(ck, bytes(hdr[16:20]), new_dst)
    hdr[16:20] = new_dst
    struct.pack_into("!H", hdr, 10, ck2)
    assert IPv4.checksum_ok(hdr)
    with pytest.raises(ValueError):
        checksum_update(ck, b"\x01", b"\x02")


def test_l4_checksum_matches_scapy() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    for src, dst, ip_cls in ((SRC4, DST4, scapy_all.IP), (SRC6, DST6, scapy_all.IPv6)):
        p = ip_cls(src=src, dst=dst) / scapy_all.UDP(sport=5, dport=6) / b"hello!!"
        raw = bytes(p)
        u = raw[20 if ip_cls is scapy_all.IP else 40:]
        seg = u[:6] + b"\0\0" + u[8:]
        assert udp_checksum(ip_bytes(src), ip_bytes(dst), seg) == struct.unpack_from(
            "!H", u, 6)[0]
        plen = len(u)
        pseudo = (pseudo_header_sum_v4 if len(ip_bytes(src)) == 4 else pseudo_header_sum_v6)(
            ip_bytes(src), ip_bytes(dst), 17, plen)
        assert verify(u, pseudo) and not verify(u[:-1] + b"?", pseudo)
    t = scapy_all.IP(src=SRC4, dst=DST4) / scapy_all.TCP(sport=1, dport=2, flags="S")
    raw = bytes(t)
    seg = raw[20:36] + b"\0\0" + raw[38:]
    assert l4_checksum(ip_bytes(SRC4), ip_bytes(DST4), 6, seg) == struct.unpack_from(
        "!H", raw, 36)[0]


# Addresses --------------------------------------------------------------------------

def test_address_helpers() -> None:
    assert mac_bytes(MAC1) == bytes.fromhex("020000000001") == mac_bytes("02-00-00-00-00-01")
    assert mac_str(mac_int(MAC1)) == MAC1 and mac_str(mac_bytes(MAC2)) == MAC2
    assert ip4_int("10.0.0.1") == 0x0A000001 and ip_str(ip_bytes(SRC6)) == SRC6
    assert ip_bytes(0x0A000001) == bytes([10, 0, 0, 1])
    assert len(ip_bytes(1, version=6)) == 16
    for bad in ("02:00", "zz:00:00:00:00:00", b"\0" * 5, 1 << 48):
        with pytest.raises(ValueError):
            mac_bytes(bad)
    with pytest.raises(ValueError):
        ip4_int(SRC6)


# Header codecs ----------------------------------------------------------------------

def test_ethernet_qinq_round_trip() -> None:
    e = Ethernet(mac_bytes(MAC1), mac_bytes(MAC2), 0x0800, qinq(100, 200))
    raw = e.pack()
    assert raw[12:14] == b"\x88\xa8" and raw[16:18] == b"\x81\x00" and len(raw) == 22
    back = Ethernet.parse(raw)
    assert back == e and back.header_len == 22
    assert VlanTag.from_tci(0x8100, VlanTag(5, pcp=3, dei=1).tci) == VlanTag(5, 3, 1)
    with pytest.raises(FormatError) as ei:
        Ethernet.parse(raw[:19])
    assert ei.value.offset == 18  # the inner TCI + ethertype are missing


def test_ethernet_matches_scapy_vlan() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    p = scapy_all.Ether(dst=MAC1, src=MAC2) / scapy_all.Dot1Q(vlan=42, prio=5) / \
        scapy_all.IP(src=SRC4, dst=DST4)
    e = Ethernet.parse(bytes(p))
    assert e.vlans == (VlanTag(42, pcp=5),) and e.ethertype == 0x0800
    assert e.pack() == bytes(p)[:18]


def test_arp_round_trip_and_reply() -> None:
    req = ARP.request(mac_bytes(MAC1), ip_bytes(SRC4), ip_bytes(DST4))
    raw = req.pack()
    assert len(raw) == 28 and ARP.parse(raw) == req
    rep = req.reply(mac_bytes(MAC2))
    assert (rep.op, rep.sha, rep.spa, rep.tha, rep.tpa) == (
        2, mac_bytes(MAC2), ip_bytes(DST4), mac_bytes(MAC1), ip_bytes(SRC4))
    with pytest.raises(FormatError):
        ARP.parse(raw[:27])
    bad = bytearray(raw)
    bad[1] = 6  # htype 6 (IEEE 802)
    with pytest.raises(FormatError):
        ARP.parse(bytes(bad))
    scapy_all = pytest.importorskip("scapy.all")
    s = scapy_all.ARP(bytes(raw))
    assert (s.op, s.psrc, s.pdst, s.hwsrc) == (1, SRC4, DST4, MAC1)


def test_ipv4_options_fragments_and_errors() -> None:
    h = IPv4(ip_bytes(SRC4), ip_bytes(DST4), 17, 100, ttl=3, ident=9, flags=IP_MF,
             frag_offset=10, options=b"\x94\x04\x00\x00")  # router alert
    raw = h.pack()
    assert len(raw) == 24 and IPv4.checksum_ok(raw)
    back = IPv4.parse(raw)
    assert back.is_fragment and back.frag_offset == 10 and back.options == h.options
    assert back.header_len == 24 and back.ttl == 3
    scapy_all = pytest.importorskip("scapy.all")
    s = scapy_all.IP(raw)
    assert (s.ihl, s.flags.value, s.frag, s.id, s.chksum) == (6, 1, 10, 9, back.checksum)
    assert scapy_all.IP(bytes(scapy_all.IP(raw))).chksum == back.checksum
    bad = bytearray(raw)
    bad[8] ^= 1
    assert not IPv4.checksum_ok(bad)
    cases: list[tuple[bytes, int]] = [
        (raw[:19], 0), (bytes([0x65]) + raw[1:], 0), (bytes([0x44]) + raw[1:], 0),
        (raw[:22], 0), (raw[:2] + b"\x00\x10" + raw[4:], 2)]
    for blob, off in cases:
        with pytest.raises(FormatError) as ei:
            IPv4.parse(blob)
        assert ei.value.offset == off


def test_ipv6_chain_walk() -> None:
    src, dst = ip_bytes(SRC6), ip_bytes(DST6)
    hop = bytes([43, 0]) + bytes(6)
    rt = bytes([51, 1]) + bytes(14)
    ah = bytes([44, 1]) + bytes(10)   # (1 + 2) * 4 = 12 bytes
    frag = fragment_header(17, 0, True, 0xABCD)
    payload = hop + rt + ah + frag + UDP(1, 2, 8).pack()
    raw = IPv6(src, dst, 0, len(payload)).pack() + payload
    ch = IPv6Chain.walk(raw)
    assert [e.kind for e in ch.extensions] == [0, 43, 51, 44]
    assert [e.length for e in ch.extensions] == [8, 16, 12, 8]
    assert ch.proto == 17 and ch.l4_offset == 40 + 44 and ch.end == len(raw)
    assert ch.fragment is not None and ch.fragment.more and ch.fragment.ident == 0xABCD
    later = IPv6(src, dst, 44, 16).pack() + fragment_header(17, 5, False, 1) + bytes(8)
    ch2 = IPv6Chain.walk(later)
    assert ch2.l4_offset == -1 and ch2.proto == 17 and ch2.fragment is not None
    with pytest.raises(FormatError) as ei:
        IPv6Chain.walk(raw[:40 + 8 + 10])
    assert ei.value.offset == 48
    with pytest.raises(FormatError):
        IPv6.parse(b"\x45" + raw[1:])
    scapy_all = pytest.importorskip("scapy.all")
    s = scapy_all.IPv6(IPv6(src, dst, 59, 0, 7, 0x12, 0x34567).pack())
    assert (s.tc, s.fl, s.hlim, s.src) == (0x12, 0x34567, 7, SRC6)


def test_udp_tcp_icmp_parse_and_pack() -> None:
    assert UDP.parse(UDP(1, 2, 20, 0xBEEF).pack()) == UDP(1, 2, 20, 0xBEEF)
    with pytest.raises(FormatError):
        UDP.parse(UDP(1, 2, 7).pack())
    t = TCP(80, 443, 1, 2, TCP_SYN | TCP_ACK, options=b"\x02\x04\x05\xb4")
    raw = t.pack()
    assert len(raw) == 24 and TCP.parse(raw) == t
    with pytest.raises(FormatError) as ei:
        TCP.parse(raw[:12] + b"\x40" + raw[13:])
    assert ei.value.offset == 12
    with pytest.raises(FormatError):
        TCP.parse(raw[:22])
    e = Echo(8, 0, 0x1234, 7, b"ping")
    m = e.pack_v4()
    assert Echo.checksum_ok_v4(m, 0, len(m)) and Echo.parse(m).reply().type == 0
    src, dst = ip_bytes(SRC6), ip_bytes(DST6)
    m6 = Echo(128, 0, 1, 2, b"x").pack_v6(src, dst)
    assert Echo.checksum_ok_v6(m6, 0, len(m6), src, dst)
    assert not Echo.checksum_ok_v6(m6, 0, len(m6), dst, dst)
    scapy_all = pytest.importorskip("scapy.all")
    sp = scapy_all.IPv6(src=SRC6, dst=DST6) / scapy_all.ICMPv6EchoRequest(id=1, seq=2,
                                                                          data=b"x")
    assert bytes(sp)[40:] == m6


# Frame builders ----------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [(SRC4, DST4), (SRC6, DST6)])
def test_udp_frame_checksums_verified_by_scapy(src: str, dst: str) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    f = udp_frame(MAC2, MAC1, src, dst, 4000, 30001, b"market data", vlans=(VlanTag(7),))
    p = scapy_all.Ether(f)
    ipl = p[scapy_all.IP] if src == SRC4 else p[scapy_all.IPv6]
    u = p[scapy_all.UDP]
    want_udp = u.chksum
    u.chksum = None
    if src == SRC4:
        want_ip = ipl.chksum
        ipl.chksum = None
    p2 = scapy_all.Ether(bytes(p))
    assert p2[scapy_all.UDP].chksum == want_udp
    if src == SRC4:
        assert p2[scapy_all.IP].chksum == want_ip
    assert bytes(u.payload) == b"market data" and (u.sport, u.dport) == (4000, 30001)
    r = classify_one(f)
    assert r.valid and r.vlan_outer == 7 and r.dst_port == 30001


@settings(max_examples=200)
@given(st.binary(max_size=200), st.integers(0, 0xFFFF), st.booleans())
def test_builder_equals_reference_build(payload: bytes, ident: int, v6: bool) -> None:
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    f = UdpFrameBuilder(MAC2, MAC1, src, dst, 1, 2).build(payload, ident=ident)
    s, d = ip_bytes(src), ip_bytes(dst)
    seg = UDP(1, 2, 8 + len(payload)).pack() + payload
    ref = ip_frame(MAC2, MAC1, src, dst, 17,
                   UDP(1, 2, 8 + len(payload), udp_checksum(s, d, seg)).pack() + payload,
                   ident=ident)
    assert f == ref
    l3 = 14
    l4 = l3 + (40 if v6 else 20)
    seg_on_wire = f[l4:]
    pseudo_ok = udp_checksum(s, d, seg_on_wire[:6] + b"\0\0" + seg_on_wire[8:])
    assert struct.unpack_from("!H", f, l4 + 6)[0] == pseudo_ok


def test_build_into_registered_buffer_and_padding() -> None:
    b = UdpFrameBuilder(MAC2, MAC1, SRC4, DST4, 9, 10)
    buf = bytearray(2048)
    n = b.build_into(memoryview(buf), 100, b"abc")
    assert n == b.frame_len(3) == 45 and bytes(buf[100:145]) == b.build(b"abc")
    padded = udp_frame(MAC2, MAC1, SRC4, DST4, 9, 10, b"abc", pad=True)
    assert len(padded) == 60 and padded[:45] == b.build(b"abc")
    with pytest.raises(ValueError):
        udp_frame(MAC2, MAC1, SRC4, DST6, 1, 2)


def test_icmp_echo_frames() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    f4 = icmp_echo_frame(MAC2, MAC1, SRC4, DST4, 5, 6, b"abcd")
    p = scapy_all.Ether(f4)
    ck = p[scapy_all.ICMP].chksum
    del p[scapy_all.ICMP].chksum
    assert scapy_all.Ether(bytes(p))[scapy_all.ICMP].chksum == ck
    f6 = icmp_echo_frame(MAC2, MAC1, SRC6, DST6, 5, 6, b"abcd", reply=True)
    r = classify_one(f6)
    assert r.proto == 58 and r.valid and f6[r.l4_offset] == 129


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_parsers_raise_only_format_error(blob: bytes) -> None:
    for parse in (Ethernet.parse, ARP.parse, IPv4.parse, IPv6.parse, IPv6Chain.walk,
                  UDP.parse, TCP.parse, Echo.parse):
        try:
            parse(blob)
        except FormatError as exc:
            assert exc.offset is not None and 0 <= exc.offset <= max(len(blob), 2)


def test_random_frames_round_trip_through_classifier() -> None:
    rng = random.Random(7)
    for _ in range(200):
        v6 = rng.random() < 0.5
        src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
        sport, dport = rng.randrange(65536), rng.randrange(65536)
        payload = rng.randbytes(rng.randrange(100))
        f = udp_frame(MAC2, MAC1, src, dst, sport, dport, payload)
        r = classify_one(f)
        assert (r.src_port, r.dst_port, r.valid) == (sport, dport, True)
        assert f[r.payload_offset:] == payload
