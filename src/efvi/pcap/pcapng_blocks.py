"""pcapng building blocks shared by the reader and the writer: sections and options."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from efvi.errors import FormatError
from efvi.pcap.record import Interface

_NATIVE = "<" if sys.byteorder == "little" else ">"
_new = tuple.__new__
Options = tuple[tuple[int, bytes], ...]
#: Packet timestamps must fit int64 ns (RecordBatch.ts_ns); beyond is corrupt input.
_TS_LIMIT = 1 << 63


@dataclass(slots=True)
class Section:
    """One pcapng section: its SHB fields and its interfaces (in IDB order)."""

    index: int
    offset: int
    byte_order: str
    version: tuple[int, int]
    section_length: int
    options: Options
    interfaces: list[Interface] = field(default_factory=list)


def parse_options(body: bytes, start: int, end: int, bo: str, base: int,
                  path: str | None) -> Options:
    """``(code, value)`` pairs from ``body[start:end]`` up to opt_endofopt.

    ``base`` is the file offset of ``body[0]`` (for error messages)."""
    out: list[tuple[int, bytes]] = []
    pos = start
    hdr = struct.Struct(bo + "HH")
    while pos + 4 <= end:
        code, ln = hdr.unpack_from(body, pos)
        if code == 0:
            break
        if pos + 4 + ln > end:
            raise FormatError(f"option {code} of {ln} bytes runs past its block",
                              offset=base + pos, path=path)
        out.append((code, bytes(body[pos + 4:pos + 4 + ln])))
        pos += 4 + ln + (-ln % 4)
    return tuple(out)


def pack_options(options: Iterable[tuple[int, bytes]], bo: str = _NATIVE) -> bytes:
    """Options area bytes (each value padded to 4) ending with opt_endofopt; empty
    when there are no options."""
    out = bytearray()
    for code, value in options:
        out += struct.pack(bo + "HH", code, len(value)) + value + bytes(-len(value) % 4)
    if out:
        out += bytes(4)
    return bytes(out)


def _opt(options: Options, code: int) -> bytes | None:
    for c, v in options:
        if c == code:
            return v
    return None
