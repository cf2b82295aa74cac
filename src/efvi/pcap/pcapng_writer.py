"""pcapng writer: native byte order, one section, IDBs with ``if_tsresol = 9`` (ns),
EPBs, and at :meth:`PcapNgWriter.close` one ISB per interface whose counters were given
with :meth:`PcapNgWriter.set_stats` (:mod:`efvi.pcap.pcapng` has the format notes)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt

from efvi.pcap._batch import (
    WRITE_CHUNK,
    as_batch_inputs,
    pack_rows,
)
from efvi.pcap._io import PathOrFile, Sink
from efvi.pcap.constants import (
    BT_EPB,
    BT_IDB,
    BT_ISB,
    BT_SHB,
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
    IF_TSRESOL,
    ISB_ENDTIME,
    ISB_FILTERACCEPT,
    ISB_IFDROP,
    ISB_IFRECV,
    ISB_OSDROP,
    ISB_STARTTIME,
    ISB_USRDELIV,
    LINKTYPE_ETHERNET,
    OPT_COMMENT,
    SHB_HARDWARE,
    SHB_OS,
    SHB_USERAPPL,
)

from efvi.pcap.pcapng_blocks import _NATIVE, pack_options

__all__ = ["PcapNgWriter"]


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
