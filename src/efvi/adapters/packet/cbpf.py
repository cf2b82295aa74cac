"""Classic BPF for the ``packet`` adapter: FilterSpec → socket filter, plus an interpreter.

Sans-I/O: everything here is a pure function over specs, ints and bytes; nothing
opens a socket. :func:`compile_filters` turns the filters of one VI into one program
that the adapter attaches with ``SO_ATTACH_FILTER``; the kernel runs it on every
frame of the interface *before* copying the frame into the VI's ring, so frames no
filter wants cost no copy. :func:`run` is a small classic BPF interpreter with the
kernel's semantics (out-of-range loads and division by zero return 0 = drop,
ancillary loads through ``SKF_AD_OFF``) used to test programs against crafted frames.

What the program sees (AF_PACKET, ``SOCK_RAW``): the frame from the destination MAC,
**with the outer VLAN tag already removed** by the kernel (``skb_vlan_untag`` runs
before packet taps), the tag being readable only through the ancillary loads
``SKF_AD_VLAN_TAG_PRESENT``/``SKF_AD_VLAN_TAG``. A second (QinQ inner) tag stays in
the frame. The preamble therefore handles both layouts (ancillary tag or in-frame
tag, then at most one further in-frame tag, as :mod:`efvi.wire.classify` does) and
leaves in scratch memory:

* ``M[0]`` — offset of the L3 header, ``M[1]`` — the EtherType after the tags,
* ``M[2]`` — the outer VLAN id, or ``0x10000`` when the frame is untagged.

The preamble also drops ``PACKET_OUTGOING`` frames (what the host itself sends; a
NIC's RX filters never see them). Each filter then becomes one *block*: a run of
tests that jump to the next block on a mismatch and end in ``ret #-1`` (accept the
whole frame). Blocks are OR-ed in the order given; the last instruction is
``ret #0``. A VI with ``unicast_mismatch``/``multicast_mismatch`` filters gets, after
its own blocks, *exclusion* blocks for the other filters of the interface (``ret
#0``) and then its mismatch blocks: "frames nothing else wants".

Kind by kind (all also check ``M[2]`` when the spec has a VLAN):

* ``ip_local``/``ip_full`` v4: EtherType 0x0800, protocol, not a fragment (MF or
  offset set → no match: fragments go to the kernel), addresses, then ports at
  ``M[0] + 4*IHL``. v6: EtherType 0x86DD, next header = protocol directly after the
  fixed header (a fragment or other extension header → no match), ports at ``M[0]+40``.
* ``eth``: destination MAC (± EtherType, ± IP protocol); ``ethertype``; ``ipproto``
  (IPv4 protocol or IPv6 next header; matches fragments too, the field is in all).
* ``unicast_all``/``multicast_all``: the I/G bit of the destination MAC (broadcast
  counts as multicast); ``unicast_mismatch``: unicast with ``pkttype ==
  PACKET_OTHERHOST`` (the kernel does not want it); ``multicast_mismatch``:
  multicast that is neither broadcast nor one of the link-layer groups the kernel
  has joined (``kernel_mcast``, a snapshot the adapter reads from
  ``/proc/net/dev_mcast``).
* ``ALL`` (port sniff): every incoming frame.

Programs longer than :data:`BPF_MAXINSNS` (4096) raise :class:`SetupError` with the
fix (fewer filters on one VI, or the xdp adapter).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from efvi.errors import SetupError
from efvi.filters import FilterKind, FilterSpec

# ---- encodings (linux/filter.h, linux/bpf_common.h) --------------------------------
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = 0x60, 0x70, 0x80, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_A = 0x10  # BPF_RVAL: return A
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096

SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
SKF_AD_VLAN_TAG = 44
SKF_AD_VLAN_TAG_PRESENT = 48
SKF_AD_VLAN_TPID = 60

PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
NO_VLAN = 0x10000  # M[2] when untagged: never equal to a 12-bit VID
ACCEPT = 0xFFFFFFFF  # "the whole frame"

_M_L3, _M_ETYPE, _M_VID = 0, 1, 2
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct sock_filter``: ``code``, ``jt``, ``jf`` (forward skips), ``k``."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k & _U32)

    def __str__(self) -> str:
        return f"{{ {self.code:#06x}, {self.jt:3d}, {self.jf:3d}, {self.k & _U32:#010x} }}"


def pack_program(prog: Sequence[Insn]) -> bytes:
    """The ``sock_filter`` array the kernel copies from ``sock_fprog.filter``."""
    return b"".join(i.pack() for i in prog)


# ---- a tiny assembler with forward labels ---------------------------------------------
Target = int | str  # a relative skip, or a label name resolved at the end of a block


class _Asm:
    """Instructions with symbolic forward jump targets, resolved by :meth:`resolve`."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Target, Target, int]] = []
        self.labels: dict[str, int] = {}

    def emit(self, code: int, k: int = 0, jt: Target = 0, jf: Target = 0) -> None:
        self.items.append((code, jt, jf, k & _U32))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.items)

    # convenience forms
    def ld_abs(self, size: int, off: int) -> None:
        self.emit(BPF_LD | size | BPF_ABS, off)

    def ld_ind(self, size: int, off: int) -> None:
        self.emit(BPF_LD | size | BPF_IND, off)

    def ld_anc(self, what: int) -> None:
        self.emit(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + what)

    def ld_mem(self, slot: int) -> None:
        self.emit(BPF_LD | BPF_MEM, slot)

    def ldx_mem(self, slot: int) -> None:
        self.emit(BPF_LDX | BPF_MEM, slot)

    def jeq(self, k: int, jt: Target, jf: Target) -> None:
        self.emit(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf)

    def jset(self, k: int, jt: Target, jf: Target) -> None:
        self.emit(BPF_JMP | BPF_JSET | BPF_K, k, jt, jf)

    def ret(self, k: int) -> None:
        self.emit(BPF_RET | BPF_K, k)

    def resolve(self) -> list[Insn]:
        out: list[Insn] = []
        for i, (code, jt, jf, k) in enumerate(self.items):
            rel = []
            for t in (jt, jf):
                if isinstance(t, str):
                    target = self.labels[t] if t != "next" else len(self.items)
                    d = target - (i + 1)
                else:
                    d = t
                if not 0 <= d <= 255:
                    raise ValueError(f"jump of {d} at {i} out of classic BPF range")
                rel.append(d)
            out.append(Insn(code, rel[0], rel[1], k))
        return out


# ---- preamble and blocks ---------------------------------------------------------------
def _preamble() -> list[Insn]:
    a = _Asm()
    a.ld_anc(SKF_AD_PKTTYPE)
    a.jeq(PACKET_OUTGOING, 0, 1)
    a.ret(0)  # here, not at the end: the kernel's scratch-memory check is linear
    a.ld_anc(SKF_AD_VLAN_TAG_PRESENT)
    a.jeq(0, "noanc", 0)
    a.ld_anc(SKF_AD_VLAN_TAG)
    a.emit(BPF_ALU | BPF_AND | BPF_K, 0x0FFF)
    a.emit(BPF_ST, _M_VID)
    a.emit(BPF_JMP | BPF_JA, 2)  # → tags
    a.label("noanc")
    a.emit(BPF_LD | BPF_IMM, NO_VLAN)
    a.emit(BPF_ST, _M_VID)
    # tags: first in-frame tag (the outer one if the kernel left it, else QinQ inner)
    a.emit(BPF_LDX | BPF_IMM, 12)
    a.ld_abs(BPF_H, 12)
    a.jeq(VLAN_TPIDS[0], "tag1", 0)
    a.jeq(VLAN_TPIDS[1], "tag1", 0)
    a.jeq(VLAN_TPIDS[2], "tag1", "done")
    a.label("tag1")
    a.ld_mem(_M_VID)
    a.jeq(NO_VLAN, 0, "keep1")
    a.ld_abs(BPF_H, 14)
    a.emit(BPF_ALU | BPF_AND | BPF_K, 0x0FFF)
    a.emit(BPF_ST, _M_VID)
    a.label("keep1")
    a.emit(BPF_LDX | BPF_IMM, 16)
    a.ld_abs(BPF_H, 16)
    a.jeq(VLAN_TPIDS[0], "tag2", 0)
    a.jeq(VLAN_TPIDS[1], "tag2", 0)
    a.jeq(VLAN_TPIDS[2], "tag2", "done")
    a.label("tag2")
    a.emit(BPF_LDX | BPF_IMM, 20)
    a.ld_abs(BPF_H, 20)
    a.label("done")  # A = EtherType, X = its offset
    a.emit(BPF_ST, _M_ETYPE)
    a.emit(BPF_MISC | BPF_TXA)
    a.emit(BPF_ALU | BPF_ADD | BPF_K, 2)
    a.emit(BPF_ST, _M_L3)
    return a.resolve()


def _vlan_check(a: _Asm, spec: FilterSpec) -> None:
    if spec.vlan_id is not None:
        a.ld_mem(_M_VID)
        a.jeq(spec.vlan_id, 0, "next")


def _mac_check(a: _Asm, mac: bytes, *, on_match: Target, on_miss: Target) -> None:
    hi, lo = struct.unpack(">IH", mac)
    a.ld_abs(BPF_W, 0)
    a.jeq(hi, 0, on_miss)
    a.ld_abs(BPF_H, 4)
    a.jeq(lo, on_match, on_miss)


def _ipproto_check(a: _Asm, proto: int) -> None:
    """Match IPv4 protocol or IPv6 next header ``proto``; falls through on a match."""
    a.ld_mem(_M_ETYPE)
    a.jeq(ETH_P_IP, 0, "v6")
    a.ldx_mem(_M_L3)
    a.ld_ind(BPF_B, 9)
    a.jeq(proto, "ok", "next")
    a.label("v6")
    a.jeq(ETH_P_IPV6, 0, "next")
    a.ldx_mem(_M_L3)
    a.ld_ind(BPF_B, 6)
    a.jeq(proto, 0, "next")
    a.label("ok")


def _block(spec: FilterSpec, result: int, kernel_mcast: Sequence[bytes]) -> list[Insn]:
    """Tests for ``spec`` ending in ``ret #result``; a miss jumps past the block."""
    a = _Asm()
    k = spec.kind
    _vlan_check(a, spec)
    if k in (FilterKind.IP_LOCAL, FilterKind.IP_FULL):
        full = k == FilterKind.IP_FULL
        a.ld_mem(_M_ETYPE)
        a.ldx_mem(_M_L3)
        if spec.ip_version == 4:
            a.jeq(ETH_P_IP, 0, "next")
            a.ld_ind(BPF_B, 9)
            a.jeq(spec.proto, 0, "next")
            a.ld_ind(BPF_H, 6)
            a.jset(0x3FFF, "next", 0)  # MF or fragment offset: not ours
            a.ld_ind(BPF_W, 16)
            a.jeq(struct.unpack(">I", spec.local_ip)[0], 0, "next")
            if full:
                a.ld_ind(BPF_W, 12)
                a.jeq(struct.unpack(">I", spec.remote_ip)[0], 0, "next")
            a.ld_ind(BPF_B, 0)
            a.emit(BPF_ALU | BPF_AND | BPF_K, 0x0F)
            a.emit(BPF_ALU | BPF_LSH | BPF_K, 2)
            a.emit(BPF_ALU | BPF_ADD | BPF_X)
            a.emit(BPF_MISC | BPF_TAX)  # X = L4 offset
            l4 = 0
        else:
            a.jeq(ETH_P_IPV6, 0, "next")
            a.ld_ind(BPF_B, 6)
            a.jeq(spec.proto, 0, "next")
            for i, w in enumerate(struct.unpack(">4I", spec.local_ip)):
                a.ld_ind(BPF_W, 24 + 4 * i)
                a.jeq(w, 0, "next")
            if full:
                for i, w in enumerate(struct.unpack(">4I", spec.remote_ip)):
                    a.ld_ind(BPF_W, 8 + 4 * i)
                    a.jeq(w, 0, "next")
            l4 = 40
        a.ld_ind(BPF_H, l4 + 2)
        a.jeq(spec.local_port, 0, "next")
        if full:
            a.ld_ind(BPF_H, l4)
            a.jeq(spec.remote_port, 0, "next")
    elif k == FilterKind.ETH:
        _mac_check(a, spec.mac, on_match=0, on_miss="next")
        if spec.ethertype is not None:
            a.ld_mem(_M_ETYPE)
            a.jeq(spec.ethertype, 0, "next")
        if spec.ipproto is not None:
            _ipproto_check(a, spec.ipproto)
    elif k == FilterKind.ETHERTYPE:
        assert spec.ethertype is not None
        a.ld_mem(_M_ETYPE)
        a.jeq(spec.ethertype, 0, "next")
    elif k == FilterKind.IPPROTO:
        assert spec.ipproto is not None
        _ipproto_check(a, spec.ipproto)
    elif k in (FilterKind.UNICAST_ALL, FilterKind.UNICAST_MISMATCH):
        a.ld_abs(BPF_B, 0)
        a.jset(1, "next", 0)
        if k == FilterKind.UNICAST_MISMATCH:
            a.ld_anc(SKF_AD_PKTTYPE)
            a.jeq(PACKET_OTHERHOST, 0, "next")
    elif k in (FilterKind.MULTICAST_ALL, FilterKind.MULTICAST_MISMATCH):
        a.ld_abs(BPF_B, 0)
        a.jset(1, 0, "next")
        if k == FilterKind.MULTICAST_MISMATCH:
            for n, mac in enumerate([b"\xff" * 6, *kernel_mcast]):
                _mac_check(a, mac, on_match="next", on_miss=f"m{n}")
                a.label(f"m{n}")
    elif k == FilterKind.ALL:
        pass
    else:
        raise SetupError(f"filter kind {k.name} cannot be compiled to classic BPF",
                         errno=errno.EOPNOTSUPP, hint="use another filter kind")
    a.ret(result)
    return a.resolve()


MISMATCH_KINDS = frozenset({FilterKind.UNICAST_MISMATCH, FilterKind.MULTICAST_MISMATCH})


def compile_filters(specs: Iterable[FilterSpec], *, others: Iterable[FilterSpec] = (),
                    kernel_mcast: Sequence[bytes] = (), snaplen: int = ACCEPT) -> list[Insn]:
    """One program accepting frames that match any of ``specs`` (control path).

    ``others`` are the filters of *other* VIs on the interface: they are excluded
    from this VI's mismatch filters. ``kernel_mcast`` are the 6-byte multicast MACs
    the kernel has joined (excluded from ``multicast_mismatch``). A VI without
    filters gets ``ret #0`` (receives nothing). Raises SetupError beyond 4096 insns.
    """
    own = list(dict.fromkeys(specs))
    if not own:
        return [Insn(BPF_RET | BPF_K, 0, 0, 0)]
    prog = _preamble()
    plain = [s for s in own if s.kind not in MISMATCH_KINDS]
    mism = [s for s in own if s.kind in MISMATCH_KINDS]
    for s in plain:
        prog += _block(s, snaplen, kernel_mcast)
    if mism:
        for s in dict.fromkeys(o for o in others if o.kind not in MISMATCH_KINDS):
            if s not in plain:
                prog += _block(s, 0, kernel_mcast)
        for s in mism:
            prog += _block(s, snaplen, kernel_mcast)
    prog.append(Insn(BPF_RET | BPF_K, 0, 0, 0))
    if len(prog) > BPF_MAXINSNS:
        raise SetupError(
            f"the classic BPF program for {len(own)} filters has {len(prog)} instructions, "
            f"more than the kernel's limit of {BPF_MAXINSNS}", errno=errno.E2BIG,
            hint="spread the filters over several VIs, use wider filters (ip_local instead "
                 "of many ip_full), or use the xdp adapter")
    return prog


# ---- validation and interpretation -----------------------------------------------------
def check(prog: Sequence[Insn]) -> None:
    """Raise ValueError unless ``prog`` passes the kernel's checks (``bpf_check_classic``).

    Includes the kernel's *linear* scratch-memory check (``check_load_and_stores``):
    a ``M[k]`` load must follow a store on every path, where falling through a ``ret``
    keeps the state of the instruction before it.
    """
    n = len(prog)
    if not 0 < n <= BPF_MAXINSNS:
        raise ValueError(f"program length {n} outside 1..{BPF_MAXINSNS}")
    masks = [0xFFFF] * (n + 256)
    valid = 0
    for i, ins in enumerate(prog):
        valid &= masks[i]
        cls = ins.code & 0x07
        if ins.code in (BPF_ST, BPF_STX) and ins.k < BPF_MEMWORDS:
            valid |= 1 << ins.k
        elif ins.code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM) and ins.k < BPF_MEMWORDS:
            if not valid & (1 << ins.k):
                raise ValueError(f"M[{ins.k}] loaded at {i} before a store on some path")
        elif cls == BPF_JMP:
            if ins.code & 0xF0 == BPF_JA:
                masks[min(i + 1 + ins.k, n)] &= valid
            else:
                masks[i + 1 + ins.jt] &= valid
                masks[i + 1 + ins.jf] &= valid
            valid = 0xFFFF
        if cls == BPF_JMP:
            op = ins.code & 0xF0
            if op == BPF_JA:
                if i + 1 + ins.k >= n:
                    raise ValueError(f"ja at {i} leaves the program")
            elif i + 1 + max(ins.jt, ins.jf) >= n:
                raise ValueError(f"jump at {i} leaves the program")
        if cls in (BPF_ST, BPF_STX) or (cls in (BPF_LD, BPF_LDX)
                                         and ins.code & 0xE0 == BPF_MEM):
            if not 0 <= ins.k < BPF_MEMWORDS:
                raise ValueError(f"scratch slot {ins.k} at {i}")
    if prog[-1].code & 0x07 != BPF_RET:
        raise ValueError("program does not end in ret")


@dataclass(frozen=True, slots=True)
class SkbMeta:
    """The ancillary data a socket filter can load (what the kernel knows of the skb)."""

    pkttype: int = PACKET_HOST
    vlan_tci: int | None = None  # the stripped outer tag (None: untagged)
    vlan_tpid: int = 0x8100
    protocol: int = 0
    ifindex: int = 1


def strip_outer_vlan(frame: bytes) -> tuple[bytes, SkbMeta]:
    """Model the kernel's ``skb_vlan_untag``: take the outer tag into :class:`SkbMeta`."""
    if len(frame) >= 18:
        tpid = struct.unpack_from(">H", frame, 12)[0]
        if tpid in (0x8100, 0x88A8):
            tci = struct.unpack_from(">H", frame, 14)[0]
            return frame[:12] + frame[16:], SkbMeta(vlan_tci=tci, vlan_tpid=tpid)
    return frame, SkbMeta()


def run(prog: Sequence[Insn], frame: bytes, meta: SkbMeta = SkbMeta()) -> int:
    """Interpret ``prog`` on ``frame``; return the accepted length (0 = drop).

    Kernel semantics: loads past the end, unknown ancillary offsets and division by
    zero end the program with 0; the return value is capped at ``len(frame)``.
    """
    A = X = 0
    M = [0] * BPF_MEMWORDS
    pc = 0
    n = len(frame)
    steps = 0

    def load(size: int, off: int) -> int | None:
        if off < 0:
            if SKF_AD_OFF <= off < SKF_AD_OFF + 64 and size == BPF_W:
                what = off - SKF_AD_OFF
                if what == SKF_AD_PKTTYPE:
                    return meta.pkttype
                if what == SKF_AD_VLAN_TAG_PRESENT:
                    return int(meta.vlan_tci is not None)
                if what == SKF_AD_VLAN_TAG:
                    return meta.vlan_tci or 0
                if what == SKF_AD_VLAN_TPID:
                    return meta.vlan_tpid if meta.vlan_tci is not None else 0
                if what == SKF_AD_PROTOCOL:
                    return meta.protocol
                if what == SKF_AD_IFINDEX:
                    return meta.ifindex
            return None
        w = {BPF_W: 4, BPF_H: 2, BPF_B: 1}[size]
        if off + w > n:
            return None
        return int.from_bytes(frame[off:off + w], "big")

    while True:
        steps += 1
        if pc >= len(prog) or steps > 1 << 20:
            return 0
        ins = prog[pc]
        pc += 1
        code, k = ins.code, ins.k
        cls = code & 0x07
        if cls in (BPF_LD, BPF_LDX):
            mode, size = code & 0xE0, code & 0x18
            v: int | None
            if mode == BPF_IMM:
                v = k
            elif mode == BPF_MEM:
                v = M[k]
            elif mode == BPF_LEN:
                v = n
            elif mode == BPF_ABS:
                v = load(size, k - (1 << 32) if k & 0x80000000 else k)
            elif mode == BPF_IND:
                v = load(size, X + (k - (1 << 32) if k & 0x80000000 else k))
            elif mode == BPF_MSH and cls == BPF_LDX:
                b = load(BPF_B, k)
                v = None if b is None else (b & 0x0F) * 4
            else:
                return 0
            if v is None:
                return 0
            if cls == BPF_LD:
                A = v & _U32
            else:
                X = v & _U32
        elif cls == BPF_ST:
            M[k] = A
        elif cls == BPF_STX:
            M[k] = X
        elif cls == BPF_ALU:
            op = code & 0xF0
            src = X if code & BPF_X else k
            if op == BPF_ADD:
                A = (A + src) & _U32
            elif op == BPF_SUB:
                A = (A - src) & _U32
            elif op == BPF_MUL:
                A = (A * src) & _U32
            elif op in (BPF_DIV, BPF_MOD):
                if src == 0:
                    return 0
                A = A // src if op == BPF_DIV else A % src
            elif op == BPF_OR:
                A |= src
            elif op == BPF_AND:
                A &= src
            elif op == BPF_XOR:
                A ^= src
            elif op == BPF_LSH:
                A = (A << (src & 31)) & _U32
            elif op == BPF_RSH:
                A = A >> (src & 31)
            elif op == BPF_NEG:
                A = (-A) & _U32
            else:
                return 0
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            src = X if code & BPF_X else k
            if op == BPF_JEQ:
                cond = A == src
            elif op == BPF_JGT:
                cond = A > src
            elif op == BPF_JGE:
                cond = A >= src
            elif op == BPF_JSET:
                cond = bool(A & src)
            else:
                return 0
            pc += ins.jt if cond else ins.jf
        elif cls == BPF_RET:
            r = A if code & 0x18 == BPF_A else k
            return min(r, n)
        elif cls == BPF_MISC:
            if code & 0xF8 == BPF_TXA:
                A = X
            else:
                X = A
        else:  # pragma: no cover - all eight classes handled
            return 0


def disassemble(prog: Sequence[Insn]) -> str:
    """``{ code, jt, jf, k }`` lines, the form ``tcpdump -dd`` prints."""
    return "\n".join(str(i) for i in prog)
