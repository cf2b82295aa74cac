"""tcpdump expressions, compiled by libpcap, agree with ``tcpdump -r`` three ways.

For every expression of the corpus (:mod:`bpf_corpus`, ≥ 40 expressions over ~50
frames built with scapy, including VLAN/QinQ, IPv6, fragments, options and truncated
frames) the frames tcpdump prints must be exactly the frames accepted by:

1. the classic BPF interpreter (:func:`efvi.bpf.cbpf.run`),
2. the numpy batch evaluator (:func:`efvi.bpf.vector.run_batch`, the sim adapter's),
3. the eBPF translation (:mod:`efvi.bpf.translate`) loaded into the kernel (the
   verifier accepts it) and run with ``BPF_PROG_TEST_RUN`` on each frame.

The live capture on a veth (the fourth view) is in ``test_capture_integration.py``.
"""

from __future__ import annotations

import ctypes.util
import errno
import os
import shutil
from pathlib import Path

import pytest
from bpf_corpus import EXPRESSIONS, build_frames, tcpdump_matches, write_pcap

from efvi import FilterSpec, SetupError, parse_filter
from efvi.bpf import cbpf, libpcap, syscall, translate, vector
from efvi.bpf.libpcap import ExpressionError
from efvi.filters import FilterKind

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None or not libpcap.available(),
                                reason="needs tcpdump and libpcap0.8 (apt-get install tcpdump)")

FRAMES = build_frames()
XDP_PASS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.pcap"
    write_pcap(path, FRAMES)
    return path


def _can_load_bpf() -> str | None:
    if os.geteuid() != 0:
        return "loading eBPF programs needs root"
    return None


def test_corpus_is_big_enough() -> None:
    assert len(set(EXPRESSIONS)) >= 40
    assert len(FRAMES) >= 40


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_agrees_with_tcpdump(expression: str, corpus: Path) -> None:
    want = tcpdump_matches(corpus, expression)
    prog = libpcap.compile_expression(expression)
    insns = [cbpf.Insn(*i) for i in prog]
    cbpf.check(insns)
    assert [i for i, f in enumerate(FRAMES) if cbpf.run(insns, f)] == want, "interpreter"
    got = vector.run_frames(prog, FRAMES)
    assert [int(i) for i in got.nonzero()[0]] == want, "numpy evaluator"
    reason = _can_load_bpf()
    if reason:
        pytest.skip(reason)
    fd = syscall.prog_load(translate.test_program(prog).assemble(), name="efvi_cbpf_t")
    try:
        # BPF_PROG_TEST_RUN refuses XDP frames shorter than an Ethernet header
        ebpf = [i for i, f in enumerate(FRAMES)
                if len(f) >= 14 and syscall.prog_test_run(fd, f)[0] == XDP_PASS]
    finally:
        os.close(fd)
    assert ebpf == [i for i in want if len(FRAMES[i]) >= 14], "eBPF translation"


# hand-written programs for what libpcap rarely emits: every ALU op with K and X,
# division by X == 0, constants >= 2**31, ret A, ld len, txa/tax, scratch memory
def _alu_programs() -> list[list[tuple[int, int, int, int]]]:
    LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_LEN = 0x20, 0x28, 0x30, 0x80
    LDX_IMM, TAX, TXA, ST, LD_MEM = 0x01, 0x07, 0x87, 0x02, 0x60
    RET_K, RET_A = 0x06, 0x16
    progs: list[list[tuple[int, int, int, int]]] = []
    for op in (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xA0):
        for k, x in ((3, 5), (0xFFFFFFF0, 0), (7, 33)):
            progs.append([(LD_W_ABS, 0, 0, 26), (LDX_IMM, 0, 0, x), (0x04 | op, 0, 0, k),
                          (0x0C | op, 0, 0, 0), (ST, 0, 0, 3), (LD_MEM, 0, 0, 3),
                          (0x15, 1, 0, 0), (RET_A, 0, 0, 0), (RET_K, 0, 0, 0)])
    progs.append([(LD_H_ABS, 0, 0, 12), (0x84, 0, 0, 0), (0x25, 0, 1, 0x80000000),
                  (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)])  # neg, unsigned jgt >= 2**31
    progs.append([(LD_W_ABS, 0, 0, 0), (0x15, 0, 1, 0xFFFFFFFF), (RET_K, 0, 0, 1),
                  (LD_LEN, 0, 0, 0), (0x35, 0, 1, 100), (RET_A, 0, 0, 0), (RET_K, 0, 0, 0)])
    progs.append([(LD_B_ABS, 0, 0, 14), (TAX, 0, 0, 0), (0x50, 0, 0, 0),  # ld [x+0]
                  (TXA, 0, 0, 0), (0x45, 0, 1, 0x40), (RET_K, 0, 0, 9), (RET_K, 0, 0, 0)])
    progs.append([(0xB1, 0, 0, 14), (0x48, 0, 0, 14 + 2), (0x1D, 0, 1, 0),
                  (RET_K, 0, 0, 5), (RET_A, 0, 0, 0)])  # ldx msh, ld [x+k], jeq x
    return progs


@pytest.mark.parametrize("prog", _alu_programs())
def test_hand_written_programs_agree(prog: list[tuple[int, int, int, int]]) -> None:
    insns = [cbpf.Insn(*i) for i in prog]
    ref = [min(cbpf.run(insns, f), len(f)) for f in FRAMES]
    assert [int(v) for v in vector.run_frames(prog, FRAMES)] == ref
    if _can_load_bpf():
        pytest.skip(str(_can_load_bpf()))
    fd = syscall.prog_load(translate.test_program(prog).assemble(), name="efvi_cbpf_t")
    try:
        got = [syscall.prog_test_run(fd, f)[0] == XDP_PASS for f in FRAMES if len(f) >= 14]
    finally:
        os.close(fd)
    assert got == [bool(r) for r, f in zip(ref, FRAMES) if len(f) >= 14]


def test_ancillary_loads_drop_outside_a_socket() -> None:
    prog = [(0x20, 0, 0, 0xFFFFF000 + cbpf.SKF_AD_PROTOCOL), (0x06, 0, 0, 1)]
    assert not vector.run_frames(prog, FRAMES[:3]).any()
    if _can_load_bpf():
        pytest.skip(str(_can_load_bpf()))
    fd = syscall.prog_load(translate.test_program(prog).assemble(), name="efvi_cbpf_t")
    try:
        assert syscall.prog_test_run(fd, FRAMES[0])[0] != XDP_PASS
    finally:
        os.close(fd)


def test_rejected_expression_carries_libpcaps_message() -> None:
    with pytest.raises(ExpressionError) as ei:
        libpcap.compile_expression("tcp porty 80")
    assert "syntax error" in ei.value.pcap_message and ei.value.errno == errno.EINVAL
    with pytest.raises(ExpressionError):
        FilterSpec.expression("host no.such.host.invalid")


def test_missing_libpcap_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libpcap, "_lib", None)
    monkeypatch.setattr(libpcap, "_SONAMES", ("libpcap-not-here.so.9",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(SetupError) as ei:
        libpcap.compile_expression("tcp")
    assert "libpcap0.8" in str(ei.value)
    assert not libpcap.available()


def test_filter_spec_bpf_and_expression() -> None:
    s = FilterSpec.expression("udp port 53")
    assert s.kind == FilterKind.BPF and not s.sniff_mode and str(s) == "bpf:udp port 53"
    assert s.program == libpcap.compile_expression("udp port 53")
    assert FilterSpec.bpf(s.program) == FilterSpec.bpf([cbpf.Insn(*i) for i in s.program])
    assert FilterSpec.expression("udp port 53", sniff=True).sniff_mode
    assert parse_filter("bpf:udp port 53") == s
    assert parse_filter("bpf:udp port 53,sniff") == s.sniff()
    with pytest.raises(SetupError):
        FilterSpec.bpf([(0x06, 0, 0, 0)]).vlan(3)
    with pytest.raises(SetupError):
        FilterSpec.eth_local("02:00:00:00:00:01").bpf([(0x06, 0, 0, 0)])
    for bad in ([], [(0x28, 0, 0, 12)], [(0x15, 5, 0, 1), (0x06, 0, 0, 0)],
                [(0x60, 0, 0, 1), (0x06, 0, 0, 0)], [("x", 0, 0, 0)]):
        with pytest.raises(SetupError):
            FilterSpec.bpf(bad)  # type: ignore[arg-type]


def test_packet_socket_program_embeds_expressions(corpus: Path) -> None:
    """The packet adapter's socket filter (the expression relocated after its preamble)
    accepts what tcpdump does, on the frames the socket sees unchanged (no outer tag)."""
    from efvi.adapters.packet.filter_prog import compile_filters
    plain = [i for i, f in enumerate(FRAMES)  # (a runt has no EtherType for the preamble)
             if len(f) >= 14 and f[12:14] not in (b"\x81\x00", b"\x88\xa8")]
    for expression in EXPRESSIONS:
        want = [i for i in tcpdump_matches(corpus, expression) if i in plain]
        prog = compile_filters([FilterSpec.expression(expression, sniff=True)], snaplen=4096)
        cbpf.check(prog)
        got = [i for i in plain if cbpf.run(prog, FRAMES[i])]
        assert got == want, expression
    # hand-written programs too: ret A, ja, and scratch words the preamble also uses
    for p in _alu_programs():
        prog = compile_filters([FilterSpec.bpf(p, sniff=True)], snaplen=4096)
        cbpf.check(prog)
        ref = [bool(cbpf.run([cbpf.Insn(*i) for i in p], FRAMES[i])) for i in plain]
        assert [bool(cbpf.run(prog, FRAMES[i])) for i in plain] == ref
    out_only = compile_filters([FilterSpec.expression("ip", sniff=True)], direction="out")
    meta = cbpf.SkbMeta(pkttype=cbpf.PACKET_OUTGOING)
    assert cbpf.run(out_only, FRAMES[0], meta) and not cbpf.run(out_only, FRAMES[0])
    both = compile_filters([FilterSpec.expression("ip", sniff=True)], direction="inout")
    assert cbpf.run(both, FRAMES[0], meta) and cbpf.run(both, FRAMES[0])
