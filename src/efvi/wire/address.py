"""Address conversions at the edges: text and ints to wire bytes and back.

Header dataclasses carry addresses in wire form (``bytes`` of 6, 4 or 16); these
helpers accept what users type (``"02:00:00:00:00:01"``, ``"198.18.0.1"``,
``"2001:db8::1"``, ints, :mod:`ipaddress` objects) and convert once, on the control
path.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ip_bytes", "ip_str", "ip4_int", "mac_bytes", "mac_int", "mac_str", "multicast_mac"]

MacLike = str | bytes | bytearray | int
IpLike = str | bytes | bytearray | int | ipaddress.IPv4Address | ipaddress.IPv6Address


def mac_bytes(mac: MacLike) -> bytes:
    """``"aa:bb:cc:dd:ee:ff"`` / ``"aa-bb-…"`` / 6 bytes / 48-bit int -> 6 bytes."""
    if isinstance(mac, int):
        if not 0 <= mac < 1 << 48:
            raise ValueError(f"MAC int out of range: {mac:#x}")
        return mac.to_bytes(6, "big")
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"a MAC is 6 bytes, got {len(mac)}")
        return bytes(mac)
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(mac: bytes | int) -> str:
    """6 bytes or a 48-bit int -> ``"aa:bb:cc:dd:ee:ff"``."""
    b = mac.to_bytes(6, "big") if isinstance(mac, int) else mac
    return ":".join(f"{x:02x}" for x in b)


def mac_int(mac: MacLike) -> int:
    """Any MAC form -> the 48-bit int the classifier's ``dst_mac`` column holds."""
    return int.from_bytes(mac_bytes(mac), "big")


def ip_bytes(addr: IpLike, version: int | None = None) -> bytes:
    """An IPv4/IPv6 address in any form -> 4 or 16 wire bytes.

    An ``int`` is IPv4 unless ``version=6`` or it does not fit in 32 bits.
    """
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) not in (4, 16):
            raise ValueError(f"an IP address is 4 or 16 bytes, got {len(addr)}")
        return bytes(addr)
    if isinstance(addr, int):
        if version == 6 or addr >= 1 << 32:
            return ipaddress.IPv6Address(addr).packed
        return ipaddress.IPv4Address(addr).packed
    if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return addr.packed
    return ipaddress.ip_address(addr).packed


def ip_str(addr: bytes | bytearray | memoryview) -> str:
    """4 or 16 wire bytes -> the usual text form."""
    return str(ipaddress.ip_address(bytes(addr)))


def ip4_int(addr: IpLike) -> int:
    """An IPv4 address -> the host-order int the classifier's ``src_ip4`` column holds."""
    b = ip_bytes(addr)
    if len(b) != 4:
        raise ValueError("not an IPv4 address")
    return int.from_bytes(b, "big")


def multicast_mac(group: IpLike) -> bytes:
    """The Ethernet MAC of an IPv4 multicast group: 01:00:5e + its low 23 bits (RFC 1112)."""
    g = int(ipaddress.IPv4Address(bytes(group) if isinstance(group, bytearray) else group))
    return bytes([0x01, 0x00, 0x5E, (g >> 16) & 0x7F, (g >> 8) & 0xFF, g & 0xFF])
