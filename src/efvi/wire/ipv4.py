"""IPv4 header (RFC 791) with options and fragment fields.

Layout: ``ver/ihl(1) tos(1) total_length(2) ident(2) flags/frag(2) ttl(1) proto(1)
checksum(2) src(4) dst(4) options(ihl*4-20)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from efvi.errors import FormatError
from efvi.wire._buf import Buffer, need
from efvi.wire.checksum import internet_checksum, verify

__all__ = ["IPv4", "IP_DF", "IP_MF"]

_IP4 = struct.Struct("!BBHHHBBH4s4s")
IP_DF = 0x2  # flags field: don't fragment
IP_MF = 0x1  # flags field: more fragments


@dataclass(frozen=True, slots=True)
class IPv4:
    """An IPv4 header. ``frag_offset`` is in 8-byte units, ``flags`` the 3 high bits.

    ``checksum`` is what was on the wire when parsed; :meth:`pack` computes it.
    """

    src: bytes
    dst: bytes
    proto: int
    total_length: int = 20
    ttl: int = 64
    tos: int = 0
    ident: int = 0
    flags: int = 0
    frag_offset: int = 0
    checksum: int = 0
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)

    @property
    def is_fragment(self) -> bool:
        """MF set or a non-zero offset: this datagram is a piece of a larger one."""
        return bool(self.flags & IP_MF) or self.frag_offset != 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> IPv4:
        """Parse the header at ``offset``.

        FormatError (with the offset) when the buffer is shorter than the header or its
        options, when the version is not 4, when IHL < 5, or when the total length is
        smaller than the header. The checksum is not verified (see :meth:`checksum_ok`).
        """
        need(buf, offset, 20, "IPv4 header")
        vihl, tos, tot, ident, frag, ttl, proto, ck, src, dst = _IP4.unpack_from(buf, offset)
        if vihl >> 4 != 4:
            raise FormatError(f"IPv4 header with version {vihl >> 4}", offset=offset)
        hlen = (vihl & 0x0F) * 4
        if hlen < 20:
            raise FormatError(f"IPv4 IHL {hlen // 4} < 5", offset=offset)
        need(buf, offset, hlen, "IPv4 options")
        if tot < hlen:
            raise FormatError(f"IPv4 total length {tot} < header length {hlen}",
                              offset=offset + 2)
        return cls(bytes(src), bytes(dst), proto, tot, ttl, tos, ident, frag >> 13,
                   frag & 0x1FFF, ck, bytes(buf[offset + 20:offset + hlen]))

    @staticmethod
    def checksum_ok(buf: Buffer, offset: int = 0) -> bool:
        """True when the header checksum at ``offset`` is right (IHL taken from buf)."""
        need(buf, offset, 20, "IPv4 header")
        hlen = (buf[offset] & 0x0F) * 4
        need(buf, offset, hlen, "IPv4 options")
        return verify(buf[offset:offset + hlen])

    def pack(self) -> bytes:
        """Header bytes with a freshly computed checksum (options padded to 4 bytes)."""
        opts = self.options + bytes(-len(self.options) % 4)
        hlen = 20 + len(opts)
        head = _IP4.pack(0x40 | hlen // 4, self.tos, self.total_length, self.ident,
                         (self.flags & 7) << 13 | (self.frag_offset & 0x1FFF),
                         self.ttl, self.proto, 0, self.src, self.dst) + opts
        ck = internet_checksum(head)
        return head[:10] + ck.to_bytes(2, "big") + head[12:]

    def with_payload_length(self, n: int) -> IPv4:
        """A copy whose total length covers ``n`` payload bytes."""
        return replace(self, total_length=self.header_len + n)
