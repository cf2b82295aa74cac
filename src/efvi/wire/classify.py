"""Batch frame classification: N frames in, one numpy column per header field out.

The software NIC applies its filter table with :func:`classify`, the capture and
replay tools use it to summarise files, and :func:`classify_one` is its scalar twin
(same rules, written independently with :mod:`struct`) used for single frames and as
the oracle of the property test that proves the two agree on every frame.

Rules (identical in both paths)
===============================

* Only the first ``min(lengths[i], S)`` bytes of row ``i`` are read.
* Ethernet II needs 14 bytes. Up to two VLAN tags (TPID 0x8100, 0x88a8 or 0x9100)
  are taken off; ``ethertype`` is what follows them. A third tag is left in place
  (``ethertype`` is then a TPID and the frame is not IP).
* IPv4 needs a 20-byte header with version 4, IHL >= 5 and the options inside the
  frame. The IP datagram ends at ``min(frame length, l3 + total_length)``; a
  total length smaller than the header is a bad header (``valid=False``, no L4).
  ``is_fragment`` is MF or a non-zero offset; a non-first fragment has no L4 header.
* IPv6 needs 40 bytes with version 6; it ends at ``min(frame length, l3 + 40 +
  payload_length)`` (payload length 0, a jumbogram, means "the frame length"). Hop-by-
  hop, routing, destination options, AH and fragment headers are walked (at most
  :data:`~efvi.wire.constants.IPV6_MAX_EXT_HEADERS`); each must lie inside the
  datagram or the frame is ``valid=False`` with ``proto=0``.
* L4 headers: UDP (8 bytes), TCP (data offset >= 20 bytes), ICMP over IPv4 and
  ICMPv6 over IPv6 (8 bytes). The header must lie inside the datagram; otherwise it is
  absent and ``valid=False``. ARP frames need their 28-byte body.
* A field that is not present is 0 (addresses, ports, protocol, ethertype) or -1
  (VLAN ids, offsets). Nothing here raises on frame contents.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from efvi.wire.constants import (
    ETH_HLEN,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_AH,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_MAX_EXT_HEADERS,
    VLAN_TPIDS,
)

__all__ = ["FrameColumns", "FrameInfo", "classify", "classify_one"]

_ARP_LEN = 28
_ZERO16 = bytes(16)

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """The classification of one frame (the scalar twin of one row of FrameColumns).

    IPv6 addresses are 16-byte ``bytes``; every other field is an ``int``/``bool``
    with the same meaning and absent-value convention as the column of that name.
    """

    dst_mac: int
    src_mac: int
    vlan_outer: int
    vlan_inner: int
    ethertype: int
    ip_version: int
    proto: int
    src_ip4: int
    dst_ip4: int
    src_ip6: bytes
    dst_ip6: bytes
    src_port: int
    dst_port: int
    is_fragment: bool
    l3_offset: int
    l4_offset: int
    payload_offset: int
    valid: bool


@dataclass(frozen=True, slots=True)
class FrameColumns:
    """One row per frame; every attribute is a numpy array of length N.

    .. attribute:: dst_mac, src_mac
       uint64, the 48-bit MAC as an int in wire (big-endian) order.
    .. attribute:: vlan_outer, vlan_inner
       int32 VLAN id (12 bits) or -1.
    .. attribute:: ethertype
       uint16 after all VLAN tags, 0 when the frame is too short to say.
    .. attribute:: ip_version
       uint8 4, 6 or 0.
    .. attribute:: proto
       uint8 IPv4 protocol / IPv6 next header after the walked extension headers.
    .. attribute:: src_ip4, dst_ip4
       uint32 host-order value of the dotted quad (``10.0.0.1 -> 0x0a000001``).
    .. attribute:: src_ip6, dst_ip6
       (N, 16) uint8.
    .. attribute:: src_port, dst_port
       uint16, 0 without a UDP/TCP header.
    .. attribute:: is_fragment
       bool.
    .. attribute:: l3_offset, l4_offset, payload_offset
       int32 offsets of the IP header, the UDP/TCP/ICMP header and its payload; -1
       when absent (``l3_offset`` is set only for a well-formed IP header).
    .. attribute:: valid
       bool, every header the frame claims lies inside it.
    """

    dst_mac: npt.NDArray[np.uint64]
    src_mac: npt.NDArray[np.uint64]
    vlan_outer: npt.NDArray[np.int32]
    vlan_inner: npt.NDArray[np.int32]
    ethertype: npt.NDArray[np.uint16]
    ip_version: npt.NDArray[np.uint8]
    proto: npt.NDArray[np.uint8]
    src_ip4: npt.NDArray[np.uint32]
    dst_ip4: npt.NDArray[np.uint32]
    src_ip6: npt.NDArray[np.uint8]
    dst_ip6: npt.NDArray[np.uint8]
    src_port: npt.NDArray[np.uint16]
    dst_port: npt.NDArray[np.uint16]
    is_fragment: npt.NDArray[np.bool_]
    l3_offset: npt.NDArray[np.int32]
    l4_offset: npt.NDArray[np.int32]
    payload_offset: npt.NDArray[np.int32]
    valid: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def row(self, i: int) -> FrameInfo:
        """Row ``i`` as a :class:`FrameInfo` (allocates; for tests and slow paths)."""
        return FrameInfo(
            dst_mac=int(self.dst_mac[i]),
            src_mac=int(self.src_mac[i]),
            vlan_outer=int(self.vlan_outer[i]),
            vlan_inner=int(self.vlan_inner[i]),
            ethertype=int(self.ethertype[i]),
            ip_version=int(self.ip_version[i]),
            proto=int(self.proto[i]),
            src_ip4=int(self.src_ip4[i]),
            dst_ip4=int(self.dst_ip4[i]),
            src_ip6=bytes(self.src_ip6[i]),
            dst_ip6=bytes(self.dst_ip6[i]),
            src_port=int(self.src_port[i]),
            dst_port=int(self.dst_port[i]),
            is_fragment=bool(self.is_fragment[i]),
            l3_offset=int(self.l3_offset[i]),
            l4_offset=int(self.l4_offset[i]),
            payload_offset=int(self.payload_offset[i]),
            valid=bool(self.valid[i]),
        )


################################################################################
# Batch path
################################################################################


def classify(frames: npt.NDArray[np.uint8], lengths: npt.ArrayLike) -> FrameColumns:
    """Classify N frames at once.

    Args:
        frames: a 2-D ``uint8`` array (or view over packet buffers) of shape (N, S);
            row ``i`` holds frame ``i`` from column 0.
        lengths: N frame lengths; only ``min(lengths[i], S)`` bytes of a row are read.

    Cost: about forty vectorised gathers over N rows plus a few per IPv6 extension
    header walked; no Python work per frame, no per-frame objects. The result owns new
    arrays (no reference to ``frames`` is kept), so buffers may be reposted at once.
    Raises ``ValueError`` only for misuse (wrong dtype or shape), never for contents.
    """
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be a 2-D uint8 array, got {frames.dtype} {frames.shape}")
    n, s = frames.shape
    lens = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
    if lens.shape[0] != n:
        raise ValueError(f"lengths has {lens.shape[0]} entries for {n} frames")
    flen = np.clip(lens, 0, s)
    rows = np.arange(n)
    # One padded copy with every byte at or beyond a frame's length zeroed: then a
    # gather needs no per-call masking. The last column is always zero, so offset -1
    # (an absent header) reads the previous row's pad byte, i.e. 0 as well.
    sp = s + 1
    padded = np.zeros((n, sp), np.uint8)
    padded[:, :s] = frames
    if n and int(flen.min()) < s:
        padded[np.arange(sp) >= flen[:, None]] = 0
    flat = padded.reshape(-1)
    rowbase = rows * sp
    smax = sp - 1

    def byte(off: I64) -> I64:
        got: I64 = flat[rowbase + np.minimum(off, smax)].astype(np.int64)
        return got

    def be16(off: I64) -> I64:
        return (byte(off) << 8) | byte(off + 1)

    def be32(off: I64) -> I64:
        return (be16(off) << 16) | be16(off + 2)

    zero = np.zeros(n, np.int64)
    valid = flen >= ETH_HLEN
    has_eth = valid.copy()

    dst_mac = zero.copy()
    src_mac = zero.copy()
    for k in range(6):
        dst_mac = (dst_mac << 8) | byte(zero + k)
        src_mac = (src_mac << 8) | byte(zero + 6 + k)
    dst_mac[~has_eth] = 0
    src_mac[~has_eth] = 0

    # VLAN tags ---------------------------------------------------------------------
    tpids = np.array(sorted(VLAN_TPIDS), np.int64)
    et = np.where(has_eth, be16(zero + 12), 0)
    l3 = np.where(has_eth, ETH_HLEN, -1)
    vlan_outer = np.full(n, -1, np.int64)
    vlan_inner = np.full(n, -1, np.int64)
    for vlan in (vlan_outer, vlan_inner):
        tagged = has_eth & np.isin(et, tpids)
        fits = tagged & (l3 + 4 <= flen)
        bad = tagged & ~fits
        vlan[fits] = be16(l3)[fits] & 0x0FFF
        et = np.where(fits, be16(l3 + 2), et)
        l3 = np.where(fits, l3 + 4, l3)
        valid &= ~bad
        has_eth &= ~bad
        et[bad] = 0
    l3[~has_eth] = -1

    # ARP ---------------------------------------------------------------------------
    arp = has_eth & (et == ETH_P_ARP)
    valid &= ~(arp & (l3 + _ARP_LEN > flen))

    # IPv4 --------------------------------------------------------------------------
    is4 = has_eth & (et == ETH_P_IP)
    b0 = byte(l3)
    ihl = (b0 & 0x0F) * 4
    ok4 = is4 & (l3 + 20 <= flen) & ((b0 >> 4) == 4) & (ihl >= 20) & (l3 + ihl <= flen)
    valid &= ~(is4 & ~ok4)
    tot = be16(l3 + 2)
    frag = be16(l3 + 6)
    proto = np.where(ok4, byte(l3 + 9), 0)
    src_ip4 = np.where(ok4, be32(l3 + 12), 0)
    dst_ip4 = np.where(ok4, be32(l3 + 16), 0)
    frag4 = ok4 & ((frag & 0x3FFF) != 0)
    later4 = ok4 & ((frag & 0x1FFF) != 0)
    badlen4 = ok4 & (tot < ihl)
    valid &= ~badlen4
    end = np.where(ok4, np.minimum(flen, l3 + tot), 0)
    l4 = np.where(ok4 & ~later4 & ~badlen4, l3 + ihl, -1)

    # IPv6 --------------------------------------------------------------------------
    is6 = has_eth & (et == ETH_P_IPV6)
    ok6 = is6 & (l3 + 40 <= flen) & ((b0 >> 4) == 6)
    valid &= ~(is6 & ~ok6)
    plen = be16(l3 + 4)
    end = np.where(ok6, np.where(plen == 0, flen, np.minimum(flen, l3 + 40 + plen)), end)
    nh = np.where(ok6, byte(l3 + 6), 0)
    cur = np.where(ok6, l3 + 40, -1)
    walking = ok6.copy()
    frag6 = np.zeros(n, np.bool_)
    ext = np.array(
        [IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS],
        np.int64,
    )
    for _ in range(IPV6_MAX_EXT_HEADERS):
        step = walking & np.isin(nh, ext)
        if not step.any():
            break
        is_frag = nh == IPPROTO_FRAGMENT
        hlen = np.where(
            is_frag, 8, np.where(nh == IPPROTO_AH, (byte(cur + 1) + 2) * 4, (byte(cur + 1) + 1) * 8)
        )
        trunc = step & ((cur + 8 > end) | (cur + hlen > end))
        valid &= ~trunc
        nxt = byte(cur)
        fstep = step & ~trunc & is_frag
        frag6 |= fstep
        later = fstep & ((be16(cur + 2) >> 3) != 0)
        good = step & ~trunc
        nh = np.where(trunc, 0, np.where(good, nxt, nh))
        cur = np.where(good & ~later, cur + hlen, np.where(step, -1, cur))
        walking &= ~trunc & ~later
    walking &= ~np.isin(nh, ext)  # chain longer than the walk limit: no L4
    proto = np.where(ok6, nh, proto)
    l4 = np.where(ok6, np.where(walking, cur, -1), l4)

    # L4 ------------------------------------------------------------------------------
    ip = ok4 | ok6
    has_l4 = l4 >= 0
    udp = has_l4 & (proto == IPPROTO_UDP)
    tcp = has_l4 & (proto == IPPROTO_TCP)
    icmp = has_l4 & ((ok4 & (proto == IPPROTO_ICMP)) | (ok6 & (proto == IPPROTO_ICMPV6)))
    doff = (byte(l4 + 12) >> 4) * 4
    hl4 = np.where(tcp, doff, 8)
    fit4 = (l4 + 8 <= end) & (l4 + hl4 <= end) & (hl4 >= 8) & ~(tcp & (doff < 20))
    known = udp | tcp | icmp
    ok_l4 = known & fit4
    valid &= ~(known & ~fit4)
    ported = ok_l4 & (udp | tcp)
    src_port = np.where(ported, be16(l4), 0)
    dst_port = np.where(ported, be16(l4 + 2), 0)
    l4_offset = np.where(ok_l4, l4, -1)
    payload_offset = np.where(ok_l4, l4 + hl4, -1)

    # IPv6 addresses ----------------------------------------------------------------
    src_ip6 = np.zeros((n, 16), np.uint8)
    dst_ip6 = np.zeros((n, 16), np.uint8)
    if ok6.any():
        r6 = rows[ok6][:, None]
        base = l3[ok6][:, None] + np.arange(16)
        src_ip6[ok6] = padded[r6, base + 8]
        dst_ip6[ok6] = padded[r6, base + 24]

    return FrameColumns(
        dst_mac=dst_mac.astype(np.uint64),
        src_mac=src_mac.astype(np.uint64),
        vlan_outer=vlan_outer.astype(np.int32),
        vlan_inner=vlan_inner.astype(np.int32),
        ethertype=et.astype(np.uint16),
        ip_version=np.where(ok4, 4, np.where(ok6, 6, 0)).astype(np.uint8),
        proto=np.where(ip, proto, 0).astype(np.uint8),
        src_ip4=src_ip4.astype(np.uint32),
        dst_ip4=dst_ip4.astype(np.uint32),
        src_ip6=src_ip6,
        dst_ip6=dst_ip6,
        src_port=src_port.astype(np.uint16),
        dst_port=dst_port.astype(np.uint16),
        is_fragment=frag4 | frag6,
        l3_offset=np.where(ip, l3, -1).astype(np.int32),
        l4_offset=l4_offset.astype(np.int32),
        payload_offset=payload_offset.astype(np.int32),
        valid=valid,
    )


################################################################################
# Scalar path (written independently: it is the oracle of the property test)
################################################################################

_U16 = struct.Struct("!H")
_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_EXT_HEADERS = frozenset(
    {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS}
)


def classify_one(frame: bytes | bytearray | memoryview) -> FrameInfo:
    """Classify one frame with the rules of :func:`classify`.

    Cost: a handful of ``struct.unpack_from`` calls and one small object; never raises
    for frame contents.
    """
    b = memoryview(frame).cast("B") if isinstance(frame, memoryview) else frame
    n = len(b)
    dst_mac = src_mac = 0
    vlans = [-1, -1]
    ethertype = 0
    ip_version = proto = src4 = dst4 = sport = dport = 0
    src6 = dst6 = _ZERO16
    frag = False
    l3_off = l4_off = pay_off = -1
    valid = True

    def result() -> FrameInfo:
        return FrameInfo(dst_mac, src_mac, vlans[0], vlans[1], ethertype, ip_version,
                         proto, src4, dst4, src6, dst6, sport, dport, frag,
                         l3_off, l4_off, pay_off, valid)

    if n < ETH_HLEN:
        valid = False
        return result()
    d, s, ethertype = _ETH.unpack_from(b, 0)
    dst_mac = int.from_bytes(d, "big")
    src_mac = int.from_bytes(s, "big")
    off = ETH_HLEN
    for k in range(2):
        if ethertype not in VLAN_TPIDS:
            break
        if off + 4 > n:
            valid = False
            ethertype = 0
            return result()
        tci, ethertype = _PORTS.unpack_from(b, off)
        vlans[k] = tci & 0x0FFF
        off += 4

    if ethertype == ETH_P_ARP:
        valid = off + _ARP_LEN <= n
        return result()

    l4 = -1
    if ethertype == ETH_P_IP:
        if off + 20 > n:
            valid = False
            return result()
        vihl, _tos, tot, _id, fragword, _ttl, p, _ck, s4, d4 = _IP4.unpack_from(b, off)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or off + ihl > n:
            valid = False
            return result()
        ip_version, proto, l3_off = 4, p, off
        src4 = int.from_bytes(s4, "big")
        dst4 = int.from_bytes(d4, "big")
        frag = (fragword & 0x3FFF) != 0
        if tot < ihl:
            valid = False
            return result()
        end = min(n, off + tot)
        if fragword & 0x1FFF:
            return result()
        l4 = off + ihl
    elif ethertype == ETH_P_IPV6:
        if off + 40 > n:
            valid = False
            return result()
        vtcfl, plen, nh, _hlim, src6, dst6 = _IP6.unpack_from(b, off)
        if vtcfl >> 28 != 6:
            valid = False
            src6 = dst6 = _ZERO16
            return result()
        ip_version, l3_off = 6, off
        src6, dst6 = bytes(src6), bytes(dst6)
        end = n if plen == 0 else min(n, off + 40 + plen)
        cur = off + 40
        for _ in range(IPV6_MAX_EXT_HEADERS):
            if nh not in _EXT_HEADERS:
                break
            if nh == IPPROTO_FRAGMENT:
                hlen = 8
            elif nh == IPPROTO_AH:
                hlen = (b[cur + 1] + 2) * 4 if cur + 2 <= n else 8
            else:
                hlen = (b[cur + 1] + 1) * 8 if cur + 2 <= n else 8
            if cur + 8 > end or cur + hlen > end:
                valid = False
                proto = 0
                return result()
            if nh == IPPROTO_FRAGMENT:
                frag = True
                nh = b[cur]
                if _U16.unpack_from(b, cur + 2)[0] >> 3:
                    proto = nh
                    return result()
            else:
                nh = b[cur]
            cur += hlen
        proto = nh
        if nh in _EXT_HEADERS:
            return result()
        l4 = cur
    else:
        return result()

    if proto == IPPROTO_TCP:
        if l4 + 20 > end:
            valid = False
            return result()
        hl4 = (b[l4 + 12] >> 4) * 4
        if hl4 < 20 or l4 + hl4 > end:
            valid = False
            return result()
    elif proto == IPPROTO_UDP or (proto == IPPROTO_ICMP and ip_version == 4) or (
        proto == IPPROTO_ICMPV6 and ip_version == 6
    ):
        hl4 = 8
        if l4 + 8 > end:
            valid = False
            return result()
    else:
        return result()
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        sport, dport = _PORTS.unpack_from(b, l4)
    l4_off, pay_off = l4, l4 + hl4
    return result()
