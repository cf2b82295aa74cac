"""A small eBPF assembler with symbolic labels (sans-I/O: instructions in, bytes out).

Each instruction is 8 bytes, ``u8 code | u8 src<<4|dst | s16 off | s32 imm``
(little-endian). Jumps name a label; :meth:`Asm.assemble` resolves it to a slot offset
relative to the *next* instruction, counting a 64-bit immediate load as two slots, so
no offset is ever counted by hand. Map references are kept symbolic too
(:meth:`Asm.ld_map`) and bound to file descriptors at assembly time.

Example::

    a = Asm()
    a.ldx("w", R2, R1, 16)          # r2 = ctx->rx_queue_index
    a.ld_map(R1, "xsks")            # r1 = &xsks (pseudo map fd)
    a.mov(R3, 2)                    # XDP_PASS if the slot is empty
    a.call(HELPER_REDIRECT_MAP)
    a.exit()
    code = a.assemble({"xsks": fd})
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10

# instruction classes
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = range(8)
# sizes
SIZES = {"w": 0x00, "h": 0x08, "b": 0x10, "dw": 0x18}
BPF_IMM = 0x00
BPF_MEM = 0x60
BPF_K = 0x00
BPF_X = 0x08
ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
           "arsh": 0xC0}
JMP_OPS = {"ja": 0x00, "==": 0x10, ">": 0x20, ">=": 0x30, "&": 0x40, "!=": 0x50,
           "s>": 0x60, "s>=": 0x70, "<": 0xA0, "<=": 0xB0, "s<": 0xC0, "s<=": 0xD0}
BPF_END = 0xD0
BPF_TO_BE = 0x08
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_KFUNC_CALL = 2

# helpers and XDP actions
HELPER_MAP_LOOKUP = 1
HELPER_KTIME_GET_NS = 5
HELPER_REDIRECT_MAP = 51
HELPER_XDP_ADJUST_META = 54
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# struct xdp_md offsets
XDP_MD_DATA = 0
XDP_MD_DATA_END = 4
XDP_MD_DATA_META = 8
XDP_MD_INGRESS_IFINDEX = 12
XDP_MD_RX_QUEUE_INDEX = 16

_INSN = struct.Struct("<BBhi")


class AsmError(ValueError):
    """A program that cannot be assembled (unknown label, jump out of range, ...)."""


@dataclass
class _Insn:
    code: int
    dst: int
    src: int
    off: int
    imm: int
    label: str | None = None  # jump target
    map_name: str | None = None  # ld_map: imm from the map table
    wide: bool = False  # 2-slot 64-bit immediate load
    imm_hi: int = 0


def _reg(r: int) -> int:
    if not 0 <= r <= 10:
        raise AsmError(f"no register r{r}")
    return r


def _s32(v: int) -> int:
    if not -(1 << 31) <= v < (1 << 32):
        raise AsmError(f"immediate {v} does not fit 32 bits")
    return v - (1 << 32) if v >= (1 << 31) else v


def _s16(v: int) -> int:
    if not -(1 << 15) <= v < (1 << 15):
        raise AsmError(f"offset {v} does not fit 16 bits")
    return v


class Asm:
    """An instruction list with labels. Methods append; :meth:`assemble` encodes."""

    def __init__(self) -> None:
        self._items: list[_Insn] = []
        self._labels: dict[str, int] = {}  # label -> item index
        self._auto = 0

    # ---- structure -----------------------------------------------------------------
    def label(self, name: str) -> str:
        """Define ``name`` at the next instruction."""
        if name in self._labels:
            raise AsmError(f"label {name!r} defined twice")
        self._labels[name] = len(self._items)
        return name

    def fresh(self, stem: str = "L") -> str:
        """A new unique label name (not yet placed)."""
        self._auto += 1
        return f".{stem}{self._auto}"

    def __len__(self) -> int:
        """Slots emitted so far (64-bit immediate loads count two)."""
        return sum(2 if i.wide else 1 for i in self._items)

    def _emit(self, insn: _Insn) -> None:
        self._items.append(insn)

    # ---- ALU (64-bit) ----------------------------------------------------------------
    def alu(self, op: str, dst: int, src: int | None = None, imm: int = 0,
            wide: bool = True) -> None:
        """``dst op= src`` (register) or ``dst op= imm``; 32-bit ALU with ``wide=False``."""
        cls = BPF_ALU64 if wide else BPF_ALU
        if src is None:
            self._emit(_Insn(cls | ALU_OPS[op] | BPF_K, _reg(dst), 0, 0, _s32(imm)))
        else:
            self._emit(_Insn(cls | ALU_OPS[op] | BPF_X, _reg(dst), _reg(src), 0, 0))

    def mov(self, dst: int, value: int, *, reg: bool = False) -> None:
        """``dst = value`` (an immediate, or register ``value`` with ``reg=True``)."""
        self.alu("mov", dst, value if reg else None, 0 if reg else value)

    def movr(self, dst: int, src: int) -> None:
        self.alu("mov", dst, src)

    def add(self, dst: int, imm: int) -> None:
        self.alu("add", dst, None, imm)

    def addr(self, dst: int, src: int) -> None:
        self.alu("add", dst, src)

    def and_(self, dst: int, imm: int) -> None:
        self.alu("and", dst, None, imm)

    def lsh(self, dst: int, imm: int) -> None:
        self.alu("lsh", dst, None, imm)

    def rsh(self, dst: int, imm: int) -> None:
        self.alu("rsh", dst, None, imm)

    def or_(self, dst: int, imm: int) -> None:
        self.alu("or", dst, None, imm)

    def endian_be(self, dst: int, bits: int) -> None:
        """``dst = htobe<bits>(dst)`` (``BPF_END | BPF_TO_BE``: a byte swap on
        little-endian hosts; upper bits cleared): a network-order load → its value."""
        if bits not in (16, 32, 64):
            raise AsmError(f"no {bits}-bit byte swap")
        self._emit(_Insn(BPF_ALU | BPF_END | BPF_TO_BE, _reg(dst), 0, 0, bits))

    # ---- memory ----------------------------------------------------------------------
    def ldx(self, size: str, dst: int, src: int, off: int) -> None:
        """``dst = *(size *)(src + off)`` (zero-extended)."""
        self._emit(_Insn(BPF_LDX | SIZES[size] | BPF_MEM, _reg(dst), _reg(src), _s16(off), 0))

    def stx(self, size: str, dst: int, off: int, src: int) -> None:
        """``*(size *)(dst + off) = src``."""
        self._emit(_Insn(BPF_STX | SIZES[size] | BPF_MEM, _reg(dst), _reg(src), _s16(off), 0))

    def st(self, size: str, dst: int, off: int, imm: int) -> None:
        """``*(size *)(dst + off) = imm``."""
        self._emit(_Insn(BPF_ST | SIZES[size] | BPF_MEM, _reg(dst), 0, _s16(off), _s32(imm)))

    def ld_imm64(self, dst: int, value: int) -> None:
        """``dst = value`` for any 64-bit value (two slots)."""
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFFFFFF, value >> 32
        self._emit(_Insn(BPF_LD | SIZES["dw"] | BPF_IMM, _reg(dst), 0, 0, _s32(lo),
                         wide=True, imm_hi=_s32(hi)))

    def ld_map(self, dst: int, map_name: str) -> None:
        """``dst = &map`` (pseudo map fd, bound at :meth:`assemble`; two slots)."""
        self._emit(_Insn(BPF_LD | SIZES["dw"] | BPF_IMM, _reg(dst), BPF_PSEUDO_MAP_FD, 0, 0,
                         map_name=map_name, wide=True))

    # ---- control flow --------------------------------------------------------------------
    def jmp(self, target: str) -> None:
        """Unconditional jump to label ``target``."""
        self._emit(_Insn(BPF_JMP | JMP_OPS["ja"], 0, 0, 0, 0, label=target))

    def jif(self, dst: int, cond: str, value: int, target: str, *, reg: bool = False) -> None:
        """``if dst cond value goto target`` (unsigned unless cond starts with ``s``).

        ``value`` is an immediate, or a register with ``reg=True``. ``cond`` is one of
        ``== != > >= < <= & s> s>= s< s<=``.
        """
        op = JMP_OPS[cond]
        if cond == "ja":
            raise AsmError("use jmp() for unconditional jumps")
        if reg:
            self._emit(_Insn(BPF_JMP | op | BPF_X, _reg(dst), _reg(value), 0, 0, label=target))
        else:
            self._emit(_Insn(BPF_JMP | op | BPF_K, _reg(dst), 0, 0, _s32(value), label=target))

    def call(self, helper: int) -> None:
        """Call helper number ``helper`` (clobbers r1-r5; result in r0)."""
        self._emit(_Insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper))

    def call_kfunc(self, btf_id: int) -> None:
        self._emit(_Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, btf_id))

    def exit(self) -> None:
        self._emit(_Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0))

    def ret(self, value: int) -> None:
        """``r0 = value; exit``."""
        self.mov(R0, value)
        self.exit()

    # ---- output ------------------------------------------------------------------------
    def slots(self) -> list[int]:
        """Slot index of every item (for tests and listings)."""
        out, pos = [], 0
        for it in self._items:
            out.append(pos)
            pos += 2 if it.wide else 1
        return out

    def assemble(self, maps: dict[str, int] | None = None) -> bytes:
        """Encode; resolve labels and bind map names to fds (``maps``)."""
        maps = maps or {}
        slots = self.slots()
        total = len(self)
        label_slot: dict[str, int] = {}
        for name, idx in self._labels.items():
            label_slot[name] = slots[idx] if idx < len(slots) else total
        out = bytearray()
        for it, pos in zip(self._items, slots):
            off, imm = it.off, it.imm
            if it.label is not None:
                if it.label not in label_slot:
                    raise AsmError(f"jump to undefined label {it.label!r}")
                target = label_slot[it.label]
                if target >= total:
                    raise AsmError(f"label {it.label!r} is past the last instruction")
                off = _s16(target - (pos + 1))
            if it.map_name is not None:
                if it.map_name not in maps:
                    raise AsmError(f"no file descriptor for map {it.map_name!r}")
                imm = maps[it.map_name]
            out += _INSN.pack(it.code, (it.src << 4) | it.dst, off, imm)
            if it.wide:
                out += _INSN.pack(0, 0, 0, it.imm_hi)
        return bytes(out)


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    """(code, dst, src, off, imm) per slot (for tests and debugging)."""
    out = []
    for i in range(0, len(code), 8):
        c, regs, off, imm = _INSN.unpack_from(code, i)
        out.append((c, regs & 0xF, regs >> 4, off, imm))
    return out
