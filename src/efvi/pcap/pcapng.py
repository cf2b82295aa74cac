"""pcapng files (draft-ietf-opsawg-pcapng): sections, interfaces, packets, statistics.

Block framing: ``type u32 | total_length u32 | body (padded to 32 bits) |
total_length u32``. Read: SHB (either byte order; several sections, each with its own
byte order and interfaces), IDB (``if_tsresol`` any power of 10 or 2, ``if_tsoffset``),
EPB, SPB, the obsolete PB, ISB; other block types (NRB, DSB, custom, unknown) are
skipped by length and counted. Options are kept as ``(code, bytes)`` pairs.

Write: native byte order, one section, IDBs with ``if_tsresol = 9`` (ns), EPBs, and at
:meth:`PcapNgWriter.close` one ISB per interface whose counters were given with
:meth:`PcapNgWriter.set_stats`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from efvi.errors import FormatError
from efvi.pcap._batch import (
    gather_u32,
    run_length,
    runs_to_offsets,
)
from efvi.pcap._io import PathOrFile, ReaderBase, Source, open_input
from efvi.pcap.constants import (
    BT_EPB,
    BT_IDB,
    BT_ISB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    BYTE_ORDER_MAGIC,
    IF_DESCRIPTION,
    IF_FCSLEN,
    IF_NAME,
    IF_TSOFFSET,
    IF_TSRESOL,
    ISB_ENDTIME,
    ISB_FILTERACCEPT,
    ISB_IFDROP,
    ISB_IFRECV,
    ISB_OSDROP,
    ISB_STARTTIME,
    ISB_USRDELIV,
    MAX_BLOCK,
    MAX_RECORD,
)
from efvi.pcap.record import Interface, InterfaceStats, Record, RecordBatch

from efvi.pcap.pcapng_blocks import (_TS_LIMIT, Section, _new, pack_options,
                                     parse_options)
from efvi.pcap.pcapng_writer import PcapNgWriter

__all__ = ["PcapNgReader", "PcapNgWriter", "Section", "pack_options", "parse_options"]


class PcapNgReader(ReaderBase):
    """Streaming pcapng reader (constant memory).

    Iterate for :class:`Record` objects or call :meth:`read_batch` (do not mix them
    on one reader). ``sections``, ``interfaces`` (the current section's) and ``stats``
    (ISBs seen so far) grow as the file is read. Every complete record before a
    fault is delivered, then :class:`~efvi.errors.FormatError` names the file offset.
    """

    format = "pcapng"

    def __init__(self, src: PathOrFile, *, _source: Source | None = None) -> None:
        if _source is None:
            f, path, self._own = open_input(src)
            _source = Source(f, path)
        else:
            self._own = True
        self._src = _source
        self.sections: list[Section] = []
        self.stats: list[InterfaceStats] = []
        #: block type -> number of blocks skipped (NRB, DSB, custom, unknown)
        self.skipped: dict[int, int] = {}
        self._fault: FormatError | None = None
        s = _source
        if not s.fill(12):
            n = len(s.buf) - s.pos
            raise s.error("empty file" if n == 0 else
                          f"truncated section header block ({n} bytes)", 0)
        if struct.unpack_from("<I", s.buf, s.pos)[0] != BT_SHB:
            raise s.error("not a pcapng file: the first block is not a section header", 0)
        blk = self._next_block()
        assert blk is not None and blk[0] == BT_SHB
        self._handle(*blk)

    @property
    def interfaces(self) -> list[Interface]:
        return self.sections[-1].interfaces

    @property
    def byte_order(self) -> str:
        return self.sections[-1].byte_order

    # Blocks --------------------------------------------------------------------------

    def _next_block(self) -> tuple[int, bytes, int, int] | None:
        """(type, buffer, start, offset) of the next whole block, validated; the block
        is ``buffer[start:start + length]``. None at a clean end of file."""
        s = self._src
        if not s.fill(12):
            left = len(s.buf) - s.pos
            if left == 0:
                return None
            raise s.error(f"truncated block header ({left} bytes)", s.offset)
        buf, pos = s.buf, s.pos
        btype = struct.unpack_from("<I", buf, pos)[0]
        if btype == BT_SHB:
            magic = buf[pos + 8:pos + 12]
            if magic == struct.pack("<I", BYTE_ORDER_MAGIC):
                bo = "<"
            elif magic == struct.pack(">I", BYTE_ORDER_MAGIC):
                bo = ">"
            else:
                raise s.error(f"section header with bad byte-order magic {magic.hex()}",
                              s.offset)
        else:
            bo = self.byte_order
            btype = struct.unpack_from(bo + "I", buf, pos)[0]
        blen = struct.unpack_from(bo + "I", buf, pos + 4)[0]
        self._check_len(btype, blen, s.offset)
        if not s.fill(blen):
            left = len(s.buf) - s.pos
            raise s.error(f"truncated block (type {btype:#x}): {left} of {blen} bytes",
                          s.offset)
        buf, pos = s.buf, s.pos
        trailer = struct.unpack_from(bo + "I", buf, pos + blen - 4)[0]
        if trailer != blen:
            raise s.error(f"block length {blen} does not match its trailer {trailer} "
                          f"(type {btype:#x})", s.offset)
        off = s.offset
        s.pos += blen
        return btype, buf, pos, off

    def _check_len(self, btype: int, blen: int, offset: int) -> None:
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise self._src.error(f"bad block length {blen} (type {btype:#x})", offset)

    def _handle(self, btype: int, buf: bytes, pos: int, off: int) -> Record | None:
        """Interpret one block; return a Record for packet blocks."""
        path = self._src.path
        if btype == BT_SHB:
            bo = "<" if buf[pos + 8:pos + 12] == struct.pack("<I", BYTE_ORDER_MAGIC) else ">"
            blen = struct.unpack_from(bo + "I", buf, pos + 4)[0]
            if blen < 28:
                raise self._src.error(f"section header block of {blen} bytes", off)
            major, minor, slen = struct.unpack_from(bo + "HHq", buf, pos + 12)
            if major != 1:
                raise self._src.error(f"pcapng version {major}.{minor} not supported", off)
            opts = parse_options(buf, pos + 24, pos + blen - 4, bo, off - pos, path)
            self.sections.append(Section(len(self.sections), off, bo, (major, minor), slen,
                                         opts))
            return None
        bo = self.byte_order
        blen = struct.unpack_from(bo + "I", buf, pos + 4)[0]
        body_end = pos + blen - 4
        if btype == BT_IDB:
            if blen < 20:
                raise self._src.error(f"interface description block of {blen} bytes", off)
            linktype, _res, snaplen = struct.unpack_from(bo + "HHI", buf, pos + 8)
            opts = parse_options(buf, pos + 16, body_end, bo, off - pos, path)
            iface = Interface(linktype, snaplen, 6, section=len(self.sections) - 1,
                              options=opts)
            for code, v in opts:
                if code == IF_TSRESOL and v:
                    iface.tsresol = v[0]
                elif code == IF_TSOFFSET and len(v) == 8:
                    iface.tsoffset_s = struct.unpack(bo + "q", v)[0]
                elif code == IF_NAME:
                    iface.name = v.decode("utf-8", "replace").rstrip("\0")
                elif code == IF_DESCRIPTION:
                    iface.description = v.decode("utf-8", "replace").rstrip("\0")
                elif code == IF_FCSLEN and v:
                    iface.fcslen = v[0]
            if iface.tsresol & 0x7F > 63:
                raise self._src.error(f"if_tsresol {iface.tsresol:#x} out of range", off)
            self.interfaces.append(iface)
            return None
        if btype == BT_EPB or btype == BT_PB:
            if blen < 32:
                raise self._src.error(f"packet block of {blen} bytes", off)
            if btype == BT_EPB:
                ifid, hi, lo, caplen, olen = struct.unpack_from(bo + "IIIII", buf, pos + 8)
            else:
                ifid, _drops, hi, lo, caplen, olen = struct.unpack_from(bo + "HHIIII", buf,
                                                                        pos + 8)
            iface = self._iface(ifid, off)
            self._check_caplen(caplen, iface, off)
            dend = pos + 28 + caplen
            if dend > body_end:
                raise self._src.error(f"captured length {caplen} exceeds its block of "
                                      f"{blen} bytes", off)
            ostart = dend + (-caplen % 4)
            opts = parse_options(buf, ostart, body_end, bo, off - pos, path) \
                if ostart < body_end else ()
            ts = iface.to_ns(hi << 32 | lo)
            if not -_TS_LIMIT <= ts < _TS_LIMIT:
                raise self._src.error(f"timestamp {ts} ns is beyond the int64 range "
                                      "(years 1678..2262)", off)
            return Record(ts, buf[pos + 28:dend], olen, ifid, opts)
        if btype == BT_SPB:
            if blen < 16:
                raise self._src.error(f"simple packet block of {blen} bytes", off)
            iface = self._iface(0, off)
            olen = struct.unpack_from(bo + "I", buf, pos + 8)[0]
            caplen = min(olen, blen - 16)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            if caplen > MAX_RECORD:
                raise self._src.error(f"record length {caplen} is absurd (> {MAX_RECORD})",
                                      off)
            return Record(0, buf[pos + 12:pos + 12 + caplen], olen, 0, ())
        if btype == BT_ISB:
            if blen < 24:
                raise self._src.error(f"interface statistics block of {blen} bytes", off)
            ifid, hi, lo = struct.unpack_from(bo + "III", buf, pos + 8)
            iface = self._iface(ifid, off)
            opts = parse_options(buf, pos + 20, body_end, bo, off - pos, path)
            vals: dict[int, int] = {}
            for code, v in opts:
                if len(v) == 8:
                    if code in (ISB_STARTTIME, ISB_ENDTIME):
                        h, lw = struct.unpack(bo + "II", v)
                        vals[code] = iface.to_ns(h << 32 | lw)
                    else:
                        vals[code] = struct.unpack(bo + "Q", v)[0]
            self.stats.append(InterfaceStats(
                len(self.sections) - 1, ifid, iface.to_ns(hi << 32 | lo),
                vals.get(ISB_IFRECV), vals.get(ISB_IFDROP), vals.get(ISB_OSDROP),
                vals.get(ISB_FILTERACCEPT), vals.get(ISB_USRDELIV),
                vals.get(ISB_STARTTIME), vals.get(ISB_ENDTIME), opts))
            return None
        self.skipped[btype] = self.skipped.get(btype, 0) + 1
        return None

    def _iface(self, ifid: int, off: int) -> Interface:
        ifaces = self.interfaces
        if ifid >= len(ifaces):
            raise self._src.error(f"packet for interface {ifid}, but the section has "
                                  f"{len(ifaces)} interface(s)", off)
        return ifaces[ifid]

    def _check_caplen(self, caplen: int, iface: Interface, off: int) -> None:
        if caplen > MAX_RECORD:
            raise self._src.error(f"record length {caplen} is absurd (> {MAX_RECORD})", off)
        if iface.snaplen and caplen > iface.snaplen:
            raise self._src.error(f"record length {caplen} exceeds the snapshot length "
                                  f"{iface.snaplen}", off)

    # Per-record path -----------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        """Records (EPB, SPB, PB) in file order, all sections.

        Cost per EPB without options on an ns interface: two ``unpack_from``, one
        slice copy of the frame and one tuple; other blocks take the general path.
        """
        src = self._src
        new = _new
        rec_t = Record
        while True:
            bo = self.byte_order
            fixed = struct.Struct(bo + "IIIIIII").unpack_from
            u32 = struct.Struct(bo + "I").unpack_from
            ifaces = self.interfaces
            fast = [i.tsresol == 9 and i.tsoffset_s == 0 for i in ifaces]
            snaps = [i.snaplen or MAX_RECORD for i in ifaces]
            nif = len(ifaces)
            buf = src.buf
            pos = src.pos
            end = len(buf)
            # Fast loop: EPBs without options on ns interfaces, wholly in the buffer.
            while pos + 28 <= end:
                btype, blen, ifid, hi, lo, caplen, olen = fixed(buf, pos)
                if btype != BT_EPB or ifid >= nif or not fast[ifid] or hi >= 0x80000000 or \
                        caplen > snaps[ifid] or caplen > MAX_RECORD or \
                        blen != 32 + caplen + (-caplen % 4) or pos + blen > end or \
                        u32(buf, pos + blen - 4)[0] != blen:
                    break
                yield new(rec_t, (hi << 32 | lo, buf[pos + 28:pos + 28 + caplen], olen,
                                  ifid, ()))
                pos += blen
            src.pos = pos
            blk = self._next_block()
            if blk is None:
                return
            rec = self._handle(*blk)
            if rec is not None:
                yield rec

    # Batch path ------------------------------------------------------------------------

    def read_batch(self, max_records: int = 65536) -> RecordBatch | None:
        """Up to ``max_records`` packet records as numpy columns, or None at the end.

        Runs of option-less EPBs of one length on ns interfaces are found with one
        vectorised comparison per run; every other block takes the per-block path.
        A fault is raised on the call after the last good batch.
        """
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault
        src = self._src
        while True:
            bo = self.byte_order
            little = bo == "<"
            fixed = struct.Struct(bo + "IIIIIII").unpack_from
            u32 = struct.Struct(bo + "I").unpack_from
            ifaces = self.interfaces
            fast = [i.tsresol == 9 and i.tsoffset_s == 0 for i in ifaces]
            snaps = [i.snaplen or MAX_RECORD for i in ifaces]
            nif = len(ifaces)
            buf = src.buf
            pos = src.pos
            end = len(buf)
            runs: list[tuple[int, int, int]] = []
            count = 0
            prev = -1
            while count < max_records and pos + 28 <= end:
                btype, blen, ifid, hi, lo, caplen, olen = fixed(buf, pos)
                if btype != BT_EPB or ifid >= nif or not fast[ifid] or hi >= 0x80000000 or \
                        caplen > snaps[ifid] or caplen > MAX_RECORD or \
                        blen != 32 + caplen + (-caplen % 4) or pos + blen > end or \
                        u32(buf, pos + blen - 4)[0] != blen:
                    break
                if blen == prev:
                    k = min((end - pos) // blen, max_records - count)
                    if k > 4:
                        # Same type, length, interface and caplen in every block of
                        # the run: compare bytes 0..8 and 20..24 (caplen), trailer.
                        m = run_length(buf, pos, blen, k, 0, buf[pos:pos + 4])
                        m = min(m, run_length(buf, pos, blen, m, 4, buf[pos + 4:pos + 8]))
                        m = min(m, run_length(buf, pos, blen, m, 8, buf[pos + 8:pos + 12]))
                        m = min(m, run_length(buf, pos, blen, m, 20, buf[pos + 20:pos + 24]))
                        m = min(m, run_length(buf, pos, blen, m, blen - 4,
                                              buf[pos + 4:pos + 8]))
                        runs.append((pos, blen, m))
                        count += m
                        pos += m * blen
                        continue
                runs.append((pos, blen, 1))
                count += 1
                pos += blen
                prev = blen
            src.pos = pos
            if count:
                return self._columns(buf, runs, little)
            # The next block is not a plain EPB (or not wholly here): general path.
            blk = self._next_block()
            if blk is None:
                return None
            rec = self._handle(*blk)
            if rec is not None:
                data = np.frombuffer(rec.data, np.uint8)
                return RecordBatch(np.array([rec.ts_ns], np.int64),
                                   np.array([len(rec.data)], np.uint32),
                                   np.array([rec.orig_len], np.uint32),
                                   np.array([rec.ifidx], np.uint32),
                                   np.zeros(1, np.int64), data)

    def _columns(self, buf: bytes, runs: list[tuple[int, int, int]],
                 little: bool) -> RecordBatch:
        arr = np.frombuffer(buf, np.uint8)
        offs = runs_to_offsets(runs)
        ifid = gather_u32(arr, offs + 8, little)
        hi = gather_u32(arr, offs + 12, little)
        lo = gather_u32(arr, offs + 16, little)
        caplen = gather_u32(arr, offs + 20, little)
        olen = gather_u32(arr, offs + 24, little)
        return RecordBatch(hi << 32 | lo, caplen.astype(np.uint32), olen.astype(np.uint32),
                           ifid.astype(np.uint32), offs + 28, arr)
