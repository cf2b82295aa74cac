"""Classic libpcap files (``pcap-savefile(5)``): read both magics in both byte orders,
write native byte order with nanosecond (default) or microsecond timestamps.

File header (24 bytes): ``magic u32, major u16 (2), minor u16 (4), thiszone i32,
sigfigs u32, snaplen u32, linktype u32`` (the upper bits of the linktype word carry
the FCS length). Record header (16 bytes): ``ts_sec, ts_frac (µs or ns by magic),
incl_len, orig_len``.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from types import TracebackType

import numpy as np
import numpy.typing as npt

from efvi.errors import FormatError
from efvi.pcap._batch import (
    WRITE_CHUNK,
    as_batch_inputs,
    gather_u32,
    pack_rows,
    run_length,
    runs_to_offsets,
)
from efvi.pcap._io import PathOrFile, ReaderBase, Sink, Source, open_input
from efvi.pcap.constants import (
    DEFAULT_SNAPLEN,
    LINKTYPE_ETHERNET,
    MAX_RECORD,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAP_MAGIC_VARIANTS,
)
from efvi.pcap.record import Interface, Record, RecordBatch

__all__ = ["PcapReader", "PcapWriter"]

_NATIVE = "<" if sys.byteorder == "little" else ">"
_new = tuple.__new__


class PcapReader(ReaderBase):
    """Streaming reader of a classic pcap file (constant memory).

    Iterate for :class:`Record` objects, or call :meth:`read_batch` for numpy
    columns; do not mix the two on one reader. Every complete record before a fault
    is delivered, then :class:`~efvi.errors.FormatError` names the file offset.

    .. attribute:: nanosecond
       True for a 0xa1b23c4d file.
    .. attribute:: byte_order
       ``"<"`` or ``">"``, the file's.
    .. attribute:: interfaces
       one :class:`Interface` (linktype, snaplen, tsresol 6 or 9).
    """

    format = "pcap"

    def __init__(self, src: PathOrFile, *, _source: Source | None = None) -> None:
        if _source is None:
            f, path, self._own = open_input(src)
            _source = Source(f, path)
        else:
            self._own = True
        self._src = s = _source
        if not s.fill(24):
            n = len(s.buf) - s.pos
            raise s.error("empty file" if n == 0 else
                          f"truncated pcap file header ({n} of 24 bytes)", 0)
        head = s.take(24)
        magic_le = struct.unpack_from("<I", head)[0]
        magic_be = struct.unpack_from(">I", head)[0]
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            bo, magic = "<", magic_le
        elif magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            bo, magic = ">", magic_be
        else:
            for m in (magic_le, magic_be):
                if m in PCAP_MAGIC_VARIANTS:
                    raise s.error(f"{PCAP_MAGIC_VARIANTS[m]} (magic {m:#010x}) is not "
                                  "supported", 0)
            raise s.error(f"not a pcap file: magic {magic_be:#010x}", 0)
        self.byte_order = bo
        self.nanosecond = magic == PCAP_MAGIC_NS
        (self.version_major, self.version_minor, self.thiszone, self.sigfigs,
         self.snaplen, ltword) = struct.unpack_from(bo + "HHiIII", head, 4)
        self.linktype = ltword & 0xFFFF
        self.fcslen = (ltword >> 28) if ltword & 0x04000000 else None
        self.interfaces = [Interface(self.linktype, self.snaplen,
                                     9 if self.nanosecond else 6, fcslen=self.fcslen)]
        self._hdr = struct.Struct(bo + "IIII")
        self._limit = min(self.snaplen, MAX_RECORD) if self.snaplen else MAX_RECORD
        self._fault: FormatError | None = None

    # Per-record path -----------------------------------------------------------------

    def _bad_len(self, caplen: int, offset: int) -> FormatError:
        why = (f"record length {caplen} exceeds the snapshot length {self.snaplen}"
               if self.snaplen and caplen <= MAX_RECORD else
               f"record length {caplen} is absurd (> {MAX_RECORD})")
        return self._src.error(why, offset)

    def __iter__(self) -> Iterator[Record]:
        """Records in file order. Cost per record: one ``unpack_from``, one slice copy
        of the frame, one tuple; file reads are 1 MiB chunks."""
        src = self._src
        unpack = self._hdr.unpack_from
        limit = self._limit
        mult = 1 if self.nanosecond else 1000
        new = _new
        rec_t = Record
        while True:
            buf = src.buf
            pos = src.pos
            end = len(buf)
            while pos + 16 <= end:
                sec, frac, caplen, olen = unpack(buf, pos)
                if caplen > limit:
                    src.pos = pos
                    raise self._bad_len(caplen, src.offset)
                nxt = pos + 16 + caplen
                if nxt > end:
                    break
                yield new(rec_t, (sec * 1_000_000_000 + frac * mult, buf[pos + 16:nxt],
                                  olen, 0, ()))
                pos = nxt
            src.pos = pos
            need = 16 + unpack(buf, pos)[2] if pos + 16 <= end else 16
            if not src.fill(need):
                left = len(src.buf) - src.pos
                if left == 0:
                    return
                what = "record header" if left < 16 else "record"
                raise src.error(f"truncated {what}: {left} of {need} bytes", src.offset)

    # Batch path ------------------------------------------------------------------------

    def read_batch(self, max_records: int = 65536) -> RecordBatch | None:
        """Up to ``max_records`` records as numpy columns, or None at the end.

        Batches end at 1 MiB chunk boundaries, so they may be shorter than asked. Cost:
        one Python step per run of equal-length records (one per record when lengths
        vary), then ~20 vectorised gathers; frames are not copied (``buf`` holds the
        chunk). A fault is raised on the call after the last good batch.
        """
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault
        src = self._src
        little = self.byte_order == "<"
        u32 = struct.Struct(self.byte_order + "I").unpack_from
        limit = self._limit
        while True:
            buf = src.buf
            pos = src.pos
            end = len(buf)
            runs: list[tuple[int, int, int]] = []
            count = 0
            prev = -1
            while count < max_records and pos + 16 <= end:
                caplen = u32(buf, pos + 8)[0]
                if caplen > limit:
                    self._fault = self._bad_len(caplen, src.base + pos)
                    break
                rec = 16 + caplen
                if pos + rec > end:
                    break
                if rec == prev:
                    k = min((end - pos) // rec, max_records - count)
                    if k > 4:
                        m = run_length(buf, pos, rec, k, 8, buf[pos + 8:pos + 12])
                        runs.append((pos, rec, m))
                        count += m
                        pos += m * rec
                        continue
                runs.append((pos, rec, 1))
                count += 1
                pos += rec
                prev = rec
            src.pos = pos
            if count:
                return self._columns(buf, runs, little)
            if self._fault is not None:
                fault, self._fault = self._fault, None
                raise fault
            need = 16 + u32(buf, pos + 8)[0] if pos + 16 <= end else 16
            if not src.fill(max(need, src.chunk)):
                left = len(src.buf) - src.pos
                if left == 0:
                    return None
                if left >= need:
                    continue
                what = "record header" if left < 16 else "record"
                raise src.error(f"truncated {what}: {left} of {need} bytes", src.offset)

    def _columns(self, buf: bytes, runs: list[tuple[int, int, int]],
                 little: bool) -> RecordBatch:
        arr = np.frombuffer(buf, np.uint8)
        offs = runs_to_offsets(runs)
        sec = gather_u32(arr, offs, little)
        frac = gather_u32(arr, offs + 4, little)
        caplen = gather_u32(arr, offs + 8, little)
        olen = gather_u32(arr, offs + 12, little)
        ts = sec * 1_000_000_000 + (frac if self.nanosecond else frac * 1000)
        return RecordBatch(ts, caplen.astype(np.uint32), olen.astype(np.uint32),
                           np.zeros(offs.shape[0], np.uint32), offs + 16, arr)


class PcapWriter:
    """Writes a classic pcap file in native byte order.

    Args:
        dst: a path (``"-"`` for stdout) or a binary file object.
        linktype: the file's link type (1 = Ethernet).
        snaplen: frames are cut to this many bytes (``orig_len`` keeps the real size).
        nanosecond: write the 0xa1b23c4d magic (default) or 0xa1b2c3d4 (µs; the ns
            timestamps are then floored to µs).
        buffer_size: bytes gathered before one OS write.
        packet_buffered: hand each record to the OS at once (tcpdump ``-U``).

    The file header is written at once, so even an empty capture is a valid file; the
    OS only ever receives whole records (see :mod:`efvi.pcap._io`). Use as a context
    manager, or call :meth:`close`.
    """

    format = "pcap"

    def __init__(self, dst: PathOrFile, *, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = DEFAULT_SNAPLEN, nanosecond: bool = True,
                 buffer_size: int = 1 << 16, packet_buffered: bool = False) -> None:
        if not 0 < snaplen <= 0x7FFFFFFF:
            raise ValueError(f"bad snaplen {snaplen}")
        self._sink = Sink(dst, buffer_size=buffer_size, packet_buffered=packet_buffered)
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._sink.write_now(struct.pack(_NATIVE + "IHHiIII", magic, 2, 4, 0, 0, snaplen,
                                         linktype))
        self._pack = struct.Struct(_NATIVE + "IIII").pack
        self._pending = self._sink.pending  # the sink reuses this buffer for ever
        self._limit = -1 if packet_buffered else buffer_size - 1

    def write(self, ts_ns: int, data: bytes | bytearray | memoryview,
              orig_len: int | None = None) -> None:
        """Append one record. Cost: two integer divisions, one ``pack`` and two buffer
        appends; an OS write every ``buffer_size`` bytes (every record with
        ``packet_buffered``)."""
        n = len(data)
        olen = n if orig_len is None else orig_len
        if n > self.snaplen:
            data = data[:self.snaplen]
            n = self.snaplen
        p = self._pending
        if self.nanosecond:
            p += self._pack(ts_ns // 1_000_000_000, ts_ns % 1_000_000_000, n, olen)
        else:
            p += self._pack(ts_ns // 1_000_000_000, ts_ns % 1_000_000_000 // 1000, n, olen)
        p += data
        if len(p) > self._limit:
            self._sink.flush()

    def write_batch(self, frames: npt.ArrayLike, lengths: npt.ArrayLike,
                    ts_ns: npt.ArrayLike, orig_lens: npt.ArrayLike | None = None) -> None:
        """Append N records from numpy columns: ``frames`` (N, S) uint8 (row ``i``
        holds frame ``i``), ``lengths`` (N,) frame lengths (cut to S and to snaplen),
        ``ts_ns`` (N,) int ns, ``orig_lens`` (N,) wire lengths (default: lengths).

        Cost: vectorised packing in chunks of 32768 records, one OS write per chunk; no
        Python work per record.
        """
        fr, ln, ts, ol = as_batch_inputs(frames, lengths, ts_ns, orig_lens)
        n, s = fr.shape
        cap = np.minimum(np.minimum(ln, s), self.snaplen)
        sec, frac = np.divmod(ts, 1_000_000_000)
        if not self.nanosecond:
            frac //= 1000
        dt = np.dtype(_NATIVE + "u4")
        for a in range(0, n, WRITE_CHUNK):
            b = min(n, a + WRITE_CHUNK)
            c = cap[a:b]
            w = int(c.max(initial=0))
            hdr = np.empty((b - a, 4), dt)
            hdr[:, 0] = sec[a:b]
            hdr[:, 1] = frac[a:b]
            hdr[:, 2] = c
            hdr[:, 3] = ol[a:b]
            self._sink.write_now(pack_rows(hdr.view(np.uint8), fr[a:b, :w], c, w).data)

    def flush(self) -> None:
        """Hand everything written so far to the OS."""
        self._sink.flush()

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
