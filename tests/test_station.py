"""efvi station: the sans-I/O core checked with scapy (which no one here wrote), and
the runner on the sim adapter."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether  # type: ignore[import-untyped]

from efvi import Driver, EventType, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.apps.station import Station, StationConfig, StationRunner, solicited_node
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterSpec

MAC = "02:00:c6:12:00:0a"
PEER = "02:00:c6:12:00:02"
IP4 = "198.18.0.10"
IP6 = "fd00:198:18::10"


def station(**kw: object) -> Station:
    args: dict[str, object] = {"ip": IP4 + "/24", "ipv6": IP6, "udp_echo": (7, 9000)}
    args.update(kw)
    return Station(StationConfig.parse(MAC, **args))  # type: ignore[arg-type]


def checksums_ok(frame: bytes) -> bool:
    """scapy recomputes every checksum; equal bytes mean ours were right."""
    p = Ether(frame)
    for layer in (IP, UDP, ICMP, ICMPv6EchoReply, ICMPv6ND_NA):
        if layer in p:
            if hasattr(p[layer], "chksum"):
                p[layer].chksum = None
            if layer is IP:
                p[IP].chksum = None
    return bytes(Ether(bytes(p))) == bytes(Ether(frame))


def test_arp_request_for_our_address_is_answered() -> None:
    s = station()
    req = Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=PEER, psrc="198.18.0.2",
                                                         pdst=IP4)
    out = s.handle(bytes(req), 0)
    assert out is not None and len(out) == 60
    r = Ether(out)
    assert r.dst == PEER and r.src == MAC
    assert r[ARP].op == 2 and r[ARP].hwsrc == MAC and r[ARP].psrc == IP4
    assert r[ARP].hwdst == PEER and r[ARP].pdst == "198.18.0.2"
    assert s.counters["arp_requests"] == 1 and s.counters["arp_replies_sent"] == 1


def test_arp_for_another_address_is_ignored() -> None:
    s = station()
    req = Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=PEER, psrc="198.18.0.2",
                                                         pdst="198.18.0.1")
    assert s.handle(bytes(req), 0) is None
    assert s.counters["not_ours"] == 1 and s.counters["arp_replies_sent"] == 0


def test_gratuitous_arp_and_conflict() -> None:
    s = station()
    g = Ether(s.gratuitous_arp())
    assert g.dst == "ff:ff:ff:ff:ff:ff" and g[ARP].psrc == g[ARP].pdst == IP4
    assert g[ARP].hwsrc == MAC
    claim = Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=PEER, psrc=IP4,
                                                           pdst=IP4)
    assert s.handle(bytes(claim), 0) is None
    assert s.counters["arp_conflicts"] == 1
    assert s.conflicts == [(IP4, PEER)]
    # our own announcement coming back is not a conflict
    s.handle(s.gratuitous_arp(), 0)
    assert s.counters["arp_conflicts"] == 1


def test_icmp_echo_v4() -> None:
    s = station()
    req = (Ether(src=PEER, dst=MAC) / IP(src="198.18.0.2", dst=IP4, ttl=3)
           / ICMP(type=8, id=0x1234, seq=7) / (b"x" * 56))
    out = s.handle(bytes(req), 0)
    assert out is not None
    r = Ether(out)
    assert r[IP].src == IP4 and r[IP].dst == "198.18.0.2" and r.dst == PEER
    assert r[ICMP].type == 0 and r[ICMP].id == 0x1234 and r[ICMP].seq == 7
    assert r[ICMP].load == b"x" * 56
    assert checksums_ok(out)
    assert s.counters["icmp_echo"] == 1


def test_bad_checksum_and_fragments_are_counted_not_answered() -> None:
    s = station()
    req = Ether(src=PEER, dst=MAC) / IP(src="198.18.0.2", dst=IP4) / ICMP(type=8, chksum=1)
    assert s.handle(bytes(req), 0) is None
    frag = Ether(src=PEER, dst=MAC) / IP(src="198.18.0.2", dst=IP4, flags="MF") / ICMP(type=8)
    assert s.handle(bytes(frag), 0) is None
    assert s.counters["checksum_drops"] == 1 and s.counters["fragment_drops"] == 1


@pytest.mark.parametrize("v6", [False, True])
def test_udp_echo(v6: bool) -> None:
    s = station()
    l3 = (IPv6(src="fd00:198:18::2", dst=IP6) if v6 else IP(src="198.18.0.2", dst=IP4))
    req = Ether(src=PEER, dst=MAC) / l3 / UDP(sport=40000, dport=9000) / b"hello station"
    out = s.handle(bytes(req), 0)
    assert out is not None
    r = Ether(out)
    assert r[UDP].sport == 9000 and r[UDP].dport == 40000
    assert r[UDP].load == b"hello station"
    assert checksums_ok(out)
    other = Ether(src=PEER, dst=MAC) / l3 / UDP(sport=1, dport=9001) / b"x"
    assert s.handle(bytes(other), 0) is None
    assert s.counters["udp_echo"] == 1 and s.counters["not_ours"] == 1


def test_icmp6_echo_and_neighbour_solicitation() -> None:
    s = station()
    snm = str(__import__("ipaddress").ip_address(solicited_node(
        __import__("ipaddress").ip_address(IP6).packed)))
    ns = (Ether(src=PEER, dst="33:33:ff:00:00:10") / IPv6(src="fd00:198:18::2", dst=snm,
                                                          hlim=255)
          / ICMPv6ND_NS(tgt=IP6) / ICMPv6NDOptSrcLLAddr(lladdr=PEER))
    out = s.handle(bytes(ns), 0)
    assert out is not None
    r = Ether(out)
    assert r.dst == PEER and r[IPv6].hlim == 255 and r[IPv6].dst == "fd00:198:18::2"
    na = r[ICMPv6ND_NA]
    assert na.tgt == IP6 and na.S == 1 and na.O == 1 and na.R == 0
    assert r[ICMPv6NDOptDstLLAddr].lladdr == MAC
    assert checksums_ok(out)
    # hop limit other than 255 must be ignored (RFC 4861 7.1.1)
    bad = bytes(ns)
    bad = bad[:21] + bytes([64]) + bad[22:]
    assert s.handle(bad, 0) is None
    echo = (Ether(src=PEER, dst=MAC) / IPv6(src="fd00:198:18::2", dst=IP6)
            / ICMPv6EchoRequest(id=5, seq=6, data=b"ping6"))
    out = s.handle(bytes(echo), 0)
    assert out is not None
    r = Ether(out)
    assert ICMPv6EchoReply in r and r[ICMPv6EchoReply].id == 5
    assert r[ICMPv6EchoReply].data == b"ping6"
    assert checksums_ok(out)
    c = s.counters
    assert c["ndp_solicits"] == 1 and c["ndp_adverts_sent"] == 1 and c["icmp6_echo"] == 1
    assert c["malformed_drops"] == 1


def test_flood_is_rate_limited_and_counted() -> None:
    s = station(rate_pps=100)
    req = bytes(Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=PEER, psrc="198.18.0.2", pdst=IP4))
    replies = sum(s.handle(req, 1000 * i) is not None for i in range(10_000))  # 10 ms
    assert 100 <= replies <= 101  # the burst, plus at most one token earned in 10 ms
    assert s.counters["arp_rate_drops"] == 10_000 - replies
    # a second later the bucket has refilled
    assert s.handle(req, 2_000_000_000) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    s = station()
    s.handle(data, 0)
    assert s.counters["rx_frames"] == 1
    assert sum(v for k, v in s.counters.items() if k != "rx_frames") <= 1


def test_config_errors() -> None:
    with pytest.raises(SetupError, match="needs an address"):
        StationConfig.parse(MAC)
    with pytest.raises(SetupError, match="not IPv4"):
        StationConfig.parse(MAC, ip="fd00::1")
    with pytest.raises(SetupError, match="out of range"):
        StationConfig.parse(MAC, ip=IP4, udp_echo=(70000,))


# ---- the runner on sim ------------------------------------------------------------------------
def _peer(url: str) -> tuple[Driver, VirtualInterface, MemoryRegion]:
    d = Driver.open(url)
    pd = ProtectionDomain(d)
    mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
    vi = VirtualInterface(pd, rxq=32, txq=32)
    vi.filter_add(FilterSpec.unicast_all())
    vi.filter_add(FilterSpec.multicast_all())
    vi.receive_post_batch(mr.dma_addrs()[:31], np.arange(31, dtype=np.uint32))
    return d, vi, mr


def _exchange(vi: VirtualInterface, mr: MemoryRegion, frames: list[bytes],
              want: int, stop: list[bool]) -> list[bytes]:
    got: list[bytes] = []
    for i, f in enumerate(frames):
        off = (40 + i) * PKT_BUF_SIZE
        mr.mv[off:off + len(f)] = f
        assert vi.transmit(mr.dma_addr(off), len(f), 40 + i) == 0
    for _ in range(2000):
        for ev in vi.eventq_poll():
            if ev.type == EventType.RX:
                got.append(mr.read(mr.dma_addr(ev.rq_id * PKT_BUF_SIZE + ev.ofs), ev.len))
                vi.receive_post(mr.dma_addr(ev.rq_id * PKT_BUF_SIZE), ev.rq_id)
            elif ev.type == EventType.TX:
                vi.transmit_unbundle(ev)
        if len(got) >= want:
            break
        vi.eventq_wait(1_000_000)
    stop[0] = True
    return got


def test_runner_on_sim_answers_a_peer() -> None:
    wire = f"st{id(object())}"
    runner = StationRunner(f"sim:st?wire={wire}", ip=IP4, ipv6=IP6, mac=MAC, udp_echo=(7,))
    d, vi, mr = _peer(f"sim:peer?wire={wire}")
    try:
        stop = [False]
        result: list[object] = []
        th = threading.Thread(target=lambda: result.append(runner.run(duration_s=10, stop=stop)))
        th.start()
        frames = [bytes(Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff")
                        / ARP(op=1, hwsrc=PEER, psrc="198.18.0.2", pdst=IP4)),
                  bytes(Ether(src=PEER, dst=MAC) / IP(src="198.18.0.2", dst=IP4)
                        / ICMP(type=8, id=1, seq=1)),
                  bytes(Ether(src=PEER, dst=MAC) / IPv6(src="fd00:198:18::2", dst=IP6)
                        / UDP(sport=5, dport=7) / b"u6")]
        got = _exchange(vi, mr, frames, 5, stop)  # GARP, unsolicited NA and 3 answers
        th.join(10)
        kinds = sorted(Ether(g).summary().split(" / ")[1].split()[0] for g in got)
        assert len(got) == 5, kinds
        c = runner.station.counters
        assert c["arp_replies_sent"] == 1 and c["icmp_echo"] == 1 and c["udp_echo"] == 1
        assert c["arp_gratuitous_sent"] == 1 and c["tx_frames"] == 5
        st_ = result[0]
        assert st_.drops == 0
    finally:
        runner.close()
        d.close()


def test_runner_refuses_the_kernels_address() -> None:
    with pytest.raises(SetupError, match="already the kernel's address on kown"):
        StationRunner("sim:kown?ip=198.18.0.1", ip="198.18.0.1/24")


def test_station_filters_refuse_stealing_on_a_real_interface() -> None:
    from efvi.apps.station import station_filters
    cfg = StationConfig.parse(MAC, ip=IP4)
    with pytest.raises(UnsupportedError, match="packet"):
        station_filters(cfg, "xdp", sniff=False, steal=True)
    assert all(f.sniff_mode for f in station_filters(cfg, "packet", sniff=True, steal=False))
    precise = station_filters(StationConfig.parse(MAC, ip=IP4, ipv6=IP6, udp_echo=(7,)), "xdp",
                              sniff=False, steal=True, kinds=frozenset({"bpf", "ip_local"}))
    assert [str(f) for f in precise] == [
        f"bpf:arp {IP4}", f"bpf:icmp-echo {IP4}", f"bpf:icmp6-echo-nd {IP6}",
        f"udp:{IP4}:7", f"udp:{IP6}:7"]
