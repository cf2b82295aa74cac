"""UDP/IPv4 frames for :mod:`efvi.apps.udp`: address checks, the prepared header
template of one destination, and the offsets and layouts the stack parses and the
send path fills in. Control-path helpers and constants; no VI, no socket."""

from __future__ import annotations

import errno
import ipaddress
import struct

from efvi.constants import PIO_ALIGN
from efvi.errors import SetupError
from efvi.wire.address import multicast_mac
from efvi.wire.checksum import ones_sum

__all__ = ["HDR", "IP4", "PIO_SLOT", "U16", "UDP", "TxTemplate", "check_port", "ip_int",
           "multicast_mac"]

IP4 = struct.Struct("!BxHxxHxBxxII")  # ver/ihl, total length, frag, proto, src, dst
UDP = struct.Struct("!HHH")  # sport, dport, length
U16 = struct.Struct("!H")
HDR = 42  # Ethernet + IPv4 (no options) + UDP
#: one PIO slot: a whole 1500-MTU frame (1514 bytes) rounded to the PIO alignment
PIO_SLOT = (HDR + 1472 + PIO_ALIGN - 1) // PIO_ALIGN * PIO_ALIGN


def ip_int(text: str, what: str) -> int:
    """``text`` as a 32-bit integer; SetupError naming ``what`` when it is no IPv4
    address."""
    try:
        return int(ipaddress.IPv4Address(text))
    except (ipaddress.AddressValueError, ValueError):
        raise SetupError(f"{what} {text!r} is not an IPv4 address", errno=errno.EINVAL,
                         hint="give a dotted quad such as 198.18.0.1") from None


def check_port(port: object, what: str) -> int:
    """``port`` when it is a UDP port number; SetupError naming ``what`` otherwise."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise SetupError(f"{what} {port!r} is not a UDP port", errno=errno.EINVAL,
                         hint="ports are integers 1..65535")
    return port


class TxTemplate:
    """Headers of one destination, prepared once (control path).

    ``hdr`` is the 42-byte Ethernet/IPv4/UDP header with zero lengths and checksums;
    ``ip_sum`` the one's-complement sum of the IPv4 header without its total length
    (added per datagram), ``udp_sum`` that of the pseudo-header and ports (the UDP
    length is added twice per datagram, then the payload)."""

    __slots__ = ("hdr", "ip_sum", "udp_sum")

    def __init__(self, dst_mac: bytes, src_mac: bytes, src: int, dst: int, sport: int,
                 dport: int, ttl: int) -> None:
        eth = dst_mac + src_mac + b"\x08\x00"
        ip = struct.pack("!BBHHHBBHII", 0x45, 0, 0, 0, 0x4000, ttl, 17, 0, src, dst)
        udp = struct.pack("!HHHH", sport, dport, 0, 0)
        self.hdr = eth + ip + udp
        self.ip_sum = ones_sum(ip)  # without the total length (added per datagram)
        # pseudo-header (addresses, protocol) and the ports; the length is added twice
        self.udp_sum = ones_sum(struct.pack("!IIHHHH", src, dst, 17, sport, dport, 0))
