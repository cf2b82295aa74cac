"""The sans-I/O station of :mod:`efvi.apps.station`: one received frame and the time
in int ns in, the reply frame (or ``None``) and counters out.

:class:`Station` answers ARP requests, ICMP and ICMPv6 echo, neighbour solicitations
(NDP) and UDP echo for the addresses of a :class:`StationConfig`. It parses with
:mod:`efvi.wire` codecs and builds replies with correct checksums; it never raises for
a frame (malformed input is counted). Replies are rate limited per protocol class by
token buckets (:class:`TokenBucket`): a peer that floods ARP or ICMP gets at most
``rate_pps`` answers a second per class and the rest are counted as ``*_rate_drops``.
ARP and NDP conflicts — another MAC claiming the station's address — are counted and
the claimants listed (``conflicts``); the station keeps answering, as a host defending
its address does (RFC 5227 §2.4 (c)). No clock, no socket, no VI: tests feed frames.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from dataclasses import dataclass

from efvi.errors import FormatError, SetupError
from efvi.wire._buf import Buffer
from efvi.wire.arp import ARP, ARP_LEN
from efvi.wire.build import ip_frame
from efvi.wire.checksum import l4_checksum, verify
from efvi.wire.constants import (
    ARPOP_REPLY,
    ARPOP_REQUEST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_ZLEN,
    ICMP_ECHO,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
)
from efvi.wire.ethernet import Ethernet
from efvi.wire.icmp import Echo
from efvi.wire.ipv4 import IPv4
from efvi.wire.ipv6 import IPv6Chain
from efvi.wire.udp import UDP, udp_checksum

__all__ = ["COUNTERS", "Station", "StationConfig", "TokenBucket", "solicited_node"]

ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
BROADCAST = b"\xff" * 6
ALL_NODES6 = ipaddress.IPv6Address("ff02::1").packed

#: Every counter a :class:`Station` keeps, in the order reports list them.
COUNTERS: tuple[str, ...] = (
    "rx_frames", "arp_requests", "arp_replies_sent", "arp_gratuitous_sent", "arp_conflicts",
    "icmp_echo", "icmp6_echo", "ndp_solicits", "ndp_adverts_sent", "ndp_conflicts",
    "udp_echo", "tx_frames",
    "not_ours", "malformed_drops", "checksum_drops", "fragment_drops",
    "arp_rate_drops", "icmp_rate_drops", "udp_rate_drops", "tx_busy_drops", "tx_error_drops",
)

_NA = struct.Struct("!BBHI16s")


def solicited_node(addr6: bytes) -> bytes:
    """The solicited-node multicast address ``ff02::1:ffXX:XXXX`` of ``addr6``."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr6[13:]


def _mcast_mac6(addr6: bytes) -> bytes:
    return b"\x33\x33" + addr6[12:]


class TokenBucket:
    """``rate`` events a second with bursts of ``burst`` (times in int ns)."""

    __slots__ = ("burst", "last_ns", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ns: int | None = None

    def take(self, now_ns: int) -> bool:
        """True if one event may go now (and spend its token). Cost: a few float ops."""
        last = self.last_ns
        self.last_ns = now_ns
        if last is not None and now_ns > last:
            self.tokens = min(self.burst, self.tokens + (now_ns - last) * self.rate / 1e9)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class StationConfig:
    """What the station owns: a MAC, an IPv4 address (and prefix), optionally an IPv6
    address, the UDP ports it echoes, and its reply rate limit per protocol class."""

    mac: bytes
    ipv4: bytes | None = None
    prefix_len: int = 32
    ipv6: bytes | None = None
    udp_echo: tuple[int, ...] = ()
    rate_pps: int = 1000
    burst: int = 100

    @staticmethod
    def parse(mac: str | bytes, ip: str | None = None, ipv6: str | None = None,
              udp_echo: tuple[int, ...] = (), rate_pps: int = 1000) -> StationConfig:
        """Build from text (``--ip 198.18.0.10/24``); SetupError(EINVAL) on bad input."""
        from efvi.filters import parse_mac
        v4: bytes | None = None
        plen = 32
        if ip is not None:
            try:
                itf = ipaddress.ip_interface(ip)
            except ValueError as exc:
                raise SetupError(f"bad --ip {ip!r}: {exc}", errno=errno.EINVAL,
                                 hint="write ADDR or ADDR/LEN, e.g. 198.18.0.10/24") from None
            if itf.version != 4:
                raise SetupError(f"--ip {ip!r} is not IPv4", errno=errno.EINVAL,
                                 hint="give IPv6 addresses with --ipv6")
            v4, plen = itf.ip.packed, itf.network.prefixlen
        v6: bytes | None = None
        if ipv6 is not None:
            try:
                a6 = ipaddress.ip_interface(ipv6).ip
            except ValueError as exc:
                raise SetupError(f"bad --ipv6 {ipv6!r}: {exc}", errno=errno.EINVAL) from None
            if a6.version != 6 or a6.is_multicast:
                raise SetupError(f"--ipv6 {ipv6!r} is not a unicast IPv6 address",
                                 errno=errno.EINVAL)
            v6 = a6.packed
        if v4 is None and v6 is None:
            raise SetupError("a station needs an address", errno=errno.EINVAL,
                             hint="give --ip ADDR[/LEN] and/or --ipv6 ADDR")
        for p in udp_echo:
            if not 1 <= p <= 0xFFFF:
                raise SetupError(f"UDP echo port {p} out of range 1..65535", errno=errno.EINVAL)
        if rate_pps <= 0:
            raise SetupError(f"rate {rate_pps} must be positive", errno=errno.EINVAL)
        return StationConfig(parse_mac(mac), v4, plen, v6, tuple(sorted(set(udp_echo))),
                             rate_pps, max(1, min(rate_pps, 100)))


class Station:
    """The sans-I/O station: frames in, reply frames and counters out (see module doc)."""

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: (address, claimant MAC) pairs seen claiming the station's addresses
        self.conflicts: list[tuple[str, str]] = []
        self._buckets = {k: TokenBucket(cfg.rate_pps, cfg.burst) for k in ("arp", "icmp", "udp")}
        self._ports = frozenset(cfg.udp_echo)
        self._snm = solicited_node(cfg.ipv6) if cfg.ipv6 else b""

    # ---- frames the station sends on its own ------------------------------------------
    def gratuitous_arp(self) -> bytes:
        """An ARP request announcing the IPv4 address (sender = target = ours)."""
        ip = self.cfg.ipv4
        assert ip is not None
        self.counters["arp_gratuitous_sent"] += 1
        return _pad(Ethernet(BROADCAST, self.cfg.mac, ETH_P_ARP).pack()
                    + ARP.request(self.cfg.mac, ip, ip).pack())

    def unsolicited_na(self) -> bytes:
        """A neighbour advertisement of the IPv6 address to all nodes (RFC 4861 §7.2.6)."""
        ip6 = self.cfg.ipv6
        assert ip6 is not None
        self.counters["ndp_adverts_sent"] += 1
        return self._na(ALL_NODES6, _mcast_mac6(ALL_NODES6), NA_FLAG_OVERRIDE)

    # ---- the receive path -------------------------------------------------------------
    def handle(self, frame: Buffer, now_ns: int) -> bytes | None:
        """One received frame → the reply to send, or None. Never raises.

        Cost: one Ethernet parse and the protocol's parse; a reply costs one frame build
        (two checksums). Counts every frame in exactly one outcome counter.
        """
        c = self.counters
        c["rx_frames"] += 1
        try:
            eth = Ethernet.parse(frame)
            et = eth.ethertype
            off = eth.header_len
            if et == ETH_P_ARP and self.cfg.ipv4 is not None:
                return self._arp(eth, frame, off, now_ns)
            if et == ETH_P_IP and self.cfg.ipv4 is not None:
                return self._ip4(eth, frame, off, now_ns)
            if et == ETH_P_IPV6 and self.cfg.ipv6 is not None:
                return self._ip6(eth, frame, off, now_ns)
        except (FormatError, IndexError, ValueError, struct.error):
            c["malformed_drops"] += 1
            return None
        c["not_ours"] += 1
        return None

    def _allow(self, cls: str, now_ns: int) -> bool:
        if self._buckets[cls].take(now_ns):
            return True
        self.counters[f"{cls}_rate_drops"] += 1
        return False

    def _arp(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        if len(frame) < off + ARP_LEN:
            c["malformed_drops"] += 1
            return None
        arp = ARP.parse(frame, off)
        if arp.spa == cfg.ipv4 and arp.sha != cfg.mac:
            c["arp_conflicts"] += 1
            self._conflict(arp.spa, arp.sha)
        if arp.op != ARPOP_REQUEST or arp.tpa != cfg.ipv4:
            if arp.op not in (ARPOP_REQUEST, ARPOP_REPLY):
                c["malformed_drops"] += 1
            elif arp.spa != cfg.ipv4:
                c["not_ours"] += 1
            return None
        c["arp_requests"] += 1
        if arp.spa == cfg.ipv4 and arp.sha == cfg.mac:
            return None  # our own announcement looped back
        if not self._allow("arp", now_ns):
            return None
        c["arp_replies_sent"] += 1
        return _pad(Ethernet(eth.src, cfg.mac, ETH_P_ARP, eth.vlans).pack()
                    + arp.reply(cfg.mac).pack())

    def _ip4(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        ip = IPv4.parse(frame, off)
        if ip.dst != cfg.ipv4:
            c["not_ours"] += 1
            return None
        if not IPv4.checksum_ok(frame, off):
            c["checksum_drops"] += 1
            return None
        if ip.is_fragment:
            c["fragment_drops"] += 1
            return None
        l4 = off + ip.header_len
        end = min(len(frame), off + ip.total_length)
        if ip.proto == IPPROTO_ICMP:
            if end - l4 < 8 or frame[l4] != ICMP_ECHO:
                c["not_ours"] += 1
                return None
            if not verify(frame[l4:end]):
                c["checksum_drops"] += 1
                return None
            if not self._allow("icmp", now_ns):
                return None
            c["icmp_echo"] += 1
            msg = Echo.parse(frame, l4, end).reply().pack_v4()
            return _pad(ip_frame(eth.src, cfg.mac, cfg.ipv4, ip.src, IPPROTO_ICMP, msg,
                                 vlans=eth.vlans, df=False))
        if ip.proto == IPPROTO_UDP:
            return self._udp(eth, frame, l4, end, ip.src, now_ns)
        c["not_ours"] += 1
        return None

    def _udp(self, eth: Ethernet, frame: Buffer, l4: int, end: int, src: bytes,
             now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        mine = cfg.ipv4 if len(src) == 4 else cfg.ipv6
        assert mine is not None
        u = UDP.parse(frame, l4)
        if u.dport not in self._ports:
            c["not_ours"] += 1
            return None
        if l4 + u.length > end:
            c["malformed_drops"] += 1
            return None
        # the UDP checksum is not verified: a local sender's frame seen through a veth or
        # an AF_PACKET tap may still carry the partial (offload) checksum
        # (TP_STATUS_CSUMNOTREADY); the reply's checksum is computed afresh
        seg = frame[l4:l4 + u.length]
        if not self._allow("udp", now_ns):
            return None
        c["udp_echo"] += 1
        payload = bytes(seg[8:])
        hdr = UDP(u.dport, u.sport, u.length, 0).pack()
        ck = udp_checksum(mine, src, hdr + payload)
        l4b = UDP(u.dport, u.sport, u.length, ck).pack() + payload
        return _pad(ip_frame(eth.src, cfg.mac, mine, src, IPPROTO_UDP, l4b, vlans=eth.vlans,
                             df=False))

    def _ip6(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        assert cfg.ipv6 is not None
        ch = IPv6Chain.walk(frame, off)
        h = ch.header
        if h.dst != cfg.ipv6 and h.dst != self._snm and h.dst != ALL_NODES6:
            c["not_ours"] += 1
            return None
        if ch.fragment is not None:
            c["fragment_drops"] += 1
            return None
        l4, end = ch.l4_offset, ch.end
        if ch.proto == IPPROTO_ICMPV6 and l4 >= 0:
            if end - l4 < 8:
                c["malformed_drops"] += 1
                return None
            if not Echo.checksum_ok_v6(frame, l4, end, h.src, h.dst):
                c["checksum_drops"] += 1
                return None
            t = frame[l4]
            if t == ND_NEIGHBOR_SOLICIT:
                return self._ns(eth, frame, l4, end, h.src, h.hop_limit, now_ns)
            if t == ND_NEIGHBOR_ADVERT:
                if end - l4 >= 24 and bytes(frame[l4 + 8:l4 + 24]) == cfg.ipv6:
                    mac = _ll_option(frame, l4 + 24, end, ND_OPT_TARGET_LL) or eth.src
                    if mac != cfg.mac:
                        c["ndp_conflicts"] += 1
                        self._conflict(cfg.ipv6, mac)
                        return None
                c["not_ours"] += 1
                return None
            if t == ICMPV6_ECHO_REQUEST and h.dst == cfg.ipv6:
                if not self._allow("icmp", now_ns):
                    return None
                c["icmp6_echo"] += 1
                msg = Echo.parse(frame, l4, end).reply().pack_v6(cfg.ipv6, h.src)
                return _pad(ip_frame(eth.src, cfg.mac, cfg.ipv6, h.src, IPPROTO_ICMPV6, msg,
                                     vlans=eth.vlans))
        elif ch.proto == IPPROTO_UDP and l4 >= 0 and h.dst == cfg.ipv6:
            return self._udp(eth, frame, l4, end, h.src, now_ns)
        c["not_ours"] += 1
        return None

    def _ns(self, eth: Ethernet, frame: Buffer, l4: int, end: int, src: bytes,
            hop_limit: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        if end - l4 < 24 or hop_limit != 255:
            c["malformed_drops"] += 1  # RFC 4861 §7.1.1: hop limit 255, 24+ bytes
            return None
        if bytes(frame[l4 + 8:l4 + 24]) != cfg.ipv6:
            c["not_ours"] += 1
            return None
        c["ndp_solicits"] += 1
        if not self._allow("icmp", now_ns):
            return None
        c["ndp_adverts_sent"] += 1
        if src == bytes(16):  # duplicate address detection: answer all nodes
            if eth.src != cfg.mac:
                c["ndp_conflicts"] += 1
                self._conflict(cfg.ipv6 or b"", eth.src)
            return self._na(ALL_NODES6, _mcast_mac6(ALL_NODES6), NA_FLAG_OVERRIDE)
        dmac = _ll_option(frame, l4 + 24, end, ND_OPT_SOURCE_LL) or eth.src
        return self._na(src, dmac, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)

    def _na(self, dst: bytes, dmac: bytes, flags: int) -> bytes:
        cfg = self.cfg
        assert cfg.ipv6 is not None
        body = bytearray(_NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, cfg.ipv6))
        body += bytes([ND_OPT_TARGET_LL, 1]) + cfg.mac
        ck = l4_checksum(cfg.ipv6, dst, IPPROTO_ICMPV6, body)
        body[2:4] = ck.to_bytes(2, "big")
        return _pad(ip_frame(dmac, cfg.mac, cfg.ipv6, dst, IPPROTO_ICMPV6, bytes(body),
                             ttl=255))

    def _conflict(self, ip: bytes, mac: bytes) -> None:
        entry = (str(ipaddress.ip_address(bytes(ip))), ":".join(f"{b:02x}" for b in mac))
        if entry not in self.conflicts and len(self.conflicts) < 16:
            self.conflicts.append(entry)


def _pad(frame: bytes) -> bytes:
    return frame + bytes(ETH_ZLEN - len(frame)) if len(frame) < ETH_ZLEN else frame


def _ll_option(frame: Buffer, pos: int, end: int, want: int) -> bytes | None:
    """The link-layer address of the first ND option of type ``want`` in [pos, end)."""
    while pos + 8 <= end:
        t, ln = frame[pos], frame[pos + 1]
        if ln == 0:
            return None
        if t == want:
            return bytes(frame[pos + 2:pos + 8])
        pos += ln * 8
    return None
