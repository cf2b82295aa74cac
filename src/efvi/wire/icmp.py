"""ICMP (RFC 792) and ICMPv6 (RFC 4443) echo: ``type code checksum ident seq data``.

The ICMPv4 checksum covers the ICMP message only; the ICMPv6 checksum includes the
IPv6 pseudo-header, so its builders take the addresses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.wire._buf import Buffer, need
from efvi.wire.checksum import internet_checksum, l4_checksum, verify
from efvi.wire.checksum import pseudo_header_sum_v6
from efvi.wire.constants import (
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_ICMPV6,
)

__all__ = ["Echo"]

_ECHO = struct.Struct("!BBHHH")


@dataclass(frozen=True, slots=True)
class Echo:
    """An ICMP or ICMPv6 echo request/reply (or any 8-byte-header ICMP message)."""

    type: int
    code: int
    ident: int
    seq: int
    data: bytes = b""
    checksum: int = 0

    header_len = 8

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, end: int | None = None) -> Echo:
        """Parse the message from ``offset`` to ``end`` (default: the buffer end)."""
        stop = len(buf) if end is None else end
        need(buf, offset, 8, "ICMP header")
        t, c, ck, ident, seq = _ECHO.unpack_from(buf, offset)
        return cls(t, c, ident, seq, bytes(buf[offset + 8:stop]), ck)

    @property
    def is_request(self) -> bool:
        return self.type in (ICMP_ECHO, ICMPV6_ECHO_REQUEST)

    def pack_v4(self) -> bytes:
        """The ICMPv4 message with its checksum computed."""
        body = _ECHO.pack(self.type, self.code, 0, self.ident, self.seq) + self.data
        ck = internet_checksum(body)
        return body[:2] + ck.to_bytes(2, "big") + body[4:]

    def pack_v6(self, src: bytes, dst: bytes) -> bytes:
        """The ICMPv6 message with its pseudo-header checksum computed."""
        body = _ECHO.pack(self.type, self.code, 0, self.ident, self.seq) + self.data
        ck = l4_checksum(src, dst, IPPROTO_ICMPV6, body)
        return body[:2] + ck.to_bytes(2, "big") + body[4:]

    def reply(self) -> Echo:
        """The echo reply answering this request (same ident, seq and data)."""
        t = ICMP_ECHOREPLY if self.type == ICMP_ECHO else ICMPV6_ECHO_REPLY
        return Echo(t, 0, self.ident, self.seq, self.data)

    @staticmethod
    def checksum_ok_v4(buf: Buffer, offset: int, end: int) -> bool:
        return verify(buf[offset:end])

    @staticmethod
    def checksum_ok_v6(buf: Buffer, offset: int, end: int, src: bytes, dst: bytes) -> bool:
        return verify(buf[offset:end],
                      pseudo_header_sum_v6(src, dst, IPPROTO_ICMPV6, end - offset))
