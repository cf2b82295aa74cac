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
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
    BT_EPB,
    BT_IDB,
    BT_ISB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    BYTE_ORDER_MAGIC,
    DEFAULT_SNAPLEN,
    EPB_FLAGS,
    IF_DESCRIPTION,
    IF_FCSLEN,
    IF_FILTER,
    IF_MACADDR,
    IF_NAME,
    IF_OS,
    IF_SPEED,
    IF_TSOFFSET,
    IF_TSRESOL,
    ISB_ENDTIME,
    ISB_FILTERACCEPT,
    ISB_IFDROP,
    ISB_IFRECV,
    ISB_OSDROP,
    ISB_STARTTIME,
    ISB_USRDELIV,
    LINKTYPE_ETHERNET,
    MAX_BLOCK,
    MAX_RECORD,
    OPT_COMMENT,
    SHB_HARDWARE,
    SHB_OS,
    SHB_USERAPPL,
)
from efvi.pcap.record import Interface, InterfaceStats, Record, RecordBatch

__all__ = ["PcapNgReader", "PcapNgWriter", "Section"]

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


@dataclass(slots=True)
class _IfState:
    linktype: int
    snaplen: int
    tsdiv: int
    recv: int | None = None
    drop: int | None = None
    osdrop: int | None = None
    filter_accept: int | None = None
    user_delivered: int | None = None
    stats_ts_ns: int | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    stats_set: bool = False


class PcapNgWriter:
    """Writes a pcapng file: one section (native byte order), IDBs, EPBs, and ISBs at
    close.

    Args:
        dst: a path (``"-"`` for stdout) or a binary file object.
        userappl, os, hardware, comment: SHB options (omitted when None).
        buffer_size, packet_buffered: as for :class:`~efvi.pcap.pcap.PcapWriter`.

    The SHB and every IDB are handed to the OS when written, packets as whole blocks,
    so an interrupted writer leaves a readable file.
    """

    format = "pcapng"

    def __init__(self, dst: PathOrFile, *, userappl: str | None = "efvi",
                 os: str | None = None, hardware: str | None = None,
                 comment: str | None = None, buffer_size: int = 1 << 16,
                 packet_buffered: bool = False) -> None:
        self._sink = Sink(dst, buffer_size=buffer_size, packet_buffered=packet_buffered)
        self._ifs: list[_IfState] = []
        opts: list[tuple[int, bytes]] = []
        for code, text in ((OPT_COMMENT, comment), (SHB_HARDWARE, hardware),
                           (SHB_OS, os), (SHB_USERAPPL, userappl)):
            if text is not None:
                opts.append((code, text.encode()))
        body = struct.pack(_NATIVE + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + pack_options(opts)
        self._block(BT_SHB, body, now=True)
        self._epb = struct.Struct(_NATIVE + "IIIIIII")
        self._u32 = struct.Struct(_NATIVE + "I")
        self._closed = False

    def _block(self, btype: int, body: bytes, now: bool = False) -> None:
        blen = 12 + len(body)
        data = struct.pack(_NATIVE + "II", btype, blen) + body + struct.pack(_NATIVE + "I",
                                                                             blen)
        if now:
            self._sink.write_now(data)
        else:
            self._sink.write(data)

    @property
    def interfaces(self) -> int:
        """How many interfaces have been added."""
        return len(self._ifs)

    def add_interface(self, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN,
                      *, name: str | None = None, description: str | None = None,
                      filter: str | None = None, os: str | None = None,
                      speed: int | None = None, mac: bytes | None = None,
                      tsresol: int = 9, fcslen: int | None = None,
                      options: Sequence[tuple[int, bytes]] = ()) -> int:
        """Write an IDB and return its interface index (0, 1, ...).

        ``tsresol`` is a decimal exponent 0..9 (9 = ns, the default; timestamps are
        floored to the unit). ``filter`` is stored as a libpcap expression
        (``if_filter`` type 0). ``options`` adds raw ``(code, value)`` options.
        """
        if not 0 <= tsresol <= 9:
            raise ValueError("tsresol must be a decimal exponent 0..9 on write")
        opts: list[tuple[int, bytes]] = []
        if name is not None:
            opts.append((IF_NAME, name.encode()))
        if description is not None:
            opts.append((IF_DESCRIPTION, description.encode()))
        if mac is not None:
            opts.append((IF_MACADDR, bytes(mac)))
        if speed is not None:
            opts.append((IF_SPEED, struct.pack(_NATIVE + "Q", speed)))
        opts.append((IF_TSRESOL, bytes([tsresol])))
        if filter is not None:
            opts.append((IF_FILTER, b"\x00" + filter.encode()))
        if os is not None:
            opts.append((IF_OS, os.encode()))
        if fcslen is not None:
            opts.append((IF_FCSLEN, bytes([fcslen])))
        opts.extend(options)
        body = struct.pack(_NATIVE + "HHI", linktype, 0, snaplen) + pack_options(opts)
        self._sink.flush()
        self._block(BT_IDB, body, now=True)
        self._ifs.append(_IfState(linktype, snaplen, 10 ** (9 - tsresol)))
        return len(self._ifs) - 1

    def _state(self, ifidx: int) -> _IfState:
        if not 0 <= ifidx < len(self._ifs):
            raise ValueError(f"no interface {ifidx}: call add_interface() first "
                             f"({len(self._ifs)} added)")
        return self._ifs[ifidx]

    def write(self, ts_ns: int, data: bytes | bytearray | memoryview, ifidx: int = 0,
              orig_len: int | None = None, *, flags: int | None = None,
              options: Sequence[tuple[int, bytes]] = ()) -> None:
        """Append one EPB. ``flags`` is ``epb_flags`` (direction in the low 2 bits:
        1 inbound, 2 outbound). Cost: a few integer operations, one ``pack`` and three
        buffer appends; an OS write every ``buffer_size`` bytes. ValueError for an
        interface never added (misuse)."""
        if not 0 <= ifidx < len(self._ifs):
            self._state(ifidx)
        st = self._ifs[ifidx]
        n = len(data)
        olen = n if orig_len is None else orig_len
        if n > st.snaplen:
            data = data[:st.snaplen]
            n = st.snaplen
        units = ts_ns // st.tsdiv if st.tsdiv != 1 else ts_ns
        if st.first_ns is None:
            st.first_ns = ts_ns
        st.last_ns = ts_ns
        pad = -n % 4
        if flags is not None or options:
            opts = list(options)
            if flags is not None:
                opts.insert(0, (EPB_FLAGS, self._u32.pack(flags)))
            tail = pack_options(opts)
        else:
            tail = b""
        blen = 32 + n + pad + len(tail)
        sink = self._sink
        p = sink.pending
        p += self._epb.pack(BT_EPB, blen, ifidx, units >> 32, units & 0xFFFFFFFF, n, olen)
        p += data
        if pad:
            p += b"\0\0\0"[:pad]
        if tail:
            p += tail
        p += self._u32.pack(blen)
        if sink.packet_buffered or len(p) >= sink.buffer_size:
            sink.flush()

    def write_batch(self, frames: npt.ArrayLike, lengths: npt.ArrayLike,
                    ts_ns: npt.ArrayLike, ifidx: int | npt.ArrayLike = 0,
                    orig_lens: npt.ArrayLike | None = None) -> None:
        """Append N EPBs from numpy columns (see
        :meth:`efvi.pcap.pcap.PcapWriter.write_batch`); ``ifidx`` is one index or N.

        Cost: vectorised packing in chunks of 32768 records; no Python work per record.
        """
        fr, ln, ts, ol = as_batch_inputs(frames, lengths, ts_ns, orig_lens)
        n, s = fr.shape
        if n == 0:
            return
        ifx = np.asarray(ifidx, np.int64)
        if ifx.ndim == 0:
            one = self._state(int(ifx))
            ifa: npt.NDArray[np.int64] | int = int(ifx)
            cap = np.minimum(np.minimum(ln, s), one.snaplen)
            units = ts if one.tsdiv == 1 else ts // one.tsdiv
            if one.first_ns is None:
                one.first_ns = int(ts[0])
            one.last_ns = int(ts[-1])
        else:
            ifa = np.broadcast_to(ifx, (n,))
            lo_i, hi_i = int(ifa.min()), int(ifa.max())
            self._state(lo_i)
            self._state(hi_i)
            snap = np.array([st.snaplen for st in self._ifs], np.int64)[ifa]
            tsdiv = np.array([st.tsdiv for st in self._ifs], np.int64)[ifa]
            cap = np.minimum(np.minimum(ln, s), snap)
            units = ts // tsdiv
            for i in np.flatnonzero(np.bincount(ifa)).tolist():
                sel = ts[ifa == i]
                st = self._ifs[i]
                if st.first_ns is None:
                    st.first_ns = int(sel[0])
                st.last_ns = int(sel[-1])
        dt = np.dtype(_NATIVE + "u4")
        for a in range(0, n, WRITE_CHUNK):
            b = min(n, a + WRITE_CHUNK)
            c = cap[a:b]
            w = int(c.max(initial=0))
            wp = w + (-w % 4)
            blen = 32 + c + (-c % 4)
            hdr = np.empty((b - a, 7), dt)
            hdr[:, 0] = BT_EPB
            hdr[:, 1] = blen
            hdr[:, 2] = ifa if isinstance(ifa, int) else ifa[a:b]
            hdr[:, 3] = units[a:b] >> 32
            hdr[:, 4] = units[a:b] & 0xFFFFFFFF
            hdr[:, 5] = c
            hdr[:, 6] = ol[a:b]
            self._sink.write_now(pack_rows(hdr.view(np.uint8), fr[a:b, :w], c, wp,
                                           trailer=blen.astype(np.uint32)).data)

    def set_stats(self, ifidx: int, recv: int | None = None, drop: int | None = None, *,
                  osdrop: int | None = None, filter_accept: int | None = None,
                  user_delivered: int | None = None, ts_ns: int | None = None) -> None:
        """Record counters for ``ifidx``; they are written as an ISB at :meth:`close`
        (``isb_ifrecv``, ``isb_ifdrop``, ...; ``isb_starttime``/``isb_endtime`` are the
        first and last packet timestamps written for the interface). The ISB timestamp
        is ``ts_ns`` or, without one, the last packet timestamp (the writer reads no
        clock)."""
        st = self._state(ifidx)
        st.recv, st.drop, st.osdrop = recv, drop, osdrop
        st.filter_accept, st.user_delivered = filter_accept, user_delivered
        st.stats_ts_ns = ts_ns
        st.stats_set = True

    def _write_isbs(self) -> None:
        q = _NATIVE + "Q"
        for idx, st in enumerate(self._ifs):
            if not st.stats_set:
                continue
            opts: list[tuple[int, bytes]] = []
            for code, t in ((ISB_STARTTIME, st.first_ns), (ISB_ENDTIME, st.last_ns)):
                if t is not None:
                    u = t // st.tsdiv
                    opts.append((code, struct.pack(_NATIVE + "II", u >> 32, u & 0xFFFFFFFF)))
            for code, v in ((ISB_IFRECV, st.recv), (ISB_IFDROP, st.drop),
                            (ISB_FILTERACCEPT, st.filter_accept), (ISB_OSDROP, st.osdrop),
                            (ISB_USRDELIV, st.user_delivered)):
                if v is not None:
                    opts.append((code, struct.pack(q, v)))
            t = st.stats_ts_ns if st.stats_ts_ns is not None else (st.last_ns or 0)
            u = t // st.tsdiv
            body = struct.pack(_NATIVE + "III", idx, u >> 32, u & 0xFFFFFFFF) + \
                pack_options(opts)
            self._block(BT_ISB, body)

    def flush(self) -> None:
        """Hand everything written so far to the OS."""
        self._sink.flush()

    def close(self) -> None:
        """Write the ISBs (for interfaces given :meth:`set_stats`), flush and close."""
        if self._closed:
            return
        self._closed = True
        try:
            self._write_isbs()
        finally:
            self._sink.close()

    def __enter__(self) -> PcapNgWriter:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
