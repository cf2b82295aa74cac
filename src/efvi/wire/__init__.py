"""Sans-I/O wire codecs: pure functions over bytes, ints and nanoseconds.

Nothing in this package opens a socket or reads a clock. Header layouts are
precompiled :class:`struct.Struct` objects applied with ``unpack_from``/``pack_into``
to buffers and :class:`memoryview` slices (dpkt's "headers as data", without its
metaclass). One module per concern:

* :mod:`efvi.wire.classify` — batch (numpy) and scalar frame classification.
* :mod:`efvi.wire.ethernet`, :mod:`~efvi.wire.arp`, :mod:`~efvi.wire.ipv4`,
  :mod:`~efvi.wire.ipv6`, :mod:`~efvi.wire.udp`, :mod:`~efvi.wire.tcp`,
  :mod:`~efvi.wire.icmp` — one header each: a frozen dataclass with ``parse`` (raises
  :class:`~efvi.errors.FormatError` with the offset for short or malformed input) and
  ``pack``.
* :mod:`efvi.wire.checksum` — RFC 1071 sums, pseudo-headers, RFC 1624 updates.
* :mod:`efvi.wire.build` — whole frames (UDP, ICMP echo) with correct checksums.
* :mod:`efvi.wire.address`, :mod:`efvi.wire.constants` — conversions and numbers.
"""

from efvi.wire.build import UdpFrameBuilder as UdpFrameBuilder
from efvi.wire.build import udp_frame as udp_frame
from efvi.wire.classify import FrameColumns as FrameColumns
from efvi.wire.classify import FrameInfo as FrameInfo
from efvi.wire.classify import classify as classify
from efvi.wire.classify import classify_one as classify_one

__all__ = ["FrameColumns", "FrameInfo", "UdpFrameBuilder", "classify", "classify_one",
           "udp_frame"]
