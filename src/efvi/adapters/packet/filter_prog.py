"""Classic BPF for the ``packet`` adapter: FilterSpec → one socket filter per VI.

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
NIC's RX filters never see them) — unless the adapter was opened with ``dir=out``
(only those) or ``dir=inout`` (both), as ``tcpdump -Q`` picks directions. Each
filter then becomes one *block*: a run of tests that jump to the next block on a
mismatch and end in ``ret #-1`` (accept the whole frame). Blocks are OR-ed in the
order given; the last instruction is ``ret #0``. A VI with
``unicast_mismatch``/``multicast_mismatch`` filters gets, after its own blocks,
*exclusion* blocks for the other filters of the interface (``ret #0``) and then its
mismatch blocks: "frames nothing else wants".

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
* ``bpf``: the spec's own classic BPF program (e.g. a tcpdump expression compiled by
  libpcap), relocated into a block: it starts with ``A = X = 0``, its ``ret #k≠0`` /
  ``ret A≠0`` accept, ``ret #0`` goes on to the next block. bpf blocks come last,
  after the mismatch blocks (they may overwrite the preamble's scratch words), and
  mismatch exclusion ignores them — as in the sim table, bpf is the lowest level.
  The program sees the frame as the socket does: the outer VLAN tag removed (as a
  live ``tcpdump`` on Linux sees it; ``vlan`` in a file-style expression then only
  matches a QinQ inner tag).

Programs longer than :data:`BPF_MAXINSNS` (4096) raise :class:`SetupError` with the
fix (fewer filters on one VI, or the xdp adapter).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence

from efvi.bpf.cbpf import (ACCEPT, BPF_A, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_JA,
                           BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_LSH, BPF_MAXINSNS,
                           BPF_MISC, BPF_RET, BPF_ST, BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_IMM,
                           PACKET_OTHERHOST, PACKET_OUTGOING, SKF_AD_PKTTYPE, SKF_AD_VLAN_TAG,
                           SKF_AD_VLAN_TAG_PRESENT, Asm, Insn, Target)
from efvi.errors import SetupError
from efvi.filters import FilterKind, FilterSpec

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
NO_VLAN = 0x10000  # M[2] when untagged: never equal to a 12-bit VID

_M_L3, _M_ETYPE, _M_VID = 0, 1, 2


# ---- preamble and blocks ---------------------------------------------------------------
def _preamble(direction: str = "in") -> list[Insn]:
    a = Asm()
    if direction != "inout":
        a.ld_anc(SKF_AD_PKTTYPE)
        if direction == "out":
            a.jeq(PACKET_OUTGOING, 1, 0)
        else:
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


def _vlan_check(a: Asm, spec: FilterSpec) -> None:
    if spec.vlan_id is not None:
        a.ld_mem(_M_VID)
        a.jeq(spec.vlan_id, 0, "next")


def _mac_check(a: Asm, mac: bytes, *, on_match: Target, on_miss: Target) -> None:
    hi, lo = struct.unpack(">IH", mac)
    a.ld_abs(BPF_W, 0)
    a.jeq(hi, 0, on_miss)
    a.ld_abs(BPF_H, 4)
    a.jeq(lo, on_match, on_miss)


def _ipproto_check(a: Asm, proto: int) -> None:
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
    a = Asm()
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
DIRECTIONS = ("in", "out", "inout")


def _bpf_block(program: Sequence[tuple[int, int, int, int]], result: int) -> list[Insn]:
    """A spec's own program as a block (see the module doc): jumps relocated."""
    size = [3 if c & 0x07 == BPF_RET and c & 0x18 == BPF_A else 1 for c, _, _, _ in program]
    start = [2]
    for n in size:
        start.append(start[-1] + n)
    end = start[-1]  # the first instruction after the block
    out = [Insn(BPF_LD | BPF_IMM, 0, 0, 0), Insn(BPF_LDX | BPF_IMM, 0, 0, 0)]
    for i, (code, jt, jf, k) in enumerate(program):
        pos = len(out)
        cls, op = code & 0x07, code & 0xF0
        if cls == BPF_RET:
            if code & 0x18 == BPF_A:
                out += [Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
                        Insn(BPF_JMP | BPF_JA, 0, 0, end - (pos + 2)),
                        Insn(BPF_RET | BPF_K, 0, 0, result)]
            elif k:
                out.append(Insn(BPF_RET | BPF_K, 0, 0, result))
            else:
                out.append(Insn(BPF_JMP | BPF_JA, 0, 0, end - (pos + 1)))
        elif cls == BPF_JMP and op == BPF_JA:
            out.append(Insn(code, 0, 0, start[i + 1 + k] - (pos + 1)))
        elif cls == BPF_JMP:
            t, f = start[i + 1 + jt] - (pos + 1), start[i + 1 + jf] - (pos + 1)
            if t > 255 or f > 255:
                raise SetupError(f"the classic BPF program ({len(program)} instructions) has a "
                                 "jump too long to embed in the socket filter",
                                 errno=errno.E2BIG, hint="use a shorter expression")
            out.append(Insn(code, t, f, k))
        else:
            out.append(Insn(code, jt, jf, k))
    return out


def compile_filters(specs: Iterable[FilterSpec], *, others: Iterable[FilterSpec] = (),
                    kernel_mcast: Sequence[bytes] = (), snaplen: int = ACCEPT,
                    direction: str = "in") -> list[Insn]:
    """One program accepting frames that match any of ``specs`` (control path).

    ``others`` are the filters of *other* VIs on the interface: they are excluded
    from this VI's mismatch filters. ``kernel_mcast`` are the 6-byte multicast MACs
    the kernel has joined (excluded from ``multicast_mismatch``). ``direction``
    (``in``, ``out``, ``inout``) picks received and/or sent (``PACKET_OUTGOING``)
    frames. A VI without filters gets ``ret #0`` (receives nothing). Raises
    SetupError beyond 4096 insns.
    """
    if direction not in DIRECTIONS:
        raise SetupError(f"unknown direction {direction!r}", errno=errno.EINVAL,
                         hint="use in, out or inout")
    own = list(dict.fromkeys(specs))
    if not own:
        return [Insn(BPF_RET | BPF_K, 0, 0, 0)]
    prog = _preamble(direction)
    plain = [s for s in own if s.kind not in MISMATCH_KINDS and s.kind != FilterKind.BPF]
    mism = [s for s in own if s.kind in MISMATCH_KINDS]
    for s in plain:
        prog += _block(s, snaplen, kernel_mcast)
    if mism:
        for s in dict.fromkeys(o for o in others
                               if o.kind not in MISMATCH_KINDS and o.kind != FilterKind.BPF):
            if s not in plain:
                prog += _block(s, 0, kernel_mcast)
        for s in mism:
            prog += _block(s, snaplen, kernel_mcast)
    for s in own:
        if s.kind == FilterKind.BPF:
            prog += _bpf_block(s.program, snaplen)
    prog.append(Insn(BPF_RET | BPF_K, 0, 0, 0))
    if len(prog) > BPF_MAXINSNS:
        raise SetupError(
            f"the classic BPF program for {len(own)} filters has {len(prog)} instructions, "
            f"more than the kernel's limit of {BPF_MAXINSNS}", errno=errno.E2BIG,
            hint="spread the filters over several VIs, use wider filters (ip_local instead "
                 "of many ip_full), or use the xdp adapter")
    return prog


# ---- validation and interpretation -----------------------------------------------------
