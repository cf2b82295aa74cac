"""What the readers produce: one :class:`Record` per packet, or a :class:`RecordBatch`
of numpy columns.

Timestamps are ``int`` nanoseconds since the epoch everywhere (a float cannot hold
them: 53 bits give ~240 ns granularity today).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Interface", "InterfaceStats", "Record", "RecordBatch"]


class Record(NamedTuple):
    """One packet record.

    .. attribute:: ts_ns
       int nanoseconds since the epoch (0 for a pcapng simple packet block).
    .. attribute:: data
       the captured bytes (``len(data)`` is the capture length).
    .. attribute:: orig_len
       the length of the packet on the wire.
    .. attribute:: ifidx
       interface index in the section (always 0 in classic pcap).
    .. attribute:: options
       pcapng packet-block options as ``(code, value bytes)`` pairs, in file order.
    """

    ts_ns: int
    data: bytes
    orig_len: int
    ifidx: int = 0
    options: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """N records as columns. Frame ``i`` is ``buf[data_offset[i]:data_offset[i] +
    caplen[i]]``; :meth:`frames` makes the 2-D (N, W) form the classifier and the
    software NIC take.

    .. attribute:: ts_ns
       int64 ns since the epoch.
    .. attribute:: caplen, orig_len
       uint32.
    .. attribute:: ifidx
       uint32 interface index (0 for classic pcap).
    .. attribute:: data_offset
       int64 offsets into ``buf``.
    .. attribute:: buf
       uint8 array holding the frames (owned by the batch, not by the reader).
    """

    ts_ns: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.uint32]
    orig_len: npt.NDArray[np.uint32]
    ifidx: npt.NDArray[np.uint32]
    data_offset: npt.NDArray[np.int64]
    buf: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def frame(self, i: int) -> memoryview:
        """Frame ``i`` as a zero-copy view into :attr:`buf`."""
        off = int(self.data_offset[i])
        return self.buf.data[off:off + int(self.caplen[i])]

    def frames(self, width: int | None = None) -> npt.NDArray[np.uint8]:
        """A new (N, W) uint8 array, frame ``i`` left-aligned in row ``i`` and zero
        padded; ``W`` defaults to the longest caplen. Frames longer than ``W`` are cut
        (``caplen`` still tells the real length). Cost: one vectorised gather of N*W
        bytes."""
        n = len(self)
        w = int(self.caplen.max(initial=0)) if width is None else width
        if n == 0 or w == 0:
            return np.zeros((n, w), np.uint8)
        cols = np.arange(w, dtype=np.int64)
        idx = self.data_offset[:, None] + cols
        np.minimum(idx, self.buf.shape[0] - 1, out=idx)
        out: npt.NDArray[np.uint8] = self.buf[idx]
        out[cols >= self.caplen[:, None].astype(np.int64)] = 0
        return out

    def records(self) -> list[tuple[int, bytes, int, int]]:
        """``(ts_ns, data, orig_len, ifidx)`` per record (allocates; for tests)."""
        return [(int(self.ts_ns[i]), bytes(self.frame(i)), int(self.orig_len[i]),
                 int(self.ifidx[i])) for i in range(len(self))]


@dataclass(slots=True)
class Interface:
    """A capture interface: the pcap file header, or one pcapng IDB.

    .. attribute:: tsresol
       the raw ``if_tsresol`` byte: ``n`` means 10**-n s, ``0x80 | n`` means 2**-n s
       (classic pcap: 6 for µs, 9 for ns files).
    .. attribute:: options
       IDB options as ``(code, value bytes)`` in file order (pcapng only).
    """

    linktype: int
    snaplen: int
    tsresol: int = 9
    name: str | None = None
    description: str | None = None
    tsoffset_s: int = 0
    fcslen: int | None = None
    options: tuple[tuple[int, bytes], ...] = ()
    section: int = 0

    @property
    def units_per_second(self) -> int:
        n = self.tsresol & 0x7F
        return 1 << n if self.tsresol & 0x80 else 10 ** n

    def to_ns(self, units: int) -> int:
        """Timestamp units of this interface -> int ns (exact for 10**-n, n <= 9;
        floored otherwise), plus ``if_tsoffset``."""
        r = self.tsresol
        if r == 9:
            ns = units
        elif r & 0x80:
            ns = (units * 1_000_000_000) >> (r & 0x7F)
        elif r <= 9:
            ns = units * 10 ** (9 - r)
        else:
            ns = units // 10 ** (r - 9)
        return ns + self.tsoffset_s * 1_000_000_000


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    """One pcapng interface statistics block (ISB). Counters absent from the block are
    None; ``options`` keeps every option in file order."""

    section: int
    ifidx: int
    ts_ns: int
    recv: int | None
    drop: int | None
    osdrop: int | None
    filter_accept: int | None
    user_delivered: int | None
    start_ns: int | None
    end_ns: int | None
    options: tuple[tuple[int, bytes], ...]
