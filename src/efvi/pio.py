"""Programmed I/O areas (``ef_pio``): frames staged ahead, sent with ``transmit_pio``."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from efvi.memory import MemoryRegion


class PioRegion:
    """A VI's programmed-I/O area: stage frames ahead, send them with ``transmit_pio``.

    ``copy(offset, data)`` is ``ef_pio_memcpy``; a staged frame must not be rewritten
    until its TX completion has been unbundled.
    """

    def __init__(self, mv: memoryview, dma_addr: int, size: int,
                 keep: "MemoryRegion | None") -> None:
        self.mv = mv
        self.dma_addr = dma_addr
        self.size = size
        self._keep = keep

    def copy(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Copy ``data`` to ``offset``; 0 or -EINVAL (out of range)."""
        n = len(data)
        if offset < 0 or offset + n > self.size:
            return -errno.EINVAL
        self.mv[offset:offset + n] = data
        return 0
