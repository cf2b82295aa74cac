"""One line per frame, like ``tcpdump -n``: time (ns), addresses, ports, protocol, length.

Built on efvi's own codecs (:func:`efvi.wire.classify.classify_one`); used by
``efvi capture`` without ``-w``. Pure functions (sans-I/O).
"""

from __future__ import annotations

import socket
import struct
import time

from efvi.wire.classify import classify_one

_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"),
              (0x80, "W"))


def format_packet(ts_ns: int, frame: bytes, wire_len: int, *, outgoing: bool = False) -> str:
    """``HH:MM:SS.nnnnnnnnn`` + a tcpdump ``-n``-style summary from efvi's codecs."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%H:%M:%S", time.localtime(sec)) + f".{ns:09d}"
    return f"{stamp} {'Out ' if outgoing else ''}{describe(frame, wire_len)}"


def describe(frame: bytes, wire_len: int) -> str:
    """What ``tcpdump -n`` would say about a frame (addresses, ports, protocol, length)."""
    info = classify_one(frame)
    vlan = f"vlan {info.vlan_outer}, " if info.vlan_outer >= 0 else ""
    if info.ip_version == 4:
        src, dst = (socket.inet_ntoa(struct.pack("!I", a)) for a in (info.src_ip4,
                                                                     info.dst_ip4))
        fam = "IP"
    elif info.ip_version == 6:
        src, dst = (socket.inet_ntop(socket.AF_INET6, a) for a in (info.src_ip6, info.dst_ip6))
        fam = "IP6"
    elif info.ethertype == 0x0806 and len(frame) >= 42:
        op = int.from_bytes(frame[20:22], "big")
        spa, tpa = socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42])
        if op == 1:
            return f"{vlan}ARP, Request who-has {tpa} tell {spa}, length {wire_len - 14}"
        if op == 2:
            return f"{vlan}ARP, Reply {spa} is-at {frame[22:28].hex(':')}, length {wire_len - 14}"
        return f"{vlan}ARP, op {op}, length {wire_len - 14}"
    else:
        src_mac = info.src_mac.to_bytes(6, "big").hex(":")
        dst_mac = info.dst_mac.to_bytes(6, "big").hex(":")
        return (f"{vlan}{src_mac} > {dst_mac}, ethertype {info.ethertype:#06x}, "
                f"length {wire_len}")
    l4 = info.l4_offset
    if info.is_fragment:
        return f"{vlan}{fam} {src} > {dst}: ip-proto-{info.proto} fragment, length {wire_len}"
    if info.proto in (6, 17) and l4 >= 0 and len(frame) >= l4 + 8:
        head = f"{vlan}{fam} {src}.{info.src_port} > {dst}.{info.dst_port}:"
        plen = max(0, wire_len - info.payload_offset) if info.payload_offset >= 0 else 0
        if info.proto == 17:
            return f"{head} UDP, length {plen}"
        fl = frame[l4 + 13] if len(frame) > l4 + 13 else 0
        flags = "".join(c for bit, c in _TCP_FLAGS if fl & bit) + ("." if fl & 0x10 else "")
        return f"{head} Flags [{flags or 'none'}], length {plen}"
    if info.proto in (1, 58) and l4 >= 0 and len(frame) >= l4 + 2:
        name = "ICMP" if info.proto == 1 else "ICMP6"
        return (f"{vlan}{fam} {src} > {dst}: {name} type {frame[l4]} code {frame[l4 + 1]}, "
                f"length {wire_len - l4}")
    return f"{vlan}{fam} {src} > {dst}: ip-proto-{info.proto}, length {wire_len}"
