"""Ethernet II with 802.1Q / 802.1ad (QinQ) tags.

Layouts: ``dst(6) src(6) type(2)``; each tag is ``TPID(2) TCI(2)`` with
``TCI = PCP(3) DEI(1) VID(12)``, inserted before the final ethertype.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from efvi.wire._buf import Buffer, need
from efvi.wire.constants import ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, VLAN_TPIDS

__all__ = ["Ethernet", "VlanTag"]

_ETH = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class VlanTag:
    """One 802.1Q tag. ``tpid`` is 0x8100 (C-tag) or 0x88a8 (S-tag, the QinQ outer)."""

    vid: int
    pcp: int = 0
    dei: int = 0
    tpid: int = ETH_P_8021Q

    def __post_init__(self) -> None:
        if not (isinstance(self.vid, int) and 0 <= self.vid <= 0x0FFF):
            raise ValueError(f"VlanTag vid {self.vid!r} outside 0..4095 (the fields are "
                             "VlanTag(vid, pcp=0..7, dei=0|1, tpid=0x8100|0x88a8); build one "
                             "from a TPID and TCI with VlanTag.from_tci(tpid, tci))")
        if not (isinstance(self.pcp, int) and 0 <= self.pcp <= 7):
            raise ValueError(f"VlanTag pcp {self.pcp!r} outside 0..7")
        if self.dei not in (0, 1):
            raise ValueError(f"VlanTag dei {self.dei!r} must be 0 or 1")
        if self.tpid not in VLAN_TPIDS:
            raise ValueError(f"VlanTag tpid {self.tpid!r} is not a VLAN TPID; use "
                             + " or ".join(f"{t:#06x}" for t in sorted(VLAN_TPIDS)))

    @property
    def tci(self) -> int:
        return (self.pcp & 7) << 13 | (self.dei & 1) << 12 | (self.vid & 0x0FFF)

    @classmethod
    def from_tci(cls, tpid: int, tci: int) -> VlanTag:
        return cls(vid=tci & 0x0FFF, pcp=tci >> 13, dei=(tci >> 12) & 1, tpid=tpid)


@dataclass(frozen=True, slots=True)
class Ethernet:
    """An Ethernet II header; ``vlans`` lists tags outermost first.

    ``ethertype`` is the type after the tags (0x0800, 0x86dd, 0x0806, ...).
    """

    dst: bytes
    src: bytes
    ethertype: int
    vlans: tuple[VlanTag, ...] = ()

    @property
    def header_len(self) -> int:
        """Bytes from the start of the frame to the L3 header."""
        return ETH_HLEN + 4 * len(self.vlans)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, max_tags: int = 2) -> Ethernet:
        """Parse the header at ``offset``, taking off up to ``max_tags`` VLAN tags.

        Raises :class:`~efvi.errors.FormatError` (with the offset) when the frame is
        shorter than the header and tags it claims. Cost: one ``unpack_from`` per tag.
        """
        need(buf, offset, ETH_HLEN, "Ethernet header")
        dst, src, et = _ETH.unpack_from(buf, offset)
        tags: list[VlanTag] = []
        pos = offset + 12
        while et in VLAN_TPIDS and len(tags) < max_tags:
            need(buf, pos + 2, 4, "VLAN tag")
            tci, inner = _TAG.unpack_from(buf, pos + 2)
            tags.append(VlanTag.from_tci(et, tci))
            et = inner
            pos += 4
        return cls(bytes(dst), bytes(src), et, tuple(tags))

    def pack(self) -> bytes:
        """The header bytes (``header_len`` long)."""
        out = bytearray(self.dst + self.src)
        for tag in self.vlans:
            out += _TAG.pack(tag.tpid, tag.tci)
        out += self.ethertype.to_bytes(2, "big")
        return bytes(out)


def qinq(outer_vid: int, inner_vid: int) -> tuple[VlanTag, VlanTag]:
    """The tag pair of a QinQ frame: an 802.1ad S-tag then an 802.1Q C-tag."""
    return VlanTag(outer_vid, tpid=ETH_P_8021AD), VlanTag(inner_vid, tpid=ETH_P_8021Q)
