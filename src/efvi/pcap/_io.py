"""The I/O shells around the codecs (private): a chunked read buffer and a write sink.

Readers hold at most one chunk plus one record in memory (constant memory for files
of any size); writers hand whole records to the OS, so a process killed at any point
leaves a file whose complete records all read back (at worst the last record is cut,
which a reader reports as a truncated record *after* delivering the others).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self

from efvi.errors import FormatError, SetupError, file_error

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
        try:
            f = open(p, "rb", buffering=0)
        except OSError as exc:
            raise file_error(exc, p, "read") from None
        return f, p, True
    return src, getattr(src, "name", None) if isinstance(getattr(src, "name", None), str) \
        else None, False


def _name_of(f: PathOrFile) -> str:
    if isinstance(f, (str, os.PathLike)):
        p = os.fspath(f)
        return "<stdout>" if p == "-" else p
    n = getattr(f, "name", None)
    return n if isinstance(n, str) else "<file>"


def _stat(f: PathOrFile) -> os.stat_result | None:
    try:
        if isinstance(f, (str, os.PathLike)):
            p = os.fspath(f)
            if p == "-":
                import sys
                return os.fstat(sys.stdin.fileno())
            return os.stat(p)
        return os.fstat(f.fileno())
    except (OSError, ValueError, AttributeError):
        return None


@contextmanager
def replacing(dst: PathOrFile, src: PathOrFile | None = None) -> Iterator[PathOrFile]:
    """Write ``dst`` through a temporary file renamed into place on success.

    Yields what to write to: for a path naming a regular file (or nothing yet), a
    temporary file in the same directory, renamed over the target (through a
    symlink, to the file it names) when the block ends without an exception and
    removed when it raises — so a failed write never leaves a half file under the
    target's name. Streams, ``-`` and non-regular files (``/dev/null``, FIFOs) are
    written directly. Refuses (SetupError) when ``dst`` is the file ``src`` reads
    (same device and inode: also through a symlink or hard link).
    """
    if src is not None:
        a, b = _stat(src), _stat(dst)
        if a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) \
                and stat.S_ISREG(a.st_mode):
            raise SetupError(
                f"the output {_name_of(dst)} is the input file {_name_of(src)} (same device "
                "and inode)", errno=errno.EINVAL,
                hint="write to a new file name, then rename it over the input if you mean to")
    if not isinstance(dst, (str, os.PathLike)) or os.fspath(dst) == "-":
        yield dst
        return
    p = os.fspath(dst)
    target = os.path.realpath(p)
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise file_error(exc, p, "write") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise file_error(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), p, "write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        yield p
        return
    d, base = os.path.split(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=d or ".")
    except OSError as exc:
        raise file_error(exc, p, "write") from None
    os.close(fd)
    try:
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
        else:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(tmp, mode)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

    __slots__ = ("f", "own", "pending", "buffer_size", "packet_buffered", "closed", "raw",
                 "name")

    def __init__(self, dst: PathOrFile, *, buffer_size: int = 1 << 16,
                 packet_buffered: bool = False) -> None:
        if isinstance(dst, (str, os.PathLike)):
            p = os.fspath(dst)
            if p == "-":
                import sys
                self.f: BinaryIO = sys.stdout.buffer
                self.own = False
            else:
                try:
                    self.f = open(p, "wb", buffering=0)
                except OSError as exc:
                    raise file_error(exc, p, "write") from None
                self.own = True
        else:
            self.f = dst
            self.own = False
        self.name = _name_of(dst)
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
        try:
            while len(view):
                n = self.f.write(view)
                if n is None:  # non-blocking raw stream that would block: retry
                    continue
                view = view[n:]
        except BrokenPipeError:
            raise  # the reader went away: the CLI exits quietly
        except OSError as exc:
            raise file_error(exc, self.name, "write") from None

    def flush(self) -> None:
        """Hand the pending records to the OS (the buffer object is reused)."""
        p = self.pending
        try:
            if p:
                n = self.f.write(p)
                if n is None or n < len(p):  # a short write: finish it
                    self._out(memoryview(bytes(p[n or 0:])))
                p.clear()
            if not self.raw:
                self.f.flush()
        except BrokenPipeError:
            raise  # the reader went away: the CLI exits quietly
        except OSError as exc:
            raise file_error(exc, self.name, "write") from None

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
