"""Frame edits on the way out of :mod:`efvi.apps.replay` (``--fixcsum``): the IPv4
header checksum and the UDP/TCP checksum recomputed in place, after any VLAN tags.
Per-frame Python: only the ``--fixcsum`` path pays for it."""

from __future__ import annotations

from efvi.wire.checksum import internet_checksum, l4_checksum

__all__ = ["fix_checksums"]

_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


def _l3_offset(frame: bytes | bytearray) -> tuple[int, int]:
    """(offset of the L3 header, EtherType) after any VLAN tags."""
    off = 12
    while len(frame) >= off + 4 and int.from_bytes(frame[off:off + 2], "big") in _VLAN_TPIDS:
        off += 4
    if len(frame) < off + 2:
        return off + 2, -1
    return off + 2, int.from_bytes(frame[off:off + 2], "big")


def fix_checksums(frame: bytearray) -> bool:
    """Recompute the IPv4 header checksum and the UDP/TCP checksum of ``frame`` in place
    (IPv4, or IPv6 with UDP/TCP as the first next header; VLAN tags skipped;
    fragments other than a whole datagram keep their L4 checksum). Returns True when
    something was rewritten. Per-frame Python: the ``--fixcsum`` path only."""
    l3, etype = _l3_offset(frame)
    n = len(frame)
    if etype == 0x0800 and n >= l3 + 20:
        ihl = (frame[l3] & 0x0F) * 4
        if ihl < 20 or n < l3 + ihl:
            return False
        frame[l3 + 10:l3 + 12] = b"\0\0"
        frame[l3 + 10:l3 + 12] = internet_checksum(frame[l3:l3 + ihl]).to_bytes(2, "big")
        tot = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        end = min(n, l3 + tot)
        frag = int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF
        proto = frame[l3 + 9]
        if frag == 0:
            _fix_l4(frame, proto, l3 + ihl, end, bytes(frame[l3 + 12:l3 + 16]),
                    bytes(frame[l3 + 16:l3 + 20]))
        return True
    if etype == 0x86DD and n >= l3 + 40:
        plen = int.from_bytes(frame[l3 + 4:l3 + 6], "big")
        end = min(n, l3 + 40 + plen)
        return _fix_l4(frame, frame[l3 + 6], l3 + 40, end, bytes(frame[l3 + 8:l3 + 24]),
                       bytes(frame[l3 + 24:l3 + 40]))
    return False


def _fix_l4(frame: bytearray, proto: int, l4: int, end: int, src: bytes, dst: bytes) -> bool:
    if proto == 17 and end >= l4 + 8:
        at = l4 + 6
    elif proto == 6 and end >= l4 + 20:
        at = l4 + 16
    else:
        return False
    frame[at:at + 2] = b"\0\0"
    c = l4_checksum(src, dst, proto, frame[l4:end])
    if proto == 17 and c == 0:
        c = 0xFFFF
    frame[at:at + 2] = c.to_bytes(2, "big")
    return True
