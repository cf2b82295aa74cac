"""The I/O shells around the codecs (private): a chunked read buffer and a write sink.

Readers hold at most one chunk plus one record in memory (constant memory for files
of any size); writers hand whole records to the OS, so a process killed at any point
leaves a file whose complete records all read back (at worst the last record is cut,
which a reader reports as a truncated record *after* delivering the others).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self

from efvi.errors import FormatError

if TYPE_CHECKING:
    from efvi.pcap.record import RecordBatch

PathOrFile = str | os.PathLike[str] | BinaryIO

CHUNK = 1 << 20


def open_input(src: PathOrFile) -> tuple[BinaryIO, str | None, bool]:
    """(file, path-for-messages, we-own-it). ``"-"`` is stdin."""
    if isinstance(src, (str, os.PathLike)):
        p = os.fspath(src)
        if p == "-":
            import sys
            return sys.stdin.buffer, "<stdin>", False
        return open(p, "rb", buffering=0), p, True
    return src, getattr(src, "name", None) if isinstance(getattr(src, "name", None), str) \
        else None, False


class Source:
    """A read buffer over a binary file: ``buf[pos:]`` is unread, ``base`` is the file
    offset of ``buf[0]``. :meth:`fill` keeps at least ``n`` unread bytes available,
    dropping what was consumed (so memory stays at one chunk plus one record)."""

    __slots__ = ("f", "path", "buf", "base", "pos", "chunk", "eof")

    def __init__(self, f: BinaryIO, path: str | None, chunk: int = CHUNK) -> None:
        self.f = f
        self.path = path
        self.buf = b""
        self.base = 0
        self.pos = 0
        self.chunk = chunk
        self.eof = False

    @property
    def offset(self) -> int:
        """File offset of the next unread byte."""
        return self.base + self.pos

    def fill(self, n: int) -> bool:
        """Make ``n`` unread bytes available; False if the file ends first (then all
        remaining bytes are in ``buf[pos:]``)."""
        have = len(self.buf) - self.pos
        if have >= n:
            return True
        parts = [self.buf[self.pos:]] if have else []
        self.base += self.pos
        self.pos = 0
        while have < n and not self.eof:
            data = self.f.read(max(self.chunk, n - have))
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        return have >= n

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (caller checked :meth:`fill`)."""
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def error(self, message: str, offset: int) -> FormatError:
        return FormatError(message, offset=offset, path=self.path)


class Sink:
    """Buffered writer of whole records.

    ``buffer_size`` bytes are gathered before one ``write`` to the OS; with
    ``packet_buffered`` (tcpdump ``-U``) every record is handed over at once.
    """

    __slots__ = ("f", "own", "pending", "buffer_size", "packet_buffered", "closed", "raw")

    def __init__(self, dst: PathOrFile, *, buffer_size: int = 1 << 16,
                 packet_buffered: bool = False) -> None:
        if isinstance(dst, (str, os.PathLike)):
            p = os.fspath(dst)
            if p == "-":
                import sys
                self.f: BinaryIO = sys.stdout.buffer
                self.own = False
            else:
                self.f = open(p, "wb", buffering=0)
                self.own = True
        else:
            self.f = dst
            self.own = False
        self.raw = isinstance(self.f, io.RawIOBase)
        self.pending = bytearray()
        self.buffer_size = buffer_size
        self.packet_buffered = packet_buffered
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.pending += data
        if self.packet_buffered or len(self.pending) >= self.buffer_size:
            self.flush()

    def write_now(self, data: bytes | bytearray | memoryview) -> None:
        """Flush what is pending, then hand ``data`` (large; any C-contiguous buffer,
        e.g. a numpy array's ``.data``) to the OS directly."""
        self.flush()
        view = memoryview(data)
        self._out(view if view.ndim == 1 and view.format == "B" else view.cast("B"))
        if not self.raw:
            self.f.flush()

    def _out(self, view: memoryview) -> None:
        while len(view):
            n = self.f.write(view)
            if n is None:  # non-blocking raw stream that would block: retry
                continue
            view = view[n:]

    def flush(self) -> None:
        """Hand the pending records to the OS (the buffer object is reused)."""
        p = self.pending
        if p:
            n = self.f.write(p)
            if n is None or n < len(p):  # a short write: finish it
                self._out(memoryview(bytes(p[n or 0:])))
            p.clear()
        if not self.raw:
            self.f.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            if self.own:
                self.f.close()


class ReaderBase:
    """What the pcap and pcapng readers share: batch iteration, close, ``with``.

    A reader sets ``_src`` (its :class:`Source`) and ``_own`` (whether it opened the
    file) and implements ``read_batch``.
    """

    _src: Source
    _own: bool

    def read_batch(self, max_records: int = 65536) -> "RecordBatch | None":
        raise NotImplementedError

    def batches(self, max_records: int = 65536) -> Iterator["RecordBatch"]:
        """:meth:`read_batch` until the end of the file."""
        while (b := self.read_batch(max_records)) is not None:
            yield b

    def close(self) -> None:
        if self._own:
            self._src.f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
