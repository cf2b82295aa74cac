"""Internet checksums (RFC 1071), pseudo-headers for UDP/TCP/ICMPv6, and RFC 1624
incremental updates.

The one's-complement sum of 16-bit big-endian words equals the data read as one big
integer modulo 0xFFFF (because 2**16 ≡ 1 mod 0xFFFF), with 0xFFFF standing for a
non-zero multiple. That lets :func:`ones_sum` run at ``int.from_bytes`` speed (a
single C call) instead of a Python loop over words.

Conventions: a *sum* is the folded 16-bit one's-complement sum (0..0xFFFF), a
*checksum* is its complement, the value stored in a header.
"""

from __future__ import annotations

import struct

__all__ = [
    "checksum_update16",
    "checksum_update",
    "internet_checksum",
    "l4_checksum",
    "ones_sum",
    "pseudo_header_sum_v4",
    "pseudo_header_sum_v6",
    "verify",
]

_PSEUDO4 = struct.Struct("!4s4sxBH")
_PSEUDO6 = struct.Struct("!16s16sI3xB")

Buffer = bytes | bytearray | memoryview


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """Folded one's-complement sum of ``data`` (odd length: padded with a zero byte).

    ``initial`` is a previous sum to continue from (e.g. a pseudo-header sum). Note that
    continuing only works when the previous block had an even length. Cost: one
    ``int.from_bytes`` and a modulo; no per-word Python work.
    """
    n = len(data)
    value = int.from_bytes(data, "big")
    if n & 1:
        value <<= 8
    total = initial + value
    if total == 0:
        return 0
    r = total % 0xFFFF
    return 0xFFFF if r == 0 else r


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """The RFC 1071 checksum of ``data``: the complement of :func:`ones_sum`."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: Buffer, initial: int = 0) -> bool:
    """True when ``data`` (its checksum field included) plus ``initial`` (a pseudo-header
    sum, or 0) sums to 0xFFFF, i.e. the stored checksum is right."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_header_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header (RFC 768/793): addresses, zero, protocol, length."""
    return ones_sum(_PSEUDO4.pack(src, dst, proto, length))


def pseudo_header_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length,
    three zero bytes, next header."""
    return ones_sum(_PSEUDO6.pack(src, dst, length, next_header))


def l4_checksum(src: bytes, dst: bytes, proto: int, segment: Buffer) -> int:
    """Checksum of a UDP/TCP/ICMPv6 ``segment`` (its checksum field zeroed) over IPv4
    (4-byte addresses) or IPv6 (16-byte addresses).

    For UDP the caller stores 0xFFFF when this returns 0 (RFC 768: zero means "no
    checksum"); :func:`efvi.wire.udp.udp_checksum` does that.
    """
    if len(src) == 4:
        pseudo = pseudo_header_sum_v4(src, dst, proto, len(segment))
    else:
        pseudo = pseudo_header_sum_v6(src, dst, proto, len(segment))
    return internet_checksum(segment, pseudo)


def checksum_update16(checksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum after one 16-bit word changes from ``old`` to
    ``new``: ``HC' = ~(~HC + ~m + m')``. Cost: a few integer operations."""
    s = (~checksum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def checksum_update(checksum: int, old: Buffer, new: Buffer) -> int:
    """RFC 1624 update for a rewritten field of even length at an even offset (an
    address, a port pair): ``old`` and ``new`` are the field's bytes before and after.
    """
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("old and new must be equal, even-length byte strings")
    s = (~checksum & 0xFFFF) + (~ones_sum(old) & 0xFFFF) + ones_sum(new)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
