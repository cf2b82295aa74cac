"""TCP header (RFC 9293): ``sport dport seq ack off/flags window checksum urgent``
followed by options up to ``data_offset * 4`` bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.errors import FormatError
from efvi.wire._buf import Buffer, need

__all__ = ["TCP", "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK", "TCP_URG"]

_TCP = struct.Struct("!HHIIHHHH")
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


@dataclass(frozen=True, slots=True)
class TCP:
    """A TCP header; ``flags`` holds the 9 flag bits (NS..FIN)."""

    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 65535
    checksum: int = 0
    urgent: int = 0
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> TCP:
        """Parse at ``offset``; FormatError when short or the data offset is < 5."""
        need(buf, offset, 20, "TCP header")
        sport, dport, seq, ack, offflags, win, ck, urg = _TCP.unpack_from(buf, offset)
        hlen = (offflags >> 12) * 4
        if hlen < 20:
            raise FormatError(f"TCP data offset {hlen // 4} < 5", offset=offset + 12)
        need(buf, offset, hlen, "TCP options")
        return cls(sport, dport, seq, ack, offflags & 0x1FF, win, ck, urg,
                   bytes(buf[offset + 20:offset + hlen]))

    def pack(self) -> bytes:
        """Header bytes as given (options padded to 4 bytes; checksum as stored)."""
        opts = self.options + bytes(-len(self.options) % 4)
        off = (20 + len(opts)) // 4
        return _TCP.pack(self.sport, self.dport, self.seq, self.ack,
                         off << 12 | (self.flags & 0x1FF), self.window, self.checksum,
                         self.urgent) + opts
