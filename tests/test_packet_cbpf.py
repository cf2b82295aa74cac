"""Unit tests of the packet adapter's FilterSpec → classic BPF compiler.

Every compiled program is run by the interpreter in :mod:`efvi.bpf.cbpf`
against crafted frames, both in the form the kernel shows a socket filter (outer VLAN
tag stripped into ancillary data) and with the tag still in the frame.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efvi.adapters.packet import filter_prog
from efvi.bpf import cbpf
from efvi.bpf.cbpf import SkbMeta
from efvi.errors import SetupError
from efvi.filters import FilterSpec as F
from efvi.wire.classify import classify_one

MAC_A = bytes.fromhex("0200c6120001")
MAC_B = bytes.fromhex("0200c6120002")
MAC_X = bytes.fromhex("0200c61200ff")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e010101")


def eth(dst: bytes, etype: int, payload: bytes, vlans: tuple[int, ...] = (),
        src: bytes = MAC_B, tpids: tuple[int, ...] = ()) -> bytes:
    tags = b""
    for i, vid in enumerate(vlans):
        tpid = tpids[i] if i < len(tpids) else (0x88A8 if i == 0 and len(vlans) > 1 else 0x8100)
        tags += struct.pack(">HH", tpid, vid)
    return dst + src + tags + struct.pack(">H", etype) + payload


def ip4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0, ihl: int = 5) -> bytes:
    opts = b"\x01" * (4 * (ihl - 5))
    hdr = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(payload), 1, frag,
                      64, proto, 0, ipaddress.IPv4Address(src).packed,
                      ipaddress.IPv4Address(dst).packed)
    return hdr + opts + payload


def ip6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return struct.pack(">IHBB16s16s", 0x60000000, len(payload), nh, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def l4(sport: int, dport: int, data: bytes = b"hello") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def udp4(dst_ip: str = "198.18.0.1", dport: int = 5000, src_ip: str = "198.18.0.2",
         sport: int = 6000, vlans: tuple[int, ...] = (), frag: int = 0, proto: int = 17,
         dst_mac: bytes = MAC_A, ihl: int = 5) -> bytes:
    return eth(dst_mac, 0x0800, ip4(src_ip, dst_ip, proto, l4(sport, dport), frag, ihl), vlans)


def udp6(dst_ip: str = "2001:db8::1", dport: int = 5000, src_ip: str = "2001:db8::2",
         sport: int = 6000, vlans: tuple[int, ...] = (), nh: int = 17) -> bytes:
    return eth(MAC_A, 0x86DD, ip6(src_ip, dst_ip, nh, l4(sport, dport)), vlans)


def accepts(prog: list[cbpf.Insn], frame: bytes, pkttype: int = cbpf.PACKET_HOST) -> bool:
    """Run ``prog`` on ``frame`` as the kernel shows it, and with the tag in-frame.

    Both views must agree (the compiler handles both layouts); returns the verdict.
    """
    cbpf.check(prog)
    stripped, meta = cbpf.strip_outer_vlan(frame)
    kernel = cbpf.run(prog, stripped, SkbMeta(pkttype=pkttype, vlan_tci=meta.vlan_tci,
                                              vlan_tpid=meta.vlan_tpid))
    raw = cbpf.run(prog, frame, SkbMeta(pkttype=pkttype))
    assert bool(kernel) == bool(raw), "kernel view and in-frame view disagree"
    if kernel:
        assert kernel == len(stripped)
    return bool(kernel)


def prog_of(*specs: F, **kw: object) -> list[cbpf.Insn]:
    return filter_prog.compile_filters(specs, **kw)  # type: ignore[arg-type]


# ---- IP filters ----------------------------------------------------------------------
def test_ip4_local_udp() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000))
    assert accepts(p, udp4())
    assert not accepts(p, udp4(dport=5001))
    assert not accepts(p, udp4(dst_ip="198.18.0.3"))
    assert not accepts(p, udp4(proto=6))
    assert accepts(p, udp4(src_ip="198.18.7.7", sport=1))  # remote is a wildcard


def test_ip4_local_with_ip_options() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000))
    assert accepts(p, udp4(ihl=7))
    assert not accepts(p, udp4(ihl=7, dport=4999))


def test_ip4_full_tcp() -> None:
    p = prog_of(F.ip4_full("tcp", "198.18.0.1", 80, "198.18.0.2", 4321))
    assert accepts(p, udp4(dport=80, sport=4321, proto=6))
    assert not accepts(p, udp4(dport=80, sport=4322, proto=6))
    assert not accepts(p, udp4(dport=80, sport=4321, proto=6, src_ip="198.18.0.9"))
    assert not accepts(p, udp4(dport=80, sport=4321, proto=17))


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2010, 0x1FFF])
def test_ip_filters_skip_fragments(frag: int) -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000))
    assert not accepts(p, udp4(frag=frag))
    assert accepts(p, udp4(frag=0x4000))  # DF alone is not a fragment
    # the ipproto class filter sees every fragment
    assert accepts(prog_of(F.ip_proto(17)), udp4(frag=frag))


def test_ip6_local_and_full() -> None:
    p = prog_of(F.ip6_local("udp", "2001:db8::1", 5000))
    assert accepts(p, udp6())
    assert not accepts(p, udp6(dport=5001))
    assert not accepts(p, udp6(dst_ip="2001:db8::3"))
    assert not accepts(p, udp4())
    assert not accepts(p, udp6(nh=44))  # a fragment header: goes to the kernel
    f = prog_of(F.ip6_full("udp", "2001:db8::1", 5000, "2001:db8::2", 6000))
    assert accepts(f, udp6())
    assert not accepts(f, udp6(src_ip="2001:db8::9"))
    assert not accepts(f, udp6(sport=6001))


# ---- VLAN ---------------------------------------------------------------------------------
def test_vlan_filters_use_the_stripped_tag() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000).vlan(10))
    assert accepts(p, udp4(vlans=(10,)))
    assert not accepts(p, udp4(vlans=(11,)))
    assert not accepts(p, udp4())
    # the kernel view: only ancillary data says the tag was there
    stripped, meta = cbpf.strip_outer_vlan(udp4(vlans=(10,)))
    assert stripped == udp4()
    assert cbpf.run(p, stripped, meta) and not cbpf.run(p, stripped, SkbMeta())


def test_vlan_any_ip_filter_matches_tagged_frames() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000))
    assert accepts(p, udp4(vlans=(10,)))
    assert accepts(p, udp4(vlans=(10, 20)))


def test_qinq_outer_vlan_and_inner_ip() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000).vlan(100))
    assert accepts(p, udp4(vlans=(100, 7)))
    assert not accepts(p, udp4(vlans=(7, 100)))  # the outer tag counts
    assert not accepts(p, udp4(vlans=(100, 7), dport=1))
    assert accepts(prog_of(F.ip6_local("udp", "2001:db8::1", 5000).vlan(100)),
                   udp6(vlans=(100, 5)))


def test_vlan_tci_priority_bits_ignored() -> None:
    p = prog_of(F.eth_local(MAC_A, vlan=10))
    assert accepts(p, udp4(vlans=(0xA00A,)))  # PCP 5, DEI 0, VID 10


def test_vlan_alone_on_class_filters() -> None:
    p = prog_of(F.ip_proto(17).vlan(5))
    assert accepts(p, udp4(vlans=(5,)))
    assert not accepts(p, udp4())
    p = prog_of(F.unicast_mismatch().vlan(5))
    assert accepts(p, udp4(vlans=(5,), dst_mac=MAC_X), pkttype=cbpf.PACKET_OTHERHOST)
    assert not accepts(p, udp4(dst_mac=MAC_X), pkttype=cbpf.PACKET_OTHERHOST)


# ---- L2 and class filters -------------------------------------------------------------------
def test_eth_local_and_combinations() -> None:
    p = prog_of(F.eth_local(MAC_A))
    assert accepts(p, udp4())
    assert accepts(p, eth(MAC_A, 0x0806, bytes(28)))
    assert not accepts(p, udp4(dst_mac=MAC_X))
    assert not accepts(p, udp4(dst_mac=MAC_A[:5] + b"\x02"))
    pt = prog_of(F.eth_local(MAC_A).eth_type(0x0806))
    assert accepts(pt, eth(MAC_A, 0x0806, bytes(28)))
    assert not accepts(pt, udp4())
    pp = prog_of(F.eth_local(MAC_A).ip_proto(17))
    assert accepts(pp, udp4()) and accepts(pp, udp6())
    assert not accepts(pp, udp4(proto=6))
    assert not accepts(pp, udp4(dst_mac=MAC_X))


def test_ethertype_and_ipproto() -> None:
    p = prog_of(F.eth_type(0x88F7))
    assert accepts(p, eth(MAC_A, 0x88F7, bytes(40)))
    assert accepts(p, eth(MAC_A, 0x88F7, bytes(40), vlans=(3,)))
    assert not accepts(p, udp4())
    q = prog_of(F.ip_proto(1))
    assert accepts(q, udp4(proto=1))
    assert accepts(q, udp6(nh=1))
    assert not accepts(q, udp4())


def test_unicast_and_multicast_all() -> None:
    u = prog_of(F.unicast_all())
    m = prog_of(F.multicast_all())
    for frame, multi in ((udp4(), False), (udp4(dst_mac=MCAST), True),
                         (udp4(dst_mac=BCAST), True), (udp4(dst_mac=MAC_X), False)):
        assert accepts(u, frame) is not multi
        assert accepts(m, frame) is multi


def test_unicast_mismatch_needs_otherhost() -> None:
    p = prog_of(F.unicast_mismatch())
    assert accepts(p, udp4(dst_mac=MAC_X), pkttype=cbpf.PACKET_OTHERHOST)
    assert not accepts(p, udp4(), pkttype=cbpf.PACKET_HOST)
    assert not accepts(p, udp4(dst_mac=MCAST), pkttype=cbpf.PACKET_MULTICAST)


def test_mismatch_excludes_other_filters() -> None:
    other = F.ip4_local("udp", "239.1.1.1", 5000)
    p = prog_of(F.multicast_mismatch(), others=[other, F.unicast_mismatch()],
                kernel_mcast=[bytes.fromhex("01005e000001")])
    grp = bytes.fromhex("01005e010101")
    assert not accepts(p, udp4(dst_ip="239.1.1.1", dst_mac=grp), cbpf.PACKET_MULTICAST)
    assert accepts(p, udp4(dst_ip="239.1.1.1", dport=5001, dst_mac=grp), cbpf.PACKET_MULTICAST)
    assert not accepts(p, udp4(dst_mac=BCAST), cbpf.PACKET_BROADCAST)
    assert not accepts(p, udp4(dst_mac=bytes.fromhex("01005e000001")), cbpf.PACKET_MULTICAST)
    assert not accepts(p, udp4())


def test_own_filters_beat_exclusions() -> None:
    mine = F.ip4_local("udp", "198.18.0.1", 5000)
    p = prog_of(mine, F.unicast_mismatch(), others=[mine])
    assert accepts(p, udp4())  # own plain filter first: accepted
    assert accepts(p, udp4(dst_mac=MAC_X, dport=1), pkttype=cbpf.PACKET_OTHERHOST)


def test_port_sniff_takes_everything_incoming() -> None:
    p = prog_of(F.port_sniff())
    for frame in (udp4(), udp6(), eth(BCAST, 0x0806, bytes(28)), udp4(vlans=(1, 2))):
        assert accepts(p, frame)
    assert not accepts(p, udp4(), pkttype=cbpf.PACKET_OUTGOING)


# ---- programs as a whole ------------------------------------------------------------------------
def test_several_filters_are_ored() -> None:
    p = prog_of(F.ip4_local("udp", "198.18.0.1", 5000), F.ip4_local("udp", "198.18.0.1", 5002),
                F.eth_type(0x0806))
    assert accepts(p, udp4(dport=5000)) and accepts(p, udp4(dport=5002))
    assert accepts(p, eth(MAC_A, 0x0806, bytes(28)))
    assert not accepts(p, udp4(dport=5001))


def test_no_filter_means_nothing() -> None:
    p = prog_of()
    assert p == [cbpf.Insn(cbpf.BPF_RET | cbpf.BPF_K, 0, 0, 0)]
    assert not accepts(p, udp4())


def test_outgoing_and_runt_frames_dropped() -> None:
    p = prog_of(F.port_sniff())
    assert not accepts(p, udp4(), pkttype=cbpf.PACKET_OUTGOING)
    assert cbpf.run(p, b"\x00" * 10) == 0
    q = prog_of(F.ip4_local("udp", "198.18.0.1", 5000))
    assert cbpf.run(q, udp4()[:30]) == 0  # truncated IP header: the load fails → drop


def test_snaplen_return_value() -> None:
    p = filter_prog.compile_filters([F.port_sniff()], snaplen=64)
    assert cbpf.run(p, udp4() + bytes(100)) == 64


def test_program_limit_raises_setup_error() -> None:
    specs = [F.ip4_full("udp", "198.18.0.1", 5000, "198.18.0.2", p) for p in range(200)]
    with pytest.raises(SetupError) as ei:
        filter_prog.compile_filters(specs)
    assert "4096" in str(ei.value) and "xdp" in ei.value.hint
    prog = filter_prog.compile_filters(specs[:100])
    cbpf.check(prog)
    assert len(prog) <= cbpf.BPF_MAXINSNS


def test_check_rejects_bad_programs() -> None:
    with pytest.raises(ValueError):
        cbpf.check([])
    with pytest.raises(ValueError):
        cbpf.check([cbpf.Insn(cbpf.BPF_JMP | cbpf.BPF_JEQ, 5, 0, 1),
                    cbpf.Insn(cbpf.BPF_RET, 0, 0, 0)])
    with pytest.raises(ValueError):
        cbpf.check([cbpf.Insn(cbpf.BPF_LD | cbpf.BPF_IMM, 0, 0, 1)])
    I = cbpf.Insn  # noqa: E741
    # M[0] is loaded on a path (the jump) that skipped its store: the kernel says EINVAL
    skipped_store = [I(cbpf.BPF_LD | cbpf.BPF_IMM, k=1), I(cbpf.BPF_JMP | cbpf.BPF_JEQ, 1, 0, 1),
                     I(cbpf.BPF_ST, k=0), I(cbpf.BPF_LD | cbpf.BPF_MEM, k=0),
                     I(cbpf.BPF_RET | cbpf.BPF_A)]
    with pytest.raises(ValueError, match="M\\[0\\]"):
        cbpf.check(skipped_store)
    # falling through a ret keeps the state before it (the kernel's linear check)
    after_ret = [I(cbpf.BPF_LD | cbpf.BPF_IMM, k=1), I(cbpf.BPF_JMP | cbpf.BPF_JEQ, 1, 0, 1),
                 I(cbpf.BPF_ST, k=0), I(cbpf.BPF_RET | cbpf.BPF_K, k=0),
                 I(cbpf.BPF_LD | cbpf.BPF_MEM, k=0), I(cbpf.BPF_RET | cbpf.BPF_A)]
    with pytest.raises(ValueError):
        cbpf.check(after_ret)


def test_interpreter_alu_and_div_by_zero() -> None:
    I = cbpf.Insn  # noqa: E741
    prog = [I(cbpf.BPF_LD | cbpf.BPF_IMM, k=7), I(cbpf.BPF_ALU | cbpf.BPF_MUL | cbpf.BPF_K, k=6),
            I(cbpf.BPF_RET | cbpf.BPF_A)]
    assert cbpf.run(prog, bytes(100)) == 42
    prog = [I(cbpf.BPF_LDX | cbpf.BPF_IMM, k=0),
            I(cbpf.BPF_ALU | cbpf.BPF_DIV | cbpf.BPF_X), I(cbpf.BPF_RET | cbpf.BPF_K, k=9)]
    assert cbpf.run(prog, bytes(100)) == 0
    msh = [I(cbpf.BPF_LDX | cbpf.BPF_B | cbpf.BPF_MSH, k=0), I(cbpf.BPF_MISC | cbpf.BPF_TXA),
           I(cbpf.BPF_RET | cbpf.BPF_A)]
    assert cbpf.run(msh, b"\x45" + bytes(50)) == 20


def test_pack_program_layout() -> None:
    raw = cbpf.pack_program([cbpf.Insn(0x15, 1, 2, 0x0800)])
    assert raw == struct.pack("<HBBI", 0x15, 1, 2, 0x0800) and len(raw) == 8


# ---- property: the program agrees with the project's frame classifier ---------------------------
_ips = st.sampled_from(["198.18.0.1", "198.18.0.2", "239.1.1.1"])
_ports = st.sampled_from([5000, 5001, 53])


@settings(max_examples=300, deadline=None)
@given(dst=_ips, dport=_ports, src=_ips, sport=_ports, proto=st.sampled_from([6, 17, 1]),
       frag=st.sampled_from([0, 0x4000, 0x2000, 0x0003]),
       vlans=st.sampled_from([(), (10,), (10, 20), (20,)]),
       fdst=_ips, fport=_ports, fvlan=st.sampled_from([None, 10, 20]),
       full=st.booleans())
def test_ip4_filters_agree_with_classifier(dst: str, dport: int, src: str, sport: int,
                                           proto: int, frag: int, vlans: tuple[int, ...],
                                           fdst: str, fport: int, fvlan: int | None,
                                           full: bool) -> None:
    frame = udp4(dst_ip=dst, dport=dport, src_ip=src, sport=sport, proto=proto,
                 frag=frag, vlans=vlans)
    spec = (F.ip4_full("udp", fdst, fport, "198.18.0.2", 5000) if full
            else F.ip4_local("udp", fdst, fport))
    if fvlan is not None:
        spec = spec.vlan(fvlan)
    info = classify_one(frame)
    want = (info.ethertype == 0x0800 and info.proto == 17 and not info.is_fragment
            and info.dst_ip4 == int(ipaddress.IPv4Address(fdst)) and info.dst_port == fport
            and (fvlan is None or info.vlan_outer == fvlan)
            and (not full or (info.src_ip4 == int(ipaddress.IPv4Address("198.18.0.2"))
                              and info.src_port == 5000)))
    assert accepts(prog_of(spec), frame) == want
