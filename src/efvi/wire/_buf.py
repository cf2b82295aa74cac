"""Shared helpers for the header codecs (private)."""

from __future__ import annotations

from efvi.errors import FormatError

Buffer = bytes | bytearray | memoryview


def need(buf: Buffer, offset: int, size: int, what: str) -> None:
    """Raise :class:`FormatError` at ``offset`` unless ``size`` bytes are there."""
    if offset < 0 or offset + size > len(buf):
        raise FormatError(
            f"{what}: needs {size} bytes, frame has {max(0, len(buf) - offset)}",
            offset=offset,
        )
