"""The filter-table XDP program and its map keys (sans-I/O: specs in, bytes out).

One program per interface. Its filter table lives in BPF maps, so adding or removing
a filter is a map update, never a reload:

* ``config`` (ARRAY, 1 × u64): a presence bitmask, bit ``2*kind + any_vlan``, so
  the program only looks up table kinds that hold entries (0 = no filters: pass all);
* ``ftable`` (HASH, :data:`KEY_SIZE`-byte key → u32 target): every steal filter;
* ``kmacs`` (HASH, 8-byte MAC key): MACs the kernel wants (own, broadcast,
  subscribed multicast) — what the *mismatch* filters must not take;
* ``xsks`` (XSKMAP): slot ``target * 64 + rx_queue`` → the AF_XDP socket of that
  target (a VI, or a VI set) bound to that queue. A frame is only ever redirected to
  a socket bound to the queue it arrived on (the kernel drops cross-queue redirects
  silently); an empty slot falls back to XDP_PASS.

The program parses Ethernet, up to two VLAN tags (0x8100/0x88a8), IPv4 (fragments
skip the IP levels), IPv6 (only when the next header is UDP/TCP: extension headers
and fragments skip the IP levels), UDP and TCP, then tries the table kinds in the
hardware's priority order (:data:`KIND_ORDER`), a VLAN-specific entry before a
VLAN-any one at each kind. The first hit redirects; nothing hit → XDP_PASS.

Before redirecting it stores an RX timestamp in 8 bytes of XDP metadata right before
the frame, which AF_XDP copies into the UMEM; user space reads it at ``desc.addr - 8``:

* ``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC ns, bit 63 clear) — the software stamp;
* in the *hardware-timestamp variant* (``build_program(rx_ts_kfunc=BTF id)``, loaded
  device-bound), the program first calls the metadata kfunc
  ``bpf_xdp_metadata_rx_timestamp(ctx, &ts)``; when it returns 0 with a non-zero
  ``ts`` it stores ``ts | HW_TS_FLAG`` (the NIC's clock in ns, bit 63 set), else the
  software stamp. Bit 63 is the per-frame flag telling user space which it is (no
  clock reaches 2**63 ns, year 2262).

Key layout (56 bytes, little-endian host, packet fields in network byte order)::

    0 kind u8 | 1 ipproto u8 | 2 vlan (BE vid, 0xffff = any) | 4 ethertype (BE)
    6 local port (BE) | 8 remote port (BE) | 10 ip version u8 | 11 pad
    12 dst MAC[6] | 18 pad[6] | 24 local IP[16] | 40 remote IP[16]
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from enum import IntEnum

from efvi.bpf.ebpf import (FP, HELPER_KTIME_GET_NS, HELPER_MAP_LOOKUP,
                                   HELPER_REDIRECT_MAP, HELPER_XDP_ADJUST_META, R0, R1, R2,
                                   R3, R4, R6, R7, R8, R9, XDP_MD_DATA, XDP_MD_DATA_END,
                                   XDP_MD_DATA_META, XDP_MD_RX_QUEUE_INDEX, XDP_PASS, Asm)
from efvi.bpf.translate import emit_cbpf
from efvi.errors import UnsupportedError
from efvi.filters import FilterKind, FilterSpec

KEY_SIZE = 56
MAX_QUEUES = 64  # slots per target in the XSKMAP
MAX_TARGETS = 64
XSKMAP_SIZE = MAX_QUEUES * MAX_TARGETS
FTABLE_SIZE = 4096
KMACS_SIZE = 512
REPORT_BASE = 16  # build_program(report_target=True): a hit returns this + target
META_LEN = 8  # bytes of XDP metadata (the timestamp) before each RX frame
HW_TS_FLAG = 1 << 63  # set in the metadata word when it holds a hardware stamp
RX_TS_KFUNC = "bpf_xdp_metadata_rx_timestamp"


class TableKind(IntEnum):
    """Table kinds in priority order (lower is tried first)."""

    FULL = 1
    LOCAL = 2
    MAC_ETYPE = 3
    MAC_PROTO = 4
    MAC = 5
    ETYPE = 6
    IPPROTO = 7
    UCAST_ALL = 8
    MCAST_ALL = 9
    UCAST_MIS = 10
    MCAST_MIS = 11


KIND_ORDER = tuple(TableKind)


def presence_bit(kind: TableKind, any_vlan: bool) -> int:
    return 1 << (2 * int(kind) + (1 if any_vlan else 0))


# ---- keys -------------------------------------------------------------------------------
_KEY = struct.Struct("<BB2s2s2s2sBx6s6x16s16s")
assert _KEY.size == KEY_SIZE


def _vlan_bytes(vid: int | None) -> bytes:
    return b"\xff\xff" if vid is None else struct.pack("!H", vid & 0x0FFF)


def pack_key(kind: TableKind, *, proto: int = 0, vlan: int | None = None,
             ethertype: int = 0, lport: int = 0, rport: int = 0, ipver: int = 0,
             mac: bytes = bytes(6), lip: bytes = b"", rip: bytes = b"") -> bytes:
    return _KEY.pack(int(kind), proto, _vlan_bytes(vlan), struct.pack("!H", ethertype),
                     struct.pack("!H", lport), struct.pack("!H", rport), ipver, mac,
                     lip.ljust(16, b"\0"), rip.ljust(16, b"\0"))


def spec_key(spec: FilterSpec) -> tuple[TableKind, bytes]:
    """(table kind, map key) of a steal filter spec; UnsupportedError for sniff kinds."""
    k = spec.kind
    v = spec.vlan_id
    if k == FilterKind.IP_FULL:
        return TableKind.FULL, pack_key(TableKind.FULL, proto=spec.proto, vlan=v,
                                        lport=spec.local_port, rport=spec.remote_port,
                                        ipver=spec.ip_version, lip=spec.local_ip,
                                        rip=spec.remote_ip)
    if k == FilterKind.IP_LOCAL:
        return TableKind.LOCAL, pack_key(TableKind.LOCAL, proto=spec.proto, vlan=v,
                                         lport=spec.local_port, ipver=spec.ip_version,
                                         lip=spec.local_ip)
    if k == FilterKind.ETH:
        if spec.ethertype is not None:
            return TableKind.MAC_ETYPE, pack_key(TableKind.MAC_ETYPE, vlan=v, mac=spec.mac,
                                                 ethertype=spec.ethertype)
        if spec.ipproto is not None:
            return TableKind.MAC_PROTO, pack_key(TableKind.MAC_PROTO, vlan=v, mac=spec.mac,
                                                 proto=spec.ipproto)
        return TableKind.MAC, pack_key(TableKind.MAC, vlan=v, mac=spec.mac)
    if k == FilterKind.ETHERTYPE:
        assert spec.ethertype is not None
        return TableKind.ETYPE, pack_key(TableKind.ETYPE, vlan=v, ethertype=spec.ethertype)
    if k == FilterKind.IPPROTO:
        assert spec.ipproto is not None
        return TableKind.IPPROTO, pack_key(TableKind.IPPROTO, vlan=v, proto=spec.ipproto)
    simple = {FilterKind.UNICAST_ALL: TableKind.UCAST_ALL,
              FilterKind.MULTICAST_ALL: TableKind.MCAST_ALL,
              FilterKind.UNICAST_MISMATCH: TableKind.UCAST_MIS,
              FilterKind.MULTICAST_MISMATCH: TableKind.MCAST_MIS}
    if k in simple:
        return simple[k], pack_key(simple[k], vlan=v)
    raise UnsupportedError(f"the xdp adapter cannot install filter {spec}: it steals "
                           "frames only; use the packet adapter to sniff")


def kmac_key(mac: bytes) -> bytes:
    return mac[:6] + b"\0\0"


def describe_key(key: bytes) -> str:
    """Human-readable key (for listings and error messages)."""
    kind, proto, vl, et, lp, rp, ipver, mac, lip, rip = _KEY.unpack(key)
    parts = [TableKind(kind).name.lower()]
    if vl != b"\xff\xff":
        parts.append(f"vid={struct.unpack('!H', vl)[0]}")
    if ipver:
        n = 4 if ipver == 4 else 16
        parts.append(f"{ipaddress.ip_address(lip[:n])}:{struct.unpack('!H', lp)[0]}")
        if any(rip):
            parts.append(f"from {ipaddress.ip_address(rip[:n])}:{struct.unpack('!H', rp)[0]}")
    if any(mac):
        parts.append(mac.hex(":"))
    return " ".join(parts)


# ---- the program ---------------------------------------------------------------------------
# stack layout (offsets from the frame pointer)
K = -56  # the lookup key, KEY_SIZE bytes
S_VLAN, S_ETYPE, S_LPORT, S_RPORT = -64, -62, -60, -58
S_TAGGED, S_IPOK, S_PROTO, S_IPVER, S_MCAST, S_HASPROTO = -72, -71, -70, -69, -68, -67
S_MAC = -80  # 6 bytes: u32 at -80, u16 at -76
S_LIP = -96  # 16 bytes
S_RIP = -112  # 16 bytes
S_ZERO = -120  # u32 0: the config map key
S_TS = -128  # u64: the kfunc's hardware timestamp
S_CBPF = -192  # 64 bytes: the scratch words M[0..15] of translated classic BPF filters

ETH_P_8021Q_RAW = 0x0081  # 0x8100 as a little-endian 16-bit load sees it
ETH_P_8021AD_RAW = 0xA888
ETH_P_IP_RAW = 0x0008
ETH_P_IPV6_RAW = 0xDD86
IP_FRAG_MASK_RAW = 0xFF3F  # MF | fragment offset, byte-swapped
VLAN_VID_MASK_RAW = 0xFF0F

# which key fields each table kind uses
_FIELDS: dict[TableKind, tuple[str, ...]] = {
    TableKind.FULL: ("proto", "ipver", "lport", "rport", "lip", "rip"),
    TableKind.LOCAL: ("proto", "ipver", "lport", "lip"),
    TableKind.MAC_ETYPE: ("mac", "etype"),
    TableKind.MAC_PROTO: ("mac", "proto"),
    TableKind.MAC: ("mac",),
    TableKind.ETYPE: ("etype",),
    TableKind.IPPROTO: ("proto",),
    TableKind.UCAST_ALL: (),
    TableKind.MCAST_ALL: (),
    TableKind.UCAST_MIS: (),
    TableKind.MCAST_MIS: (),
}
_COPY: dict[str, tuple[tuple[str, int, int], ...]] = {  # field -> (size, from, to)
    "proto": (("b", S_PROTO, K + 1),),
    "etype": (("h", S_ETYPE, K + 4),),
    "lport": (("h", S_LPORT, K + 6),),
    "rport": (("h", S_RPORT, K + 8),),
    "ipver": (("b", S_IPVER, K + 10),),
    "mac": (("w", S_MAC, K + 12), ("h", S_MAC + 4, K + 16)),
    "lip": (("dw", S_LIP, K + 24), ("dw", S_LIP + 8, K + 32)),
    "rip": (("dw", S_RIP, K + 40), ("dw", S_RIP + 8, K + 48)),
}


def _lookup(a: Asm, kind: TableKind, specific: bool) -> None:
    """Look ``kind`` up (VLAN-specific or VLAN-any); on a hit jump to ``hit``."""
    skip = a.fresh("skip")
    a.movr(R1, R9)
    a.and_(R1, presence_bit(kind, not specific))
    a.jif(R1, "==", 0, skip)
    if specific:
        a.ldx("b", R1, FP, S_TAGGED)
        a.jif(R1, "==", 0, skip)
    for i in range(KEY_SIZE // 8):
        a.st("dw", FP, K + 8 * i, 0)
    a.st("b", FP, K, int(kind))
    if specific:
        a.ldx("h", R1, FP, S_VLAN)
        a.stx("h", FP, K + 2, R1)
    else:
        a.st("h", FP, K + 2, 0xFFFF)
    for f in _FIELDS[kind]:
        for size, src, dst in _COPY[f]:
            a.ldx(size, R1, FP, src)
            a.stx(size, FP, dst, R1)
    a.ld_map(R1, "ftable")
    a.movr(R2, FP)
    a.add(R2, K)
    a.call(HELPER_MAP_LOOKUP)
    a.jif(R0, "!=", 0, "hit")
    a.label(skip)


def _lookup_both(a: Asm, kind: TableKind) -> None:
    _lookup(a, kind, True)
    _lookup(a, kind, False)


def build_program(timestamps: bool = True, report_target: bool = False,
                  rx_ts_kfunc: int | None = None,
                  bpf_filters: Sequence[tuple[Sequence[object], int]] = ()) -> Asm:
    """The filter-table XDP program (maps: config, ftable, kmacs, xsks).

    ``bpf_filters`` are (classic BPF program, target) pairs, tried in order after
    every table kind (the ``bpf`` filter level): each program is translated to eBPF
    in place (:func:`efvi.bpf.translate.emit_cbpf`, its 64 scratch bytes at
    :data:`S_CBPF`); the first that accepts the frame redirects it to its target.
    Changing them means building and loading a new program (the link is updated in
    place, the maps stay).

    ``report_target`` (tests only) makes a hit return ``REPORT_BASE + target`` instead
    of redirecting, so ``BPF_PROG_TEST_RUN`` shows which filter won. ``rx_ts_kfunc``
    (the BTF id of :data:`RX_TS_KFUNC`) builds the hardware-timestamp variant, which
    must be loaded device-bound (``BPF_F_XDP_DEV_BOUND_ONLY`` + ``prog_ifindex``) and
    attached in native (drv) mode.
    """
    a = Asm()
    nomatch = "bpf" if bpf_filters else "pass"  # where a frame no table filter took goes
    a.movr(R6, R1)  # r6 = ctx for the whole program
    for off in range(S_ZERO, K, 8):
        a.st("dw", FP, off, 0)
    # r9 = presence mask (0: no filters, pass everything untouched)
    a.ld_map(R1, "config")
    a.movr(R2, FP)
    a.add(R2, S_ZERO)
    a.call(HELPER_MAP_LOOKUP)
    a.jif(R0, "==", 0, nomatch)
    a.ldx("dw", R9, R0, 0)
    a.jif(R9, "==", 0, nomatch)

    # ---- Ethernet and VLAN tags ----
    a.ldx("w", R7, R6, XDP_MD_DATA)
    a.ldx("w", R8, R6, XDP_MD_DATA_END)
    a.movr(R2, R7)
    a.add(R2, 14)
    a.jif(R2, ">", R8, nomatch, reg=True)
    a.ldx("b", R1, R7, 0)
    a.and_(R1, 1)
    a.stx("b", FP, S_MCAST, R1)
    a.ldx("w", R1, R7, 0)
    a.stx("w", FP, S_MAC, R1)
    a.ldx("h", R1, R7, 4)
    a.stx("h", FP, S_MAC + 4, R1)
    a.ldx("h", R1, R7, 12)
    a.movr(R4, R7)
    a.add(R4, 14)
    a.jif(R1, "==", ETH_P_8021Q_RAW, "vlan1")
    a.jif(R1, "==", ETH_P_8021AD_RAW, "vlan1")
    a.jmp("l3")
    a.label("vlan1")
    a.movr(R2, R7)
    a.add(R2, 18)
    a.jif(R2, ">", R8, nomatch, reg=True)
    a.ldx("h", R3, R7, 14)
    a.and_(R3, VLAN_VID_MASK_RAW)
    a.stx("h", FP, S_VLAN, R3)
    a.st("b", FP, S_TAGGED, 1)
    a.ldx("h", R1, R7, 16)
    a.movr(R4, R7)
    a.add(R4, 18)
    a.jif(R1, "==", ETH_P_8021Q_RAW, "vlan2")
    a.jif(R1, "==", ETH_P_8021AD_RAW, "vlan2")
    a.jmp("l3")
    a.label("vlan2")
    a.movr(R2, R7)
    a.add(R2, 22)
    a.jif(R2, ">", R8, nomatch, reg=True)
    a.ldx("h", R1, R7, 20)
    a.movr(R4, R7)
    a.add(R4, 22)

    # ---- IPv4 / IPv6 ----
    a.label("l3")
    a.stx("h", FP, S_ETYPE, R1)
    a.jif(R1, "==", ETH_P_IP_RAW, "ipv4")
    a.jif(R1, "==", ETH_P_IPV6_RAW, "ipv6")
    a.jmp("lookups")

    a.label("ipv4")
    a.movr(R2, R4)
    a.add(R2, 20)
    a.jif(R2, ">", R8, "lookups", reg=True)
    a.ldx("b", R1, R4, 9)
    a.stx("b", FP, S_PROTO, R1)
    a.st("b", FP, S_HASPROTO, 1)
    a.st("b", FP, S_IPVER, 4)
    a.ldx("h", R2, R4, 6)
    a.and_(R2, IP_FRAG_MASK_RAW)
    a.jif(R2, "!=", 0, "lookups")  # a fragment: IP filters never match it
    a.jif(R1, "==", 17, "v4l4")
    a.jif(R1, "!=", 6, "lookups")
    a.label("v4l4")
    a.ldx("w", R2, R4, 16)
    a.stx("w", FP, S_LIP, R2)
    a.ldx("w", R2, R4, 12)
    a.stx("w", FP, S_RIP, R2)
    a.ldx("b", R2, R4, 0)
    a.and_(R2, 0x0F)
    a.lsh(R2, 2)
    a.jif(R2, "<", 20, "lookups")
    a.addr(R4, R2)
    a.movr(R2, R4)
    a.add(R2, 4)
    a.jif(R2, ">", R8, "lookups", reg=True)
    a.jmp("ports")

    a.label("ipv6")
    a.movr(R2, R4)
    a.add(R2, 40)
    a.jif(R2, ">", R8, "lookups", reg=True)
    a.ldx("b", R1, R4, 6)
    a.stx("b", FP, S_PROTO, R1)
    a.st("b", FP, S_HASPROTO, 1)
    a.st("b", FP, S_IPVER, 6)
    a.jif(R1, "==", 17, "v6l4")
    a.jif(R1, "!=", 6, "lookups")
    a.label("v6l4")
    for src, dst in ((24, S_LIP), (32, S_LIP + 8), (8, S_RIP), (16, S_RIP + 8)):
        a.ldx("dw", R2, R4, src)
        a.stx("dw", FP, dst, R2)
    a.add(R4, 40)
    a.movr(R2, R4)
    a.add(R2, 4)
    a.jif(R2, ">", R8, "lookups", reg=True)

    a.label("ports")
    a.ldx("h", R2, R4, 0)
    a.stx("h", FP, S_RPORT, R2)
    a.ldx("h", R2, R4, 2)
    a.stx("h", FP, S_LPORT, R2)
    a.st("b", FP, S_IPOK, 1)

    # ---- the table, in priority order ----
    a.label("lookups")
    a.ldx("b", R1, FP, S_IPOK)
    a.jif(R1, "==", 0, "l2")
    _lookup_both(a, TableKind.FULL)
    _lookup_both(a, TableKind.LOCAL)
    a.label("l2")
    _lookup_both(a, TableKind.MAC_ETYPE)
    a.ldx("b", R1, FP, S_HASPROTO)
    a.jif(R1, "==", 0, "no_mac_proto")
    _lookup_both(a, TableKind.MAC_PROTO)
    a.label("no_mac_proto")
    _lookup_both(a, TableKind.MAC)
    _lookup_both(a, TableKind.ETYPE)
    a.ldx("b", R1, FP, S_HASPROTO)
    a.jif(R1, "==", 0, "no_ipproto")
    _lookup_both(a, TableKind.IPPROTO)
    a.label("no_ipproto")
    a.ldx("b", R1, FP, S_MCAST)
    a.jif(R1, "!=", 0, "mc_all")
    _lookup_both(a, TableKind.UCAST_ALL)
    a.jmp("mismatch")
    a.label("mc_all")
    _lookup_both(a, TableKind.MCAST_ALL)
    # mismatch: only frames whose destination MAC the kernel does not want
    a.label("mismatch")
    mis_bits = (presence_bit(TableKind.UCAST_MIS, False) | presence_bit(TableKind.UCAST_MIS, True)
                | presence_bit(TableKind.MCAST_MIS, False)
                | presence_bit(TableKind.MCAST_MIS, True))
    a.movr(R1, R9)
    a.and_(R1, mis_bits)
    a.jif(R1, "==", 0, nomatch)
    a.st("dw", FP, K, 0)
    a.ldx("w", R1, FP, S_MAC)
    a.stx("w", FP, K, R1)
    a.ldx("h", R1, FP, S_MAC + 4)
    a.stx("h", FP, K + 4, R1)
    a.ld_map(R1, "kmacs")
    a.movr(R2, FP)
    a.add(R2, K)
    a.call(HELPER_MAP_LOOKUP)
    a.jif(R0, "!=", 0, nomatch)
    a.ldx("b", R1, FP, S_MCAST)
    a.jif(R1, "!=", 0, "mc_mis")
    _lookup_both(a, TableKind.UCAST_MIS)
    a.jmp(nomatch)
    a.label("mc_mis")
    _lookup_both(a, TableKind.MCAST_MIS)
    a.jmp(nomatch)

    # ---- the bpf level: translated classic BPF programs, first match wins ----
    if bpf_filters:
        a.label("bpf")
        a.ldx("w", R7, R6, XDP_MD_DATA)
        a.ldx("w", R8, R6, XDP_MD_DATA_END)
        for j, (prog, target) in enumerate(bpf_filters):
            nxt = f"bpf{j + 1}" if j + 1 < len(bpf_filters) else "pass"
            to_hit, to_miss = emit_cbpf(a, prog, match=f"bpfhit{j}", miss=nxt,
                                        scratch=S_CBPF, prefix=f"c{j}_")
            if to_hit:
                a.label(f"bpfhit{j}")
                a.mov(R7, target)
                a.jmp("hit_target")
            if not to_miss:
                break  # it accepts every frame: the programs after it never run
            if j + 1 < len(bpf_filters):
                a.label(nxt)
                a.ldx("w", R7, R6, XDP_MD_DATA)
                a.ldx("w", R8, R6, XDP_MD_DATA_END)

    # ---- a hit: r0 = &target (table), or r7 = target (bpf) ----
    a.label("hit")
    a.ldx("w", R7, R0, 0)
    a.label("hit_target")
    if report_target:
        a.movr(R0, R7)
        a.add(R0, REPORT_BASE)
        a.exit()
        a.label("pass")
        a.ret(XDP_PASS)
        return a
    a.ldx("w", R2, R6, XDP_MD_RX_QUEUE_INDEX)
    a.jif(R2, ">=", MAX_QUEUES, "pass")
    a.lsh(R7, 6)
    a.addr(R7, R2)  # r7 = XSKMAP slot
    if timestamps:
        if rx_ts_kfunc is not None:
            # r9 = the hardware stamp, 0 when the driver has none (r9's mask is dead here)
            a.st("dw", FP, S_TS, 0)
            a.movr(R1, R6)
            a.movr(R2, FP)
            a.add(R2, S_TS)
            a.call_kfunc(rx_ts_kfunc)
            a.mov(R9, 0)
            a.jif(R0, "!=", 0, "have_hw")
            a.ldx("dw", R9, FP, S_TS)
            a.label("have_hw")
        a.movr(R1, R6)
        a.mov(R2, -META_LEN)
        a.call(HELPER_XDP_ADJUST_META)
        a.jif(R0, "!=", 0, "redirect")
        a.ldx("w", R2, R6, XDP_MD_DATA_META)
        a.ldx("w", R3, R6, XDP_MD_DATA)
        a.movr(R4, R2)
        a.add(R4, META_LEN)
        a.jif(R4, ">", R3, "redirect", reg=True)
        a.movr(R8, R2)
        if rx_ts_kfunc is not None:
            a.jif(R9, "==", 0, "sw_ts")
            a.ld_imm64(R1, HW_TS_FLAG)
            a.alu("or", R9, R1)
            a.stx("dw", R8, 0, R9)
            a.jmp("redirect")
            a.label("sw_ts")
        a.call(HELPER_KTIME_GET_NS)
        a.stx("dw", R8, 0, R0)
    a.label("redirect")
    a.ld_map(R1, "xsks")
    a.movr(R2, R7)
    a.mov(R3, XDP_PASS)  # empty slot: the kernel gets the frame
    a.call(HELPER_REDIRECT_MAP)
    a.exit()
    a.label("pass")
    a.ret(XDP_PASS)
    return a

