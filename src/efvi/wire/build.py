"""Frame builders: whole Ethernet/IP/UDP (and ICMP echo) frames with correct checksums.

Addresses may be given in any form :mod:`efvi.wire.address` accepts; the IP version
follows the address length (both addresses must agree). The kernel drops frames with
a bad IPv4 header checksum or a bad UDP checksum, so both are always computed (over
IPv6 the UDP checksum is mandatory).

:class:`UdpFrameBuilder` is the data-path form: addresses, ports and tags are fixed at
construction (control path), and :meth:`UdpFrameBuilder.build_into` writes a frame
into a caller's buffer (e.g. a registered memory region) with two checksum
computations and no intermediate header objects.
"""

from __future__ import annotations

import struct

from efvi.wire.address import IpLike, MacLike, ip_bytes, mac_bytes
from efvi.wire.checksum import internet_checksum, ones_sum
from efvi.wire.checksum import pseudo_header_sum_v4, pseudo_header_sum_v6
from efvi.wire.constants import (
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_ZLEN,
    ICMP_ECHO,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
)
from efvi.wire.ethernet import Ethernet, VlanTag
from efvi.wire.icmp import Echo
from efvi.wire.ipv4 import IP_DF, IPv4
from efvi.wire.ipv6 import IPv6

__all__ = ["UdpFrameBuilder", "icmp_echo_frame", "ip_frame", "udp_frame"]

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6_HEAD = struct.Struct("!IHBB")
_UDP = struct.Struct("!HHHH")
_U16 = struct.Struct("!H")


def _addrs(src_ip: IpLike, dst_ip: IpLike) -> tuple[bytes, bytes]:
    s = ip_bytes(src_ip)
    d = ip_bytes(dst_ip, version=6 if len(s) == 16 else None)
    if len(s) != len(d):
        raise ValueError("source and destination addresses are of different IP versions")
    return s, d


def ip_frame(dst_mac: MacLike, src_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
             proto: int, l4: bytes, *, vlans: tuple[VlanTag, ...] = (), ttl: int = 64,
             tos: int = 0, ident: int = 0, df: bool = True, pad: bool = False) -> bytes:
    """Ethernet + IPv4/IPv6 header (checksummed) + ``l4`` (already complete).

    ``pad`` pads the frame to 60 bytes (the Ethernet minimum without FCS), as a NIC
    would on transmit; the IP length fields still describe the datagram only.
    """
    s, d = _addrs(src_ip, dst_ip)
    if len(s) == 4:
        ip: bytes = IPv4(s, d, proto, 20 + len(l4), ttl, tos, ident,
                         IP_DF if df else 0).pack()
        et = ETH_P_IP
    else:
        ip = IPv6(s, d, proto, len(l4), ttl, tos).pack()
        et = ETH_P_IPV6
    frame = Ethernet(mac_bytes(dst_mac), mac_bytes(src_mac), et, vlans).pack() + ip + l4
    if pad and len(frame) < ETH_ZLEN:
        frame += bytes(ETH_ZLEN - len(frame))
    return frame


def udp_frame(dst_mac: MacLike, src_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
              sport: int, dport: int, payload: bytes = b"", *,
              vlans: tuple[VlanTag, ...] = (), ttl: int = 64, tos: int = 0,
              ident: int = 0, df: bool = True, pad: bool = False) -> bytes:
    """A complete Ethernet/IPv4-or-IPv6/UDP frame with correct checksums."""
    b = UdpFrameBuilder(dst_mac, src_mac, src_ip, dst_ip, sport, dport, vlans=vlans,
                        ttl=ttl, tos=tos, df=df)
    frame = b.build(payload, ident=ident)
    if pad and len(frame) < ETH_ZLEN:
        frame += bytes(ETH_ZLEN - len(frame))
    return frame


def icmp_echo_frame(dst_mac: MacLike, src_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
                    ident: int, seq: int, data: bytes = b"", *, reply: bool = False,
                    vlans: tuple[VlanTag, ...] = (), ttl: int = 64) -> bytes:
    """An ICMP (IPv4) or ICMPv6 echo request (or reply) frame with correct checksums."""
    s, d = _addrs(src_ip, dst_ip)
    if len(s) == 4:
        msg = Echo(ICMP_ECHO - (8 if reply else 0), 0, ident, seq, data).pack_v4()
        proto = IPPROTO_ICMP
    else:
        msg = Echo(ICMPV6_ECHO_REQUEST + int(reply), 0, ident, seq, data).pack_v6(s, d)
        proto = IPPROTO_ICMPV6
    return ip_frame(dst_mac, src_mac, s, d, proto, msg, vlans=vlans, ttl=ttl)


class UdpFrameBuilder:
    """Builds frames of one UDP flow quickly (the send path's template).

    Construction (control path) packs the Ethernet header and precomputes the
    constant parts of the IPv4 header sum and the UDP pseudo-header sum. Each
    :meth:`build_into` then costs one ``int.from_bytes`` over the payload (the UDP
    checksum), one over the 20-byte IPv4 header, three ``pack_into`` calls and a slice
    copy. Not thread-safe only in the sense that it holds no mutable state: it holds
    none, so it may be shared.
    """

    __slots__ = ("_eth", "_src", "_dst", "_v6", "sport", "dport", "_ttl", "_tos", "_df",
                 "_pseudo_const", "header_len")

    def __init__(self, dst_mac: MacLike, src_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
                 sport: int, dport: int, *, vlans: tuple[VlanTag, ...] = (), ttl: int = 64,
                 tos: int = 0, df: bool = True) -> None:
        self._src, self._dst = _addrs(src_ip, dst_ip)
        self._v6 = len(self._src) == 16
        et = ETH_P_IPV6 if self._v6 else ETH_P_IP
        self._eth = Ethernet(mac_bytes(dst_mac), mac_bytes(src_mac), et, vlans).pack()
        self.sport, self.dport = sport, dport
        self._ttl, self._tos, self._df = ttl, tos, df
        # Pseudo-header without the length (added per frame) + the two ports.
        pseudo = (pseudo_header_sum_v6(self._src, self._dst, IPPROTO_UDP, 0) if self._v6
                  else pseudo_header_sum_v4(self._src, self._dst, IPPROTO_UDP, 0))
        self._pseudo_const = ones_sum(_U16.pack(sport) + _U16.pack(dport), pseudo)
        self.header_len = len(self._eth) + (40 if self._v6 else 20) + 8

    def frame_len(self, payload_len: int) -> int:
        """Length of the frame carrying ``payload_len`` bytes (no padding)."""
        return self.header_len + payload_len

    def build_into(self, buf: bytearray | memoryview, offset: int, payload: bytes
                   | bytearray | memoryview, *, ident: int = 0) -> int:
        """Write the frame at ``buf[offset:]`` and return its length.

        ``buf`` must have room for :meth:`frame_len` bytes (IndexError/struct.error
        otherwise: a programming error, not a per-packet condition).
        """
        n = len(payload)
        ulen = 8 + n
        eth = self._eth
        pos = offset + len(eth)
        buf[offset:pos] = eth
        if self._v6:
            _IP6_HEAD.pack_into(buf, pos, 6 << 28 | (self._tos & 0xFF) << 20, ulen,
                                IPPROTO_UDP, self._ttl)
            buf[pos + 8:pos + 24] = self._src
            buf[pos + 24:pos + 40] = self._dst
            u = pos + 40
        else:
            _IP4.pack_into(buf, pos, 0x45, self._tos, 20 + ulen, ident & 0xFFFF,
                           IP_DF << 13 if self._df else 0, self._ttl, IPPROTO_UDP, 0,
                           self._src, self._dst)
            ck = internet_checksum(memoryview(buf)[pos:pos + 20])
            _U16.pack_into(buf, pos + 10, ck)
            u = pos + 20
        # UDP length appears twice in the sum: in the pseudo-header and the header.
        s = ones_sum(payload, (self._pseudo_const + ulen + ulen))
        ck = ~s & 0xFFFF or 0xFFFF
        _UDP.pack_into(buf, u, self.sport, self.dport, ulen, ck)
        buf[u + 8:u + 8 + n] = payload
        return self.header_len + n

    def build(self, payload: bytes | bytearray | memoryview = b"", *, ident: int = 0) -> bytes:
        """The frame as new ``bytes`` (allocates; see :meth:`build_into`)."""
        out = bytearray(self.header_len + len(payload))
        self.build_into(out, 0, payload, ident=ident)
        return bytes(out)
