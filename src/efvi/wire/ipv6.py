"""IPv6 header (RFC 8200) and the walk over its common extension headers.

Fixed header: ``ver/tc/flow(4) payload_length(2) next_header(1) hop_limit(1) src(16)
dst(16)``. Hop-by-hop (0), routing (43), destination options (60) have a length byte
in 8-octet units not counting the first 8; AH (51) in 4-octet units minus 2 (RFC
4302); the fragment header (44) is always 8 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.errors import FormatError
from efvi.wire._buf import Buffer, need
from efvi.wire.constants import (
    IPPROTO_AH,
    IPPROTO_FRAGMENT,
    IPV6_EXT_HEADERS,
    IPV6_MAX_EXT_HEADERS,
)

__all__ = ["ExtHeader", "Fragment", "IPv6", "IPv6Chain"]

_IP6 = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BxHI")


@dataclass(frozen=True, slots=True)
class IPv6:
    """The 40-byte fixed IPv6 header."""

    src: bytes
    dst: bytes
    next_header: int
    payload_length: int = 0
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0

    header_len = 40

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> IPv6:
        """Parse at ``offset``; FormatError when short or the version is not 6."""
        need(buf, offset, 40, "IPv6 header")
        vtf, plen, nh, hlim, src, dst = _IP6.unpack_from(buf, offset)
        if vtf >> 28 != 6:
            raise FormatError(f"IPv6 header with version {vtf >> 28}", offset=offset)
        return cls(bytes(src), bytes(dst), nh, plen, hlim, (vtf >> 20) & 0xFF, vtf & 0xFFFFF)

    def pack(self) -> bytes:
        vtf = 6 << 28 | (self.traffic_class & 0xFF) << 20 | (self.flow_label & 0xFFFFF)
        return _IP6.pack(vtf, self.payload_length, self.next_header, self.hop_limit,
                         self.src, self.dst)


@dataclass(frozen=True, slots=True)
class ExtHeader:
    """One walked extension header: its type, offset in the buffer and length."""

    kind: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Fragment:
    """The fragment header's fields: offset in 8-byte units, M flag, identification."""

    offset: int
    more: bool
    ident: int


@dataclass(frozen=True, slots=True)
class IPv6Chain:
    """Result of :meth:`IPv6Chain.walk`.

    ``proto`` is the next header after the walked extension headers; ``l4_offset`` is
    where that header starts, or -1 when it cannot be reached (a non-first fragment,
    ESP, or a chain longer than the walk limit).
    """

    header: IPv6
    extensions: tuple[ExtHeader, ...]
    proto: int
    l4_offset: int
    end: int
    fragment: Fragment | None

    @classmethod
    def walk(cls, buf: Buffer, offset: int = 0) -> IPv6Chain:
        """Parse the fixed header at ``offset`` and walk the extension headers.

        The datagram ends at ``offset + 40 + payload_length`` (or the buffer end for a
        jumbogram or a truncated capture). FormatError (with the offset of the
        extension header) when an extension header runs past that end.
        """
        hdr = IPv6.parse(buf, offset)
        end = len(buf) if hdr.payload_length == 0 else min(
            len(buf), offset + 40 + hdr.payload_length)
        nh = hdr.next_header
        cur = offset + 40
        exts: list[ExtHeader] = []
        frag: Fragment | None = None
        for _ in range(IPV6_MAX_EXT_HEADERS):
            if nh not in IPV6_EXT_HEADERS:
                break
            if cur + 8 > end:
                raise FormatError(f"IPv6 extension header {nh} truncated", offset=cur)
            if nh == IPPROTO_FRAGMENT:
                hlen = 8
            elif nh == IPPROTO_AH:
                hlen = (buf[cur + 1] + 2) * 4
            else:
                hlen = (buf[cur + 1] + 1) * 8
            if cur + hlen > end:
                raise FormatError(f"IPv6 extension header {nh} of {hlen} bytes truncated",
                                  offset=cur)
            exts.append(ExtHeader(nh, cur, hlen))
            if nh == IPPROTO_FRAGMENT:
                nxt, offm, ident = _FRAG.unpack_from(buf, cur)
                frag = Fragment(offm >> 3, bool(offm & 1), ident)
                if frag.offset:
                    return cls(hdr, tuple(exts), nxt, -1, end, frag)
                nh = nxt
            else:
                nh = buf[cur]
            cur += hlen
        l4 = -1 if nh in IPV6_EXT_HEADERS else cur
        return cls(hdr, tuple(exts), nh, l4, end, frag)


def fragment_header(next_header: int, offset: int, more: bool, ident: int) -> bytes:
    """An 8-byte IPv6 fragment header (offset in 8-byte units)."""
    return _FRAG.pack(next_header, (offset << 3) | int(more), ident)
