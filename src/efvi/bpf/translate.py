"""Classic BPF → eBPF for XDP: a tcpdump filter runs inside the XDP program.

:func:`emit_cbpf` appends the eBPF equivalent of a classic BPF program to an
:class:`efvi.bpf.ebpf.Asm` being built, ending in a jump to ``match`` (the program
returned non-zero) or ``miss`` (it returned 0, or the kernel's interpreter would
have ended it with 0). It is written for the verifier:

* registers: A → r2, X → r3, r1/r4/r5 scratch; ``data``/``data_end`` (default r7/r8)
  must hold ``xdp_md->data``/``data_end`` on entry; r6 and r9 are left alone;
* every packet load is bounds-checked against ``data_end`` first (a load past the
  end → ``miss``, as the kernel drops); ``ld [x+k]`` computes ``x + k`` in 32 bits and
  misses unless it is below 64 KiB, so the verifier sees a bounded variable offset;
  ``ldx 4*([k]&0xf)`` is a checked byte load, masked and shifted;
* loads are big-endian (``BPF_END`` to-BE conversion after the load); the ALU is
  32-bit (``BPF_ALU``, results zero-extended), as classic BPF's A and X are;
* the 16 scratch words ``M[]`` live on the stack at ``scratch`` (64 bytes, zeroed
  first); division and modulo by ``X == 0`` miss (classic BPF returns 0), shifts by
  ``X`` use its low 5 bits; comparisons against constants ≥ 2**31 go through a
  zero-extended register, never a sign-extended immediate;
* classic jumps are forward only, so the result has no loops; each classic
  instruction gets a label and jumps name labels (no offset is counted by hand).

Ancillary loads (``SKF_AD_OFF + n``: socket metadata) have no XDP equivalent and
miss; libpcap never emits them for the file-style programs efvi compiles. Pure
function of its inputs (sans-I/O); :func:`test_program` wraps a translation in a
stand-alone XDP program for ``BPF_PROG_TEST_RUN``.
"""

from __future__ import annotations

from collections.abc import Sequence

from efvi.bpf.cbpf import as_tuple
from efvi.bpf.ebpf import (
    FP,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    XDP_DROP,
    XDP_MD_DATA,
    XDP_MD_DATA_END,
    XDP_PASS,
    Asm,
)

RA, RX = R2, R3
_T, _P, _E = R1, R4, R5
SCRATCH_BYTES = 64
_MAX_OFF = 0xFFFF
_SIZE = {0x00: 4, 0x08: 2, 0x10: 1}
_ESIZE = {4: "w", 2: "h", 1: "b"}
_JOP = {0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&"}
_JNOT = {"==": "!=", ">": "<=", ">=": "<"}
_ALU = {0x00: "add", 0x10: "sub", 0x20: "mul", 0x30: "div", 0x40: "or", 0x50: "and",
        0x60: "lsh", 0x70: "rsh", 0x90: "mod", 0xA0: "xor"}


def _dead_end(code: int, k: int) -> bool:
    """True for an instruction that ends the program with 0 on every frame."""
    cls, mode, size = code & 0x07, code & 0xE0, code & 0x18
    sk = k - (1 << 32) if k & 0x80000000 else k
    if (cls == 0 and mode == 0x20) or (cls == 1 and mode == 0xA0):
        return sk < 0 or sk + _SIZE.get(size, 1) > _MAX_OFF
    return cls == 4 and code & 0x08 == 0 and code & 0xF0 in (0x30, 0x90) and k == 0


def reachable(prog: Sequence[object]) -> list[bool]:
    """Which instructions some path reaches (the verifier rejects unreachable code)."""
    insns = [as_tuple(i) for i in prog]
    seen = [False] * len(insns)
    if insns:
        seen[0] = True
    for i, (code, jt, jf, k) in enumerate(insns):
        if not seen[i]:
            continue
        cls = code & 0x07
        if cls == 6 or _dead_end(code, k):
            succ: tuple[int, ...] = ()
        elif cls == 5:
            succ = (i + 1 + k,) if code & 0xF0 == 0 else (i + 1 + jt, i + 1 + jf)
        else:
            succ = (i + 1,)
        for j in succ:
            if j < len(insns):
                seen[j] = True
    return seen


def emit_cbpf(a: Asm, prog: Sequence[object], *, match: str, miss: str, scratch: int,
              prefix: str, data: int = R7, data_end: int = R8) -> tuple[bool, bool]:
    """Append ``prog`` translated to eBPF (see the module doc); labels start with ``prefix``.

    ``scratch`` is the stack offset (from r10, negative, 8-aligned) of 64 free bytes.
    Returns (``match`` is jumped to, ``miss`` is jumped to): the caller must not emit
    code only an unused label reaches (the verifier rejects unreachable code).
    Instructions no path reaches are left out. Raises ValueError for an instruction
    classic BPF does not have.
    """
    insns = [as_tuple(i) for i in prog]
    n = len(insns)
    live = reachable(insns)
    used = {match: False, miss: False}
    jmp, jif = a.jmp, a.jif

    def a_jmp(target: str) -> None:
        if target in used:
            used[target] = True
        jmp(target)

    def a_jif(dst: int, cond: str, value: int, target: str, *, reg: bool = False) -> None:
        if target in used:
            used[target] = True
        jif(dst, cond, value, target, reg=reg)

    def lab(i: int) -> str:
        if i >= n:
            raise ValueError(f"classic BPF jump to {i} leaves the {n}-instruction program")
        return f"{prefix}{i}"

    for w in range(SCRATCH_BYTES // 8):
        a.st("dw", FP, scratch + 8 * w, 0)
    a.mov(RA, 0)
    a.mov(RX, 0)

    def mov32(dst: int, k: int) -> None:
        a.alu("mov", dst, None, k, wide=False)

    def packet_load(dst: int, size: int, *, k: int | None = None, ind: int | None = None) -> None:
        """dst = big-endian ``size``-byte load at ``k`` (constant) or ``X + ind``."""
        if k is not None:
            if k + size > _MAX_OFF:
                a_jmp(miss)
                return
            a.movr(_P, data)
            a.add(_P, k)
        else:
            assert ind is not None
            a.alu("mov", _T, RX, wide=False)
            a.alu("add", _T, None, ind, wide=False)  # x + k in 32 bits, as classic BPF
            a_jif(_T, ">", _MAX_OFF - size, miss)
            a.movr(_P, data)
            a.addr(_P, _T)
        a.movr(_E, _P)
        a.add(_E, size)
        a_jif(_E, ">", data_end, miss, reg=True)
        a.ldx(_ESIZE[size], dst, _P, 0)
        if size > 1:
            a.endian_be(dst, 8 * size)

    for i, (code, jt, jf, k) in enumerate(insns):
        if not live[i]:
            continue
        a.label(lab(i))
        cls = code & 0x07
        if cls in (0, 1):  # LD, LDX
            dst = RA if cls == 0 else RX
            mode, size = code & 0xE0, code & 0x18
            sk = k - (1 << 32) if k & 0x80000000 else k
            if mode == 0x00:  # IMM
                mov32(dst, k)
            elif mode == 0x60:  # MEM
                if k >= 16:
                    raise ValueError(f"scratch slot {k} at {i}")
                a.ldx("w", dst, FP, scratch + 4 * k)
            elif mode == 0x80:  # LEN
                a.movr(dst, data_end)
                a.alu("sub", dst, data)
            elif mode == 0x20 and cls == 0 and size in _SIZE:  # ABS
                if sk < 0:
                    a_jmp(miss)  # ancillary data: not in XDP
                else:
                    packet_load(RA, _SIZE[size], k=sk)
            elif mode == 0x40 and cls == 0 and size in _SIZE:  # IND
                packet_load(RA, _SIZE[size], ind=sk)
            elif mode == 0xA0 and cls == 1 and size == 0x10:  # MSH: X = 4*([k]&0xf)
                if sk < 0:
                    a_jmp(miss)
                else:
                    packet_load(RX, 1, k=sk)
                    a.alu("and", RX, None, 0x0F, wide=False)
                    a.alu("lsh", RX, None, 2, wide=False)
            else:
                raise ValueError(f"unknown load {code:#06x} at {i}")
        elif cls in (2, 3):  # ST, STX
            if k >= 16:
                raise ValueError(f"scratch slot {k} at {i}")
            a.stx("w", FP, scratch + 4 * k, RA if cls == 2 else RX)
        elif cls == 4:  # ALU
            op = code & 0xF0
            use_x = bool(code & 0x08)
            if op == 0x80:
                a.alu("neg", RA, None, 0, wide=False)
            elif op not in _ALU:
                raise ValueError(f"unknown ALU op {code:#06x} at {i}")
            elif use_x:
                src = RX
                if op in (0x30, 0x90):
                    a_jif(RX, "==", 0, miss)
                elif op in (0x60, 0x70):
                    a.alu("mov", _T, RX, wide=False)
                    a.alu("and", _T, None, 31, wide=False)
                    src = _T
                a.alu(_ALU[op], RA, src, wide=False)
            else:
                if op in (0x30, 0x90) and k == 0:
                    a_jmp(miss)
                    continue
                kk = k & 31 if op in (0x60, 0x70) else k
                a.alu(_ALU[op], RA, None, kk, wide=False)
        elif cls == 5:  # JMP
            op = code & 0xF0
            if op == 0x00:
                a_jmp(lab(i + 1 + k))
                continue
            if op not in _JOP:
                raise ValueError(f"unknown jump {code:#06x} at {i}")
            cond = _JOP[op]
            if code & 0x08:
                rhs, reg = RX, True
            elif k >= 0x80000000:
                mov32(_T, k)  # zero-extended: never compare with a sign-extended imm
                rhs, reg = _T, True
            else:
                rhs, reg = k, False
            t, f = lab(i + 1 + jt), lab(i + 1 + jf)
            if jt == jf:
                a_jmp(t)
            elif jt == 0 and cond in _JNOT:
                a_jif(RA, _JNOT[cond], rhs, f, reg=reg)
            else:
                a_jif(RA, cond, rhs, t, reg=reg)
                if jf != 0:
                    a_jmp(f)
        elif cls == 6:  # RET
            if code & 0x18 == 0x10:  # ret A
                a_jif(RA, "==", 0, miss)
                a_jmp(match)
            else:
                a_jmp(match if k else miss)
        elif cls == 7:  # MISC
            if code & 0xF8 == 0x80:  # TXA
                a.alu("mov", RA, RX, wide=False)
            else:  # TAX
                a.alu("mov", RX, RA, wide=False)
        else:  # pragma: no cover - three bits, eight classes
            raise ValueError(f"unknown class {code:#06x} at {i}")
    return used[match], used[miss]


def test_program(prog: Sequence[object]) -> Asm:
    """A stand-alone XDP program: ``XDP_PASS`` when ``prog`` matches, else ``XDP_DROP``.

    For checking a translation with ``BPF_PROG_TEST_RUN`` (no maps, no side effects).
    """
    a = Asm()
    a.movr(R6, R1)
    a.ldx("w", R7, R6, XDP_MD_DATA)
    a.ldx("w", R8, R6, XDP_MD_DATA_END)
    to_match, to_miss = emit_cbpf(a, prog, match="match", miss="miss", scratch=-64,
                                  prefix="c")
    if to_match:
        a.label("match")
        a.ret(XDP_PASS)
    if to_miss:
        a.label("miss")
        a.mov(R0, XDP_DROP)
        a.exit()
    return a
