"""Classic BPF (``struct sock_filter``): encodings, a label assembler, the kernel's
checks and an interpreter.

Sans-I/O: pure functions over instructions, ints and bytes; nothing opens a socket.
:class:`Asm` builds programs with symbolic forward jumps; :func:`check` applies the
kernel's ``bpf_check_classic`` rules (including the linear scratch-memory check);
:func:`run` interprets a program with the kernel's semantics (out-of-range loads and
division by zero return 0 = drop, ancillary loads through ``SKF_AD_OFF``) so programs
can be tested against crafted frames; :func:`disassemble` prints the ``tcpdump -dd``
form. Used by the ``packet`` adapter (its filter compiler,
:mod:`efvi.adapters.packet.filter_prog`) and by anything else that attaches or
translates socket filters.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

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

ACCEPT = 0xFFFFFFFF  # "the whole frame"

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


def as_tuple(insn: object) -> tuple[int, int, int, int]:
    """``(code, jt, jf, k)`` of an :class:`Insn` or of a 4-tuple (``k`` as u32)."""
    if isinstance(insn, Insn):
        return insn.code, insn.jt, insn.jf, insn.k & _U32
    if isinstance(insn, tuple) and len(insn) == 4:
        c, jt, jf, k = insn
        return int(c), int(jt), int(jf), int(k) & _U32
    raise TypeError(f"not a classic BPF instruction: {insn!r}")


def pack_program(prog: Sequence[Insn]) -> bytes:
    """The ``sock_filter`` array the kernel copies from ``sock_fprog.filter``."""
    return b"".join(i.pack() for i in prog)


# ---- a tiny assembler with forward labels ---------------------------------------------
Target = int | str  # a relative skip, or a label name resolved at the end of a block


class Asm:
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
