"""The eBPF assembler, filter keys, and the filter-table XDP program's decisions.

Assembler and key tests are pure. Program tests load the real program into the
kernel and run it on hand-built frames with ``BPF_PROG_TEST_RUN`` (needs root /
CAP_BPF; no interface involved), with ``report_target`` so a hit returns which
filter won.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest

from efvi.bpf import ebpf as asm, syscall as bpf
from efvi.bpf.ebpf import FP, R0, R1, R2, R3, Asm, AsmError
from efvi.adapters.xdp.program import (FTABLE_SIZE, KEY_SIZE, KMACS_SIZE, REPORT_BASE,
                                       XSKMAP_SIZE, TableKind, build_program, describe_key,
                                       kmac_key, presence_bit, spec_key)
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterSpec
from efvi.wire.build import ip_frame, udp_frame
from efvi.wire.ethernet import VlanTag

MAC_A, MAC_B = "02:00:c6:12:00:01", "02:00:c6:12:00:02"
IP_A, IP_B = "198.18.0.1", "198.18.0.2"
PASS = 2


# ---- assembler (pure) ---------------------------------------------------------------------
def test_redirect_program_encoding_matches_the_reference() -> None:
    a = Asm()
    a.ldx("w", R2, R1, 16)
    a.ld_map(R1, "xsks")
    a.mov(R3, 2)
    a.call(asm.HELPER_REDIRECT_MAP)
    a.exit()
    code = a.assemble({"xsks": 7})
    assert len(code) == 6 * 8
    assert asm.decode(code) == [
        (0x61, 2, 1, 16, 0), (0x18, 1, 1, 0, 7), (0x00, 0, 0, 0, 0),
        (0xB7, 3, 0, 0, 2), (0x85, 0, 0, 0, 51), (0x95, 0, 0, 0, 0)]


def test_labels_resolve_relative_to_next_slot_counting_wide_loads() -> None:
    a = Asm()
    a.jif(R2, ">", R3, "out", reg=True)  # slot 0
    a.ld_imm64(R1, 1 << 40)  # slots 1-2
    a.jmp("out")  # slot 3
    a.label("back")
    a.mov(R0, 1)  # slot 4
    a.label("out")
    a.jif(R0, "==", 0, "back")  # slot 5
    a.exit()  # slot 6
    d = asm.decode(a.assemble())
    assert d[0] == (0x2D, 2, 3, 4, 0)  # 0 -> 5: off = 5 - 1
    assert d[1] == (0x18, 1, 0, 0, 0) and d[2] == (0, 0, 0, 0, 1 << 8)
    assert d[3][3] == 1  # 3 -> 5
    assert d[5] == (0x15, 0, 0, -2, 0)  # 5 -> 4: off = 4 - 6
    assert len(a) == 7


def test_assembler_errors() -> None:
    a = Asm()
    a.jmp("nowhere")
    with pytest.raises(AsmError, match="undefined label"):
        a.assemble()
    a = Asm()
    a.label("x")
    with pytest.raises(AsmError, match="twice"):
        a.label("x")
    with pytest.raises(AsmError):
        Asm().mov(R0, 1 << 33)
    with pytest.raises(AsmError):
        Asm().ldx("w", 11, R1, 0)
    a = Asm()
    a.ld_map(R1, "m")
    a.exit()
    with pytest.raises(AsmError, match="map"):
        a.assemble({})
    a = Asm()
    a.jmp("end")
    a.label("end")
    with pytest.raises(AsmError, match="past the last"):
        a.assemble()


def test_stack_and_store_encodings() -> None:
    a = Asm()
    a.st("dw", FP, -8, 0)
    a.stx("h", FP, -2, R1)
    a.st("b", FP, -1, 0xFF)
    assert asm.decode(a.assemble()) == [(0x7A, 10, 0, -8, 0), (0x6B, 10, 1, -2, 0),
                                        (0x72, 10, 0, -1, 0xFF)]


# ---- keys (pure) -----------------------------------------------------------------------------
def test_spec_keys() -> None:
    k1, key1 = spec_key(FilterSpec.ip4_local("udp", IP_A, 9999))
    k2, key2 = spec_key(FilterSpec.ip4_local("udp", IP_A, 9999).vlan(10))
    k3, key3 = spec_key(FilterSpec.ip4_local("tcp", IP_A, 9999))
    assert k1 == k2 == k3 == TableKind.LOCAL
    assert len({key1, key2, key3}) == 3 and all(len(k) == KEY_SIZE for k in (key1, key2, key3))
    assert key1[2:4] == b"\xff\xff" and key2[2:4] == b"\x00\x0a"
    assert key1[6:8] == struct.pack("!H", 9999) and key1[24:28] == bytes([198, 18, 0, 1])
    assert describe_key(key1) == "local 198.18.0.1:9999"
    assert describe_key(key2) == "local vid=10 198.18.0.1:9999"
    full = spec_key(FilterSpec.ip4_full("udp", IP_A, 9999, "198.18.0.2", 53))[1]
    assert describe_key(full).endswith("198.18.0.1:9999 from 198.18.0.2:53")
    assert describe_key(spec_key(FilterSpec.eth_local(MAC_A))[1]).endswith(
        " " + MAC_A.lower())
    assert spec_key(FilterSpec.eth_local(MAC_A).ip_proto(1))[0] == TableKind.MAC_PROTO
    assert spec_key(FilterSpec.eth_local(MAC_A).eth_type(0x0806))[0] == TableKind.MAC_ETYPE
    assert spec_key(FilterSpec.multicast_mismatch())[0] == TableKind.MCAST_MIS
    with pytest.raises(UnsupportedError, match="packet"):
        spec_key(FilterSpec.port_sniff())
    assert kmac_key(bytes(range(6))) == bytes(range(6)) + b"\0\0"


# ---- the program in the kernel -------------------------------------------------------------
class Table:
    """The program's maps plus a loaded report_target program."""

    def __init__(self) -> None:
        self.fds = {
            "config": bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1),
            "ftable": bpf.map_create(bpf.BPF_MAP_TYPE_HASH, KEY_SIZE, 4, FTABLE_SIZE),
            "kmacs": bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 8, 4, KMACS_SIZE),
            "xsks": bpf.map_create(bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, XSKMAP_SIZE),
        }
        self.prog = bpf.prog_load(build_program(report_target=True).assemble(self.fds))
        self.mask = 0

    def add(self, spec: FilterSpec, target: int) -> None:
        kind, key = spec_key(spec)
        bpf.map_update(self.fds["ftable"], key, struct.pack("<I", target))
        self.mask |= presence_bit(kind, spec.vlan_id is None)
        bpf.map_update(self.fds["config"], bytes(4), struct.pack("<Q", self.mask))

    def kernel_mac(self, mac: bytes) -> None:
        bpf.map_update(self.fds["kmacs"], kmac_key(mac), struct.pack("<I", 1))

    def run(self, frame: bytes) -> int:
        """The target that got ``frame`` (0 = XDP_PASS to the kernel)."""
        rv, _ = bpf.prog_test_run(self.prog, frame)
        if rv == PASS:
            return 0
        assert rv >= REPORT_BASE, f"program returned action {rv}"
        return rv - REPORT_BASE

    def close(self) -> None:
        os.close(self.prog)
        for fd in self.fds.values():
            os.close(fd)


@pytest.fixture
def table() -> Iterator[Table]:
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root (CAP_BPF)")
    t = Table()
    try:
        yield t
    finally:
        t.close()


def udp(dport: int = 9999, dst_ip: str = IP_A, dst_mac: str = MAC_A, sport: int = 1234,
        vlans: tuple[VlanTag, ...] = (), src_ip: str = IP_B) -> bytes:
    return udp_frame(dst_mac, MAC_B, src_ip, dst_ip, sport, dport, b"payload", vlans=vlans)


def tcp(dport: int) -> bytes:
    seg = struct.pack("!HHIIBBHHH", 1234, dport, 0, 0, 0x50, 0x02, 8192, 0, 0)
    return ip_frame(MAC_A, MAC_B, IP_B, IP_A, 6, seg)


pytestmark_kernel = pytest.mark.integration


@pytestmark_kernel
def test_verifier_accepts_the_program_and_no_filter_passes(table: Table) -> None:
    assert table.run(udp()) == 0
    assert table.run(bytes(14)) == 0  # header only: passed
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    assert table.run(udp()[:30]) == 0  # truncated IP header: bounds checks pass it on


@pytestmark_kernel
def test_ip_local_and_full_priority(table: Table) -> None:
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    assert table.run(udp()) == 3
    assert table.run(udp(dport=9998)) == 0
    assert table.run(tcp(9999)) == 0
    table.add(FilterSpec.ip4_full("udp", IP_A, 9999, IP_B, 1234), 5)
    assert table.run(udp()) == 5  # 5-tuple beats 3-tuple
    assert table.run(udp(sport=1235)) == 3
    table.add(FilterSpec.ip4_local("tcp", IP_A, 9999), 6)
    assert table.run(tcp(9999)) == 6


@pytestmark_kernel
def test_fragments_skip_ip_filters_but_match_ipproto(table: Table) -> None:
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    f = bytearray(udp())
    f[20:22] = struct.pack("!H", 0x2000)  # MF: first fragment
    assert table.run(bytes(f)) == 0
    f[20:22] = struct.pack("!H", 0x0010)  # a later fragment
    assert table.run(bytes(f)) == 0
    table.add(FilterSpec.ip_proto(17), 9)
    assert table.run(bytes(f)) == 9
    assert table.run(udp()) == 3  # IP filters still beat ipproto


@pytestmark_kernel
def test_vlan_specific_beats_vlan_any_and_qinq_parses(table: Table) -> None:
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999).vlan(10), 4)
    assert table.run(udp()) == 3
    assert table.run(udp(vlans=(VlanTag(10),))) == 4
    assert table.run(udp(vlans=(VlanTag(11),))) == 3
    qinq = (VlanTag(10, tpid=0x88A8), VlanTag(20))
    assert table.run(udp(vlans=qinq)) == 4  # the outer tag is the filter's VLAN


@pytestmark_kernel
def test_l2_and_class_filters(table: Table) -> None:
    mac_a = bytes.fromhex(MAC_A.replace(":", ""))
    arp = bytes.fromhex(MAC_A.replace(":", "")) + bytes(6) + b"\x08\x06" + bytes(28)
    table.add(FilterSpec.eth_type(0x0806), 7)
    assert table.run(arp) == 7
    assert table.run(udp()) == 0
    table.add(FilterSpec.ip_proto(17), 8)
    assert table.run(udp()) == 8
    table.add(FilterSpec.eth_local(MAC_A), 2)
    assert table.run(udp()) == 2  # MAC beats class filters
    table.add(FilterSpec.eth_local(MAC_A).ip_proto(17), 11)
    assert table.run(udp()) == 11  # MAC + ipproto beats MAC alone
    assert table.run(arp) == 2
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    assert table.run(udp()) == 3  # IP beats MAC
    other = bytes.fromhex("020000000099") + arp[6:]  # same ARP frame, another MAC
    assert arp[:6] == mac_a and table.run(other) == 7  # the MAC filter does not take it


@pytestmark_kernel
def test_all_and_mismatch_filters(table: Table) -> None:
    mcast = udp(dst_ip="239.1.1.1", dst_mac="01:00:5e:01:01:01")
    table.add(FilterSpec.unicast_mismatch(), 12)
    table.add(FilterSpec.multicast_mismatch(), 13)
    table.kernel_mac(bytes.fromhex(MAC_A.replace(":", "")))
    assert table.run(udp()) == 0  # the kernel wants its own MAC
    assert table.run(udp(dst_mac="02:00:00:00:00:99")) == 12
    assert table.run(mcast) == 13
    table.kernel_mac(bytes.fromhex("01005e010101"))
    assert table.run(mcast) == 0  # subscribed: the kernel wants it
    table.add(FilterSpec.unicast_all(), 14)
    table.add(FilterSpec.multicast_all(), 15)
    assert table.run(udp()) == 14
    assert table.run(mcast) == 15


@pytestmark_kernel
def test_ipv6_filters(table: Table) -> None:
    f = udp_frame(MAC_A, MAC_B, "2001:db8::2", "2001:db8::1", 1234, 9999, b"six")
    table.add(FilterSpec.ip6_local("udp", "2001:db8::1", 9999), 6)
    assert table.run(f) == 6
    table.add(FilterSpec.ip6_full("udp", "2001:db8::1", 9999, "2001:db8::2", 1234), 7)
    assert table.run(f) == 7
    assert table.run(udp_frame(MAC_A, MAC_B, "2001:db8::2", "2001:db8::1", 1234, 9998,
                               b"")) == 0


@pytestmark_kernel
def test_verifier_rejection_carries_the_log(table: Table) -> None:
    a = Asm()
    a.ldx("w", R2, R1, 0)
    a.ldx("b", R0, R2, 12)  # packet read without a bounds check
    a.exit()
    with pytest.raises(bpf.VerifierError) as ei:
        bpf.prog_load(a.assemble(), name="bad")
    assert ei.value.errno == 13 and "invalid access to packet" in ei.value.log
    assert isinstance(ei.value, SetupError)


@pytestmark_kernel
def test_bpf_level_after_the_table_first_program_wins(table: Table) -> None:
    from efvi.bpf import libpcap
    if not libpcap.available():
        pytest.skip("needs libpcap0.8")
    odd = libpcap.compile_expression("udp and udp[1] & 1 = 1")  # odd source port
    tcp_any = libpcap.compile_expression("tcp or udp dst port 7777")
    os.close(table.prog)
    table.prog = bpf.prog_load(build_program(report_target=True, bpf_filters=[
        (odd, 7), (tcp_any, 9)]).assemble(table.fds))
    assert table.run(udp(sport=1235)) == 7  # no table entries at all: bpf still runs
    assert table.run(udp(sport=1234)) == 0
    assert table.run(tcp(80)) == 9
    assert table.run(udp(dport=7777, sport=1235)) == 7  # first program wins
    assert table.run(bytes(14)) == 0  # header only: the programs' loads miss
    table.add(FilterSpec.ip4_local("udp", IP_A, 9999), 3)
    assert table.run(udp(sport=1235)) == 3  # the table's levels come first
    assert table.run(udp(dport=9998, sport=1235)) == 7
