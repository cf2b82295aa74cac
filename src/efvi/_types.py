"""Plain data shared across layers (base layer: imports nothing from efvi).

:class:`InterfaceInfo` is made by :mod:`efvi.netutil` (support) and by the sim adapter,
returned through the adapter contract and shown by the core's ``Driver.interface``;
living here, none of them imports another layer for it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InterfaceInfo"]


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """Addresses of the interface (or sim port) an adapter drives."""

    name: str
    ifindex: int
    mac: bytes
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    mtu: int = 1500
    driver: str = ""
