"""Classic BPF programs for control protocols of *one* address: what a user-space
station needs so the kernel keeps every other ARP and ICMP frame.

Sans-I/O: each function returns a program (``list[Insn]``) for
:meth:`efvi.filters.FilterSpec.bpf`, which runs it on every adapter (the packet
socket filter, eBPF inside the XDP program, the sim's evaluator); the
:class:`~efvi.filters.FilterSpec` constructors ``arp``, ``icmp_echo`` and
``icmp6_echo_nd`` wrap them. The programs read untagged Ethernet frames (EtherType at
offset 12). On ``packet`` the kernel has already removed an outer VLAN tag, so a
tagged frame matches there as if untagged; on ``xdp`` and ``sim`` tagged frames do
not match.

* :func:`arp_program` — ARP (Ethernet/IPv4) whose target *or* sender protocol address
  is the address: requests for it, replies to it, and anyone else's claim to it (a
  gratuitous ARP, a conflict).
* :func:`icmp_echo_program` — ICMP echo requests to the address (first fragments and
  unfragmented datagrams; IPv4 options allowed).
* :func:`icmp6_echo_nd_program` — ICMPv6 directly after the fixed IPv6 header (no
  extension headers): echo requests to the address, and neighbour solicitations and
  advertisements whose target is the address (sent to it, to its solicited-node group
  or to all nodes).
"""

from __future__ import annotations

from efvi.bpf.cbpf import (
    ACCEPT,
    BPF_B,
    BPF_H,
    BPF_LDX,
    BPF_MSH,
    BPF_W,
    Asm,
    Insn,
    check,
)

__all__ = ["arp_program", "icmp6_echo_nd_program", "icmp_echo_program"]

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


def _finish(a: Asm) -> list[Insn]:
    a.label("hit")
    a.ret(ACCEPT)
    a.label("miss")
    a.ret(0)
    prog = a.resolve()
    check(prog)
    return prog


def _words(a: Asm, offset: int, value: bytes, miss: str, last: str | int = 0) -> None:
    """Compare ``len(value)`` bytes at ``offset`` word by word: a mismatch jumps to
    ``miss``; a match of the last word goes to ``last`` (default: fall through)."""
    for i in range(0, len(value), 4):
        a.ld_abs(BPF_W, offset + i)
        a.jeq(int.from_bytes(value[i:i + 4], "big"), last if i + 4 >= len(value) else 0, miss)


def arp_program(ip4: bytes) -> list[Insn]:
    """ARP frames whose target or sender protocol address is ``ip4`` (4 bytes)."""
    if len(ip4) != 4:
        raise ValueError("an IPv4 address is 4 bytes")
    want = int.from_bytes(ip4, "big")
    a = Asm()
    a.ld_abs(BPF_H, 12)
    a.jeq(ETH_P_ARP, 0, "miss")
    a.ld_abs(BPF_W, 14)  # htype 1, ptype 0x0800
    a.jeq(0x00010800, 0, "miss")
    a.ld_abs(BPF_H, 18)  # hlen 6, plen 4
    a.jeq(0x0604, 0, "miss")
    a.ld_abs(BPF_W, 38)  # target protocol address
    a.jeq(want, "hit", 0)
    a.ld_abs(BPF_W, 28)  # sender protocol address
    a.jeq(want, "hit", "miss")
    return _finish(a)


def icmp_echo_program(ip4: bytes) -> list[Insn]:
    """ICMP echo requests to ``ip4`` (not non-first fragments)."""
    if len(ip4) != 4:
        raise ValueError("an IPv4 address is 4 bytes")
    a = Asm()
    a.ld_abs(BPF_H, 12)
    a.jeq(ETH_P_IP, 0, "miss")
    a.ld_abs(BPF_B, 23)  # protocol
    a.jeq(1, 0, "miss")
    a.ld_abs(BPF_W, 30)  # destination
    a.jeq(int.from_bytes(ip4, "big"), 0, "miss")
    a.ld_abs(BPF_H, 20)  # fragment offset
    a.jset(0x1FFF, "miss", 0)
    a.emit(BPF_LDX | BPF_B | BPF_MSH, 14)  # X = 4 * IHL
    a.ld_ind(BPF_B, 14)  # ICMP type
    a.jeq(8, "hit", "miss")
    return _finish(a)


def icmp6_echo_nd_program(ip6: bytes) -> list[Insn]:
    """ICMPv6 echo requests to ``ip6`` and neighbour solicitations/advertisements
    whose target is ``ip6`` (16 bytes)."""
    if len(ip6) != 16:
        raise ValueError("an IPv6 address is 16 bytes")
    a = Asm()
    a.ld_abs(BPF_H, 12)
    a.jeq(ETH_P_IPV6, 0, "miss")
    a.ld_abs(BPF_B, 20)  # next header: ICMPv6 directly
    a.jeq(58, 0, "miss")
    a.ld_abs(BPF_B, 54)  # ICMPv6 type
    a.jeq(128, 0, "nd")
    _words(a, 38, ip6, "miss", "hit")  # echo request: to the address
    a.label("nd")
    a.jeq(135, "target", 0)  # A still holds the type
    a.jeq(136, "target", "miss")
    a.label("target")
    _words(a, 62, ip6, "miss", "hit")  # the ND target address
    return _finish(a)
