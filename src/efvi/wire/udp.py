"""UDP header (RFC 768): ``sport(2) dport(2) length(2) checksum(2)``."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.errors import FormatError
from efvi.wire._buf import Buffer, need
from efvi.wire.checksum import l4_checksum
from efvi.wire.constants import IPPROTO_UDP

__all__ = ["UDP", "UDP_HLEN", "udp_checksum"]

_UDP = struct.Struct("!HHHH")
UDP_HLEN = 8


@dataclass(frozen=True, slots=True)
class UDP:
    """A UDP header. ``length`` covers header and payload."""

    sport: int
    dport: int
    length: int = UDP_HLEN
    checksum: int = 0

    header_len = UDP_HLEN

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> UDP:
        """Parse at ``offset``; FormatError when short or ``length`` < 8."""
        need(buf, offset, UDP_HLEN, "UDP header")
        sport, dport, length, ck = _UDP.unpack_from(buf, offset)
        if length < UDP_HLEN:
            raise FormatError(f"UDP length {length} < 8", offset=offset + 4)
        return cls(sport, dport, length, ck)

    def pack(self) -> bytes:
        return _UDP.pack(self.sport, self.dport, self.length, self.checksum)


def udp_checksum(src: bytes, dst: bytes, segment: Buffer) -> int:
    """The checksum to store in a UDP ``segment`` (header with checksum 0, plus
    payload) between ``src`` and ``dst`` (IPv4 or IPv6). A computed 0 is sent as
    0xFFFF (RFC 768); over IPv6 the checksum is mandatory (RFC 8200 §8.1)."""
    return l4_checksum(src, dst, IPPROTO_UDP, segment) or 0xFFFF
