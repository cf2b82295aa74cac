"""The tcpdump-expression corpus: frames (built with scapy) and expressions.

Shared by the expression tests (cBPF interpreter, numpy evaluator, eBPF translation
under BPF_PROG_TEST_RUN, live capture). tcpdump is the oracle: :func:`tcpdump_matches`
runs ``tcpdump -r FILE -tt -n EXPR`` on the same frames and returns the indices it
printed (frame *i* is stored with timestamp ``BASE_S + i`` seconds).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

BASE_S = 1000
A1, A2, B1 = "198.18.0.1", "198.18.0.2", "198.19.1.1"
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
BCAST = "ff:ff:ff:ff:ff:ff"
MCAST = "01:00:5e:12:00:01"
V6A, V6B = "fd00:198:18::1", "fd00:198:18::2"

EXPRESSIONS: list[str] = [
    "tcp", "udp", "icmp", "arp", "ip", "ip6", "not ip",
    "tcp port 80", "udp port 53", "port 5000", "src port 1024", "dst port 443",
    "portrange 5000-5010", "tcp dst portrange 79-81",
    "host 198.18.0.1", "src host 198.18.0.2", "dst host 198.19.1.1",
    "net 198.18.0.0/24", "src net 198.19.0.0/16", "ip and not src net 198.18.0.0/16",
    "ip host 198.18.0.1 and ip host 198.18.0.2",
    "vlan", "vlan 10", "vlan and udp", "vlan 10 and tcp port 80", "vlan 20 and vlan 30",
    "ip6 and tcp", "ip6 and udp port 53", "icmp6", "ip6 host fd00:198:18::1",
    "ip6 and ip6[6] == 58",
    "icmp[icmptype] == icmp-echo", "icmp[icmptype] == icmp-echoreply", "icmp[0] == 3",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & tcp-rst != 0", "tcp[13] & 1 != 0",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "greater 1000", "less 64", "len > 100 and len < 500",
    "ip[6:2] & 0x1fff != 0", "ip[6] & 0x20 != 0", "ip[0] & 0xf > 5", "ip[2:2] > 576",
    "udp[8:2] == 0x1234", "udp and ip[8] < 5",
    "ether multicast", "ether broadcast", "ether host 02:00:00:00:00:01",
    "ether src 02:00:00:00:00:02", "ether proto 0x88cc", "ether[0] & 1 = 0",
    "arp and not ether broadcast", "not tcp and not udp", "tcp or icmp",
    "(tcp port 80 or udp port 53) and host 198.18.0.1",
    "icmp or arp or (udp and dst port 123)", "ip proto 132",
]


def _eth(dst: str = M2, src: str = M1) -> Ether:
    return Ether(dst=dst, src=src)


def build_frames() -> list[bytes]:
    """About 50 frames covering every expression above (matches and misses)."""
    f: list[object] = []
    pay = Raw(b"x" * 20)
    # IPv4 TCP: ports, flags, payloads
    for sport, dport, flags in ((1024, 80, "S"), (80, 1024, "SA"), (1024, 80, "A"),
                                (40000, 443, "PA"), (443, 40000, "R"), (1024, 80, "FA")):
        f.append(_eth() / IP(src=A1, dst=A2) / TCP(sport=sport, dport=dport, flags=flags) / pay)
    f.append(_eth() / IP(src=A1, dst=A2) / TCP(sport=1025, dport=80, flags="PA")
             / Raw(b"GET / HTTP/1.1\r\n\r\n"))
    f.append(_eth(M1, M2) / IP(src=B1, dst=A1) / TCP(sport=5005, dport=79, flags="S"))
    # IPv4 UDP
    f.append(_eth() / IP(src=A1, dst=B1) / UDP(sport=1024, dport=53) / pay)
    f.append(_eth(M1, M2) / IP(src=B1, dst=A1) / UDP(sport=53, dport=1024) / pay)
    f.append(_eth() / IP(src=A2, dst=A1) / UDP(sport=5000, dport=5000) / Raw(b"\x12\x34abcd"))
    f.append(_eth() / IP(src=A2, dst=A1, ttl=3) / UDP(sport=5009, dport=6000) / pay)
    f.append(_eth() / IP(src=A2, dst=B1) / UDP(sport=4000, dport=123) / pay)
    f.append(_eth() / IP(src=A1, dst=A2) / UDP(sport=1, dport=2) / Raw(b"y" * 1200))
    # ICMP
    f.append(_eth() / IP(src=A1, dst=A2) / ICMP(type=8) / pay)
    f.append(_eth(M1, M2) / IP(src=A2, dst=A1) / ICMP(type=0) / pay)
    f.append(_eth() / IP(src=A2, dst=A1) / ICMP(type=3, code=3) / IP(src=A1, dst=A2)
             / UDP(sport=9, dport=9))
    f.append(_eth() / IP(src=A2, dst=A1) / ICMP(type=11) / pay)
    # fragments, options, other protocols
    f.append(_eth() / IP(src=A1, dst=A2, flags="MF", frag=0, proto=17) / Raw(b"z" * 40))
    f.append(_eth() / IP(src=A1, dst=A2, frag=5, proto=17) / Raw(b"z" * 40))
    f.append(_eth() / IP(src=A1, dst=A2, flags="DF") / UDP(sport=7, dport=5003) / pay)
    f.append(_eth() / IP(src=A1, dst=A2, options=[IPOption_RR()]) / TCP(sport=1024, dport=80))
    f.append(_eth() / IP(src=A1, dst=A2, proto=132) / Raw(b"s" * 30))
    f.append(_eth() / IP(src=A1, dst=A2, len=700) / UDP(sport=1, dport=2) / Raw(b"q" * 672))
    # IPv6
    f.append(_eth() / IPv6(src=V6A, dst=V6B) / TCP(sport=1024, dport=80, flags="S"))
    f.append(_eth() / IPv6(src=V6B, dst=V6A) / UDP(sport=1024, dport=53) / pay)
    f.append(_eth() / IPv6(src=V6A, dst=V6B) / ICMPv6EchoRequest())
    f.append(Ether(dst="33:33:ff:00:00:02", src=M1) / IPv6(src=V6A, dst="ff02::1:ff00:2")
             / ICMPv6ND_NS(tgt=V6B))
    f.append(_eth() / IPv6(src=V6A, dst=V6B) / IPv6ExtHdrHopByHop() / UDP(sport=5, dport=53))
    # VLAN and QinQ
    f.append(_eth() / Dot1Q(vlan=10) / IP(src=A1, dst=A2) / UDP(sport=1024, dport=5000) / pay)
    f.append(_eth() / Dot1Q(vlan=10) / IP(src=A1, dst=A2) / TCP(sport=1024, dport=80))
    f.append(_eth() / Dot1Q(vlan=20) / IP(src=A1, dst=A2) / TCP(sport=1024, dport=80))
    f.append(_eth() / Dot1AD(vlan=20) / Dot1Q(vlan=30) / IP(src=A1, dst=A2)
             / UDP(sport=1, dport=53))
    f.append(_eth() / Dot1Q(vlan=10) / ARP(psrc=A1, pdst=A2))
    # ARP and L2
    f.append(Ether(dst=BCAST, src=M1) / ARP(op=1, psrc=A1, pdst=A2))
    f.append(_eth(M1, M2) / ARP(op=2, psrc=A2, pdst=A1, hwsrc=M2, hwdst=M1))
    f.append(Ether(dst=MCAST, src=M1) / IP(src=A1, dst="198.18.255.255") / UDP(sport=1, dport=5001))
    f.append(Ether(dst=BCAST, src=M2) / IP(src=A2, dst="198.18.255.255") / UDP(sport=68, dport=67))
    f.append(Ether(dst="01:80:c2:00:00:0e", src=M1, type=0x88CC) / Raw(b"\x02\x07" + b"l" * 40))
    f.append(Ether(dst=M2, src=M1, type=0x9000) / Raw(b"loop" * 12))
    # short and truncated frames (bounds checks)
    frames = [bytes(p) for p in f]  # type: ignore[call-overload]
    tcp_full = bytes(_eth() / IP(src=A1, dst=A2) / TCP(sport=1024, dport=80))
    frames.append(tcp_full[:30])  # IPv4 header cut in the addresses
    frames.append(tcp_full[:36])  # TCP ports missing
    frames.append(tcp_full[:14 + 20 + 13])  # TCP flags byte missing
    frames.append(bytes(_eth())[:12])  # no EtherType
    v6 = bytes(_eth() / IPv6(src=V6A, dst=V6B) / UDP(sport=1024, dport=53))
    frames.append(v6[:50])
    frames.append(bytes(_eth() / Dot1Q(vlan=10))[:16])  # tag cut after the TCI
    return frames


def write_pcap(path: Path, frames: list[bytes]) -> None:
    """A classic pcap (µs) file: frame i at ``BASE_S + i`` seconds, full length stored."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        fh.writelines(struct.pack("<IIII", BASE_S + i, 0, len(fr), len(fr)) + fr
                      for i, fr in enumerate(frames))


def tcpdump_matches(path: Path, expression: str) -> list[int]:
    """Indices of the frames of ``path`` that ``tcpdump -r`` prints for ``expression``."""
    tcpdump = shutil.which("tcpdump")
    assert tcpdump, "tcpdump is needed as the oracle (apt-get install tcpdump)"
    out = subprocess.run([tcpdump, "-r", str(path), "-tt", "-n", expression],
                         capture_output=True, text=True, check=True).stdout
    return [int(line.split(".", 1)[0]) - BASE_S for line in out.splitlines()
            if line and line[0].isdigit()]
