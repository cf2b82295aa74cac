"""ARP for IPv4 over Ethernet (RFC 826): the 28-byte body after the Ethernet header."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.errors import FormatError
from efvi.wire._buf import Buffer, need
from efvi.wire.constants import ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, ETH_P_IP

__all__ = ["ARP", "ARP_LEN"]

_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_LEN = _ARP.size  # 28


@dataclass(frozen=True, slots=True)
class ARP:
    """An Ethernet/IPv4 ARP message; addresses are wire bytes (6 and 4)."""

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> ARP:
        """Parse at ``offset``; FormatError when short or not Ethernet/IPv4 ARP."""
        need(buf, offset, ARP_LEN, "ARP")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(buf, offset)
        if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4):
            raise FormatError(
                f"ARP for htype {htype} ptype {ptype:#06x} hlen {hlen} plen {plen} "
                "is not Ethernet/IPv4", offset=offset)
        return cls(op, bytes(sha), bytes(spa), bytes(tha), bytes(tpa))

    def pack(self) -> bytes:
        return _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, self.op, self.sha, self.spa,
                         self.tha, self.tpa)

    @classmethod
    def request(cls, sha: bytes, spa: bytes, tpa: bytes) -> ARP:
        """Who has ``tpa``? Tell ``spa`` (``tha`` zero)."""
        return cls(ARPOP_REQUEST, sha, spa, bytes(6), tpa)

    def reply(self, mac: bytes) -> ARP:
        """The answer to this request from the owner of ``tpa`` whose MAC is ``mac``."""
        return ARP(ARPOP_REPLY, mac, self.tpa, self.sha, self.spa)
