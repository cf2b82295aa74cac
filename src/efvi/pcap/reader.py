"""Open any capture file: detects classic pcap vs pcapng from the first four bytes.

Both readers stream in constant memory, so a file far larger than RAM is readable
(and ``"-"`` reads stdin).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from efvi.pcap._io import PathOrFile, Source, open_input
from efvi.pcap.constants import BT_SHB, PCAP_MAGIC_NS, PCAP_MAGIC_US, PCAP_MAGIC_VARIANTS
from efvi.pcap.pcap import PcapReader
from efvi.pcap.pcapng import PcapNgReader
from efvi.pcap.record import Record, RecordBatch

__all__ = ["CaptureReader", "open_capture", "read_records", "read_batches"]

CaptureReader = PcapReader | PcapNgReader

_PCAP = {PCAP_MAGIC_US, PCAP_MAGIC_NS, *PCAP_MAGIC_VARIANTS}


def open_capture(src: PathOrFile) -> CaptureReader:
    """A :class:`PcapReader` or :class:`PcapNgReader` for ``src`` (path, ``"-"`` or a
    binary file object; non-seekable streams work). Raises FormatError at offset 0
    when the file is neither."""
    f, path, own = open_input(src)
    s = Source(f, path)
    try:
        s.fill(4)
        head = s.buf[s.pos:s.pos + 4]
        if len(head) == 4 and struct.unpack("<I", head)[0] == BT_SHB:
            return PcapNgReader(src, _source=s) if own else _unowned(PcapNgReader, src, s)
        if len(head) < 4 or struct.unpack("<I", head)[0] in _PCAP or \
                struct.unpack(">I", head)[0] in _PCAP:
            return PcapReader(src, _source=s) if own else _unowned(PcapReader, src, s)
        raise s.error(f"not a pcap or pcapng file (first bytes {head.hex()})", 0)
    except BaseException:
        if own:
            f.close()
        raise


def _unowned(cls: type[PcapReader] | type[PcapNgReader], src: PathOrFile,
             s: Source) -> CaptureReader:
    r = cls(src, _source=s)
    r._own = False
    return r


def read_records(src: PathOrFile) -> Iterator[Record]:
    """Every record of a pcap or pcapng file, streamed; closes the file at the end."""
    with open_capture(src) as r:
        yield from r


def read_batches(src: PathOrFile, max_records: int = 65536) -> Iterator[RecordBatch]:
    """Every record as numpy :class:`RecordBatch` columns, streamed."""
    with open_capture(src) as r:
        yield from r.batches(max_records)
