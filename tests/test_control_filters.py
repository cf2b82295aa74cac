"""Precise control-protocol filters (FilterSpec.arp / icmp_echo / icmp6_echo_nd): one
address's ARP, ICMP echo and ICMPv6 echo + ND, as classic BPF riding the ``bpf`` kind.

tcpdump is the oracle: each program must select exactly the frames ``tcpdump -r``
selects for an equivalent expression, in the cBPF interpreter, the numpy evaluator
and (as root) the eBPF translation under BPF_PROG_TEST_RUN — the three places the
adapters run it (packet socket filter, sim table, xdp program).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from bpf_corpus import tcpdump_matches, write_pcap
from scapy.layers.inet import ICMP, IP, UDP, IPOption_RR  # type: ignore[import-untyped]
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest,  # type: ignore[import-untyped]
                                ICMPv6ND_NA, ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop)
from scapy.layers.l2 import ARP, Dot1Q, Ether  # type: ignore[import-untyped]

from efvi import Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.bpf import cbpf, syscall, translate, vector
from efvi.constants import PKT_BUF_SIZE
from efvi.filters import FilterKind

IP4, OTHER4 = "198.18.0.10", "198.18.0.1"
IP6, OTHER6 = "fd00:198:18::10", "fd00:198:18::1"
SNM = "ff02::1:ff00:10"
M, P = "02:00:c6:12:00:0a", "02:00:c6:12:00:02"
XDP_PASS = 2


def _frames() -> list[bytes]:
    e = Ether(src=P, dst=M)
    b = Ether(src=P, dst="ff:ff:ff:ff:ff:ff")
    f = [
        b / ARP(op=1, hwsrc=P, psrc=OTHER4, pdst=IP4),  # request for us
        b / ARP(op=1, hwsrc=P, psrc=OTHER4, pdst="198.18.0.99"),  # for someone else
        b / ARP(op=2, hwsrc=P, psrc=IP4, pdst=IP4),  # someone claims our address
        e / ARP(op=2, hwsrc=P, psrc=OTHER4, pdst=IP4, hwdst=M),  # reply to us
        e / ARP(op=2, hwsrc=P, psrc=OTHER4, pdst=OTHER4),
        b / ARP(op=1, hwtype=6, hwsrc=P, psrc=OTHER4, pdst=IP4),  # not Ethernet ARP
        b / Dot1Q(vlan=5) / ARP(op=1, hwsrc=P, psrc=OTHER4, pdst=IP4),  # tagged
        bytes(b / ARP(op=1, hwsrc=P, psrc=OTHER4, pdst=IP4))[:30],  # truncated
        e / IP(src=OTHER4, dst=IP4) / ICMP(type=8) / b"ping",
        e / IP(src=OTHER4, dst=OTHER4) / ICMP(type=8),
        e / IP(src=OTHER4, dst=IP4) / ICMP(type=0),
        e / IP(src=OTHER4, dst=IP4, options=[IPOption_RR()]) / ICMP(type=8),
        e / IP(src=OTHER4, dst=IP4, frag=10) / ICMP(type=8),  # non-first fragment
        e / IP(src=OTHER4, dst=IP4, flags="MF") / ICMP(type=8),  # first fragment
        e / IP(src=OTHER4, dst=IP4) / UDP(dport=8),
        e / IPv6(src=OTHER6, dst=IP6) / ICMPv6EchoRequest(),
        e / IPv6(src=OTHER6, dst=OTHER6) / ICMPv6EchoRequest(),
        e / IPv6(src=OTHER6, dst=IP6) / ICMPv6EchoReply(),
        Ether(src=P, dst="33:33:ff:00:00:10") / IPv6(src=OTHER6, dst=SNM, hlim=255)
        / ICMPv6ND_NS(tgt=IP6),
        Ether(src=P, dst="33:33:ff:00:00:01") / IPv6(src=OTHER6, dst="ff02::1:ff00:1",
                                                     hlim=255) / ICMPv6ND_NS(tgt=OTHER6),
        Ether(src=P, dst="33:33:00:00:00:01") / IPv6(src=OTHER6, dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=IP6),
        e / IPv6(src=OTHER6, dst=IP6) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(),
        e / IPv6(src=OTHER6, dst=IP6) / UDP(dport=7),
        Ether(src=P, dst=M, type=0x88CC) / (b"\x00" * 50),
        b"",
    ]
    return [bytes(x) for x in f]


FRAMES = _frames()


def _hex(ip: str) -> list[str]:
    b = ipaddress.ip_address(ip).packed
    return [f"0x{b[i:i + 4].hex()}" for i in range(0, len(b), 4)]


def _v6_eq(base: int, ip: str) -> str:
    return " and ".join(f"ip6[{base + 4 * i}:4] == {w}" for i, w in enumerate(_hex(ip)))


CASES = [
    (FilterSpec.arp(IP4),
     f"arp and arp[0:2] == 1 and arp[2:2] == 0x0800 and arp[4] == 6 and arp[5] == 4 and "
     f"(arp[24:4] == {_hex(IP4)[0]} or arp[14:4] == {_hex(IP4)[0]})"),
    (FilterSpec.icmp_echo(IP4),
     f"icmp and dst host {IP4} and ip[6:2] & 0x1fff == 0 and icmp[0] == 8"),
    (FilterSpec.icmp6_echo_nd(IP6),
     f"ip6 and ip6[6] == 58 and ((ip6[40] == 128 and {_v6_eq(24, IP6)}) or "
     f"((ip6[40] == 135 or ip6[40] == 136) and {_v6_eq(48, IP6)}))"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ctl") / "control.pcap"
    write_pcap(path, FRAMES)
    return path


@pytest.mark.parametrize("spec,expression", CASES, ids=["arp", "icmp_echo", "icmp6_echo_nd"])
def test_control_filter_agrees_with_tcpdump(spec: FilterSpec, expression: str,
                                            corpus: Path) -> None:
    assert spec.kind == FilterKind.BPF
    want = tcpdump_matches(corpus, expression)
    assert want, "the corpus has frames the filter must take"
    insns = [cbpf.Insn(*i) for i in spec.program]
    assert [i for i, f in enumerate(FRAMES) if cbpf.run(insns, f)] == want, "interpreter"
    got = vector.run_frames(list(spec.program), FRAMES)
    assert [int(i) for i in got.nonzero()[0]] == want, "numpy evaluator"
    if os.geteuid() != 0:
        pytest.skip("loading eBPF programs needs root")
    fd = syscall.prog_load(translate.test_program(list(spec.program)).assemble(),
                           name="efvi_ctl_t")
    try:
        ebpf = [i for i, f in enumerate(FRAMES)
                if len(f) >= 14 and syscall.prog_test_run(fd, f)[0] == XDP_PASS]
    finally:
        os.close(fd)
    assert ebpf == want, "eBPF translation"


def test_expected_frames_are_the_ones_taken() -> None:
    """Spell out the intent, independently of tcpdump."""
    def taken(spec: FilterSpec) -> list[int]:
        insns = [cbpf.Insn(*i) for i in spec.program]
        return [i for i, f in enumerate(FRAMES) if cbpf.run(insns, f)]
    assert taken(FilterSpec.arp(IP4)) == [0, 2, 3]
    assert taken(FilterSpec.icmp_echo(IP4)) == [8, 11, 13]
    assert taken(FilterSpec.icmp6_echo_nd(IP6)) == [15, 18, 20]


def test_sim_table_steals_only_the_stations_frames() -> None:
    """On sim, a VI with the three filters takes the station's frames; the port's
    kernel side keeps the rest."""
    w = f"ctl{os.getpid()}"
    with Driver.open(f"sim:ctx?wire={w}") as dtx, Driver.open(f"sim:crx?wire={w}") as drx:
        pd = ProtectionDomain(drx)
        mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=64, txq=0)
        for spec, _ in CASES:
            vi.filter_add(spec)
        vi.receive_post_batch(mr.dma_addrs()[:63], __import__("numpy").arange(63, dtype="u4"))
        tpd = ProtectionDomain(dtx)
        tmr = MemoryRegion(tpd, 64 * PKT_BUF_SIZE)
        tvi = VirtualInterface(tpd, rxq=0, txq=64)
        sent = [f for f in FRAMES if len(f) >= 14]
        for k, f in enumerate(sent):
            tmr.mv[k * PKT_BUF_SIZE:k * PKT_BUF_SIZE + len(f)] = f
            assert tvi.transmit(tmr.dma_addr(k * PKT_BUF_SIZE), len(f), k) == 0
        got: list[bytes] = []
        for _ in range(50):
            for ev in vi.eventq_poll():
                if ev.type == EventType.RX:
                    got.append(mr.read(mr.dma_addr(ev.rq_id * PKT_BUF_SIZE + ev.ofs), ev.len))
            tvi.eventq_poll()
        want = {0, 2, 3, 8, 11, 13, 15, 18, 20}
        assert sorted(got) == sorted(FRAMES[i] for i in want)


def test_parse_filter_grammar() -> None:
    from efvi.filters import parse_filter
    assert parse_filter(f"arp:{IP4}") == FilterSpec.arp(IP4)
    assert parse_filter(f"icmp-echo:{IP4},sniff") == FilterSpec.icmp_echo(IP4).sniff()
    assert parse_filter(f"icmp6-echo-nd:[{IP6}]") == FilterSpec.icmp6_echo_nd(IP6)
    with pytest.raises(Exception, match="not an IPv4 address"):
        parse_filter("arp:fd00::1")
