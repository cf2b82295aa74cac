"""Capture files for :mod:`efvi.apps.capture`: pcapng/pcap writers with tcpdump's
rotation (``-G``/``-C``/``-W`` and its file names), per-file statistics blocks, and
the full-disk rule (cut back to the last whole record)."""

from __future__ import annotations

import errno
import os
import platform
import time
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from efvi.apps.capture import I64, CaptureBatch, CaptureStats, OutputError
from efvi.bpf.libpcap import DEFAULT_SNAPLEN
from efvi.errors import SetupError
from efvi.pcap.constants import OPT_COMMENT
from efvi.pcap.pcap import PcapWriter
from efvi.pcap.pcapng import PcapNgWriter

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"}


def make_filename(template: str, count: int, digits: int, when: float | None) -> str:
    """tcpdump's ``MakeFilename``: ``strftime`` for ``-G``, then a numeric suffix.

    The suffix is left off for the first file unless ``-W`` sets a width (``digits``).
    """
    base = time.strftime(template, time.localtime(when)) if when is not None else template
    if count == 0 and digits == 0:
        return base
    return f"{base}{count:0{digits}d}"


def check_output_path(path: str, *, force: bool) -> None:
    """Refuse to overwrite an existing file that is not a capture (unless ``force``)."""
    if path == "-" or force or not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise SetupError(f"-w {path}: is a directory", errno=errno.EISDIR)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise SetupError(f"-w {path}: {exc.strerror}", errno=exc.errno or 0) from None
    if head and head not in _PCAP_MAGICS:
        raise SetupError(f"-w {path}: exists and is not a capture file",
                         errno=errno.EEXIST, hint="pick another name, or pass --force")


class CaptureWriter:
    """pcapng (default) or pcap files with tcpdump's rotation (``-G``/``-C``/``-W``).

    pcapng: one interface block per file with ``if_tsresol=9`` (ns), the snap length,
    the filter expression and a comment naming the clock source; at the end of each
    file an interface statistics block with the frames received by the filter and
    dropped during that file. pcap: the nanosecond magic. Records are handed to the
    OS after every batch; a write error (e.g. ENOSPC) cuts the file back to its last
    whole record and raises :class:`OutputError`.
    """

    def __init__(self, path: str, *, fmt: str = "pcapng", snaplen: int = DEFAULT_SNAPLEN,
                 interface: str = "", description: str = "", expression: str | None = None,
                 clock: Callable[[], str] = lambda: "", rotate_seconds: float | None = None,
                 rotate_mbytes: float | None = None, file_count: int | None = None,
                 force: bool = False) -> None:
        if fmt not in ("pcapng", "pcap"):
            raise SetupError(f"unknown format {fmt!r}", errno=errno.EINVAL,
                             hint="use pcapng or pcap")
        if path == "-" and (rotate_seconds or rotate_mbytes or file_count):
            raise SetupError("-G/-C/-W need a file name, not -w -", errno=errno.EINVAL)
        if file_count is not None and not (rotate_seconds or rotate_mbytes):
            raise SetupError("-W needs -C or -G", errno=errno.EINVAL)
        self.path = path
        self.fmt = fmt
        self.snaplen = snaplen
        self.interface = interface
        self.description = description
        self.expression = expression
        self.clock = clock
        self.rotate_seconds = rotate_seconds
        self.limit = int(rotate_mbytes * 1_000_000) if rotate_mbytes else None
        self.file_count = file_count
        self.digits = len(str(file_count - 1)) if file_count and self.limit else 0
        self.force = force
        self.files: list[str] = []
        self.done = False  # -G with -W: the last file is complete
        self._cnt = 0
        self._gtime: float | None = None
        self._f: BinaryIO | None = None
        self._w: PcapNgWriter | PcapWriter | None = None
        self._size = 0
        self._recv0 = self._drop0 = self._pk0 = 0
        self._open_next(time.time())

    # ---- files ---------------------------------------------------------------------
    def _name(self) -> str:
        return make_filename(self.path, self._cnt, self.digits,
                             self._gtime if self.rotate_seconds else None)

    def _open_next(self, now: float) -> None:
        if self.rotate_seconds and (self._gtime is None or self._cnt == 0):
            self._gtime = now
        name = self._name()
        if name != "-" and name not in self.files:
            check_output_path(name, force=self.force or bool(self.files))
        try:
            f: BinaryIO = open(name, "wb", buffering=0) if name != "-" else \
                __import__("sys").stdout.buffer
        except OSError as exc:
            raise SetupError(f"cannot write {name}: {exc.strerror}",
                             errno=exc.errno or errno.EIO,
                             hint="check the directory exists and is writable") from None
        self._f = f
        if name not in self.files:
            self.files.append(name)
        try:
            if self.fmt == "pcapng":
                ng = PcapNgWriter(
                    f, userappl="efvi capture", os=f"{platform.system()} {platform.release()}",
                    hardware=platform.machine())
                clock = self.clock() or "sw"
                ng.add_interface(snaplen=self.snaplen, name=self.interface or None,
                                description=self.description or None,
                                filter=self.expression or None, tsresol=9,
                                options=[(OPT_COMMENT, (
                                    f"timestamps: integer ns from the VI's RX events, clock "
                                    f"source {clock} ({_CLOCK_TEXT.get(clock, clock)})"
                                ).encode())])
                w: PcapNgWriter | PcapWriter = ng
            else:
                w = PcapWriter(f, snaplen=self.snaplen, nanosecond=True)
            w.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {name}: {exc.strerror}") from None
        self._w = w
        self._size = self._tell()

    def _tell(self) -> int:
        assert self._f is not None
        try:
            return self._f.tell()
        except OSError:  # a pipe
            return self._size

    def _finish_file(self, st: CaptureStats) -> None:
        w = self._w
        if w is None:
            return
        self._w = None
        try:
            if isinstance(w, PcapNgWriter):
                w.set_stats(0, recv=st.received_by_filter - self._recv0,
                            drop=st.drops - self._drop0,
                            filter_accept=st.received_by_filter - self._recv0,
                            user_delivered=st.captured - self._pk0)
            w.close()
        except BrokenPipeError:
            raise
        except (OSError, SetupError) as exc:
            self._cut(exc)
        finally:
            if self._f is not None and self.path != "-":
                self._f.close()
            self._f = None
        self._recv0, self._drop0, self._pk0 = st.received_by_filter, st.drops, st.captured

    def _cut(self, exc: OSError | SetupError, sizes: I64 | None = None) -> None:
        """Cut the file back to its last whole record, close it, raise OutputError.

        ``sizes`` are the record sizes of the batch being written: the records of it
        that reached the file whole are kept."""
        name = self.files[-1] if self.files else self.path
        self._w = None  # its buffer may hold a part-written batch: never flushed again
        f, self._f = self._f, None
        if f is not None and self.path != "-":
            keep = self._size
            try:
                if sizes is not None and sizes.size:
                    have = os.fstat(f.fileno()).st_size
                    ends = self._size + np.cumsum(sizes)
                    whole = ends[ends <= have]
                    keep = int(whole[-1]) if whole.size else self._size
                f.truncate(keep)
            except OSError:
                pass
            self._size = keep
            f.close()
        self.done = True
        what = "disk full" if exc.errno == errno.ENOSPC else str(exc)
        raise OutputError(f"cannot write {name}: {what}; the file keeps the "
                          f"{'records' if self._size else 'bytes'} written before") from None

    def _rotate(self, st: CaptureStats, now: float, by_time: bool) -> None:
        self._finish_file(st)
        if by_time:
            if self.file_count and len(self.files) >= self.file_count and not self.limit:
                self.done = True
                return
            self._cnt = 0
            self._gtime = now
        else:
            self._cnt += 1
            if self.file_count and self.limit:
                self._cnt %= self.file_count
        self._open_next(now)

    # ---- records ---------------------------------------------------------------------
    def _sizes(self, batch: CaptureBatch) -> I64:
        cap = np.minimum(batch.cap_len, self.snaplen)
        if self.fmt == "pcap":
            return np.asarray(16 + cap, dtype=np.int64)
        extra = 12 if _directional(batch) else 0
        return np.asarray(32 + cap + (-cap % 4) + extra, dtype=np.int64)

    def write(self, batch: CaptureBatch, st: CaptureStats) -> None:
        """Append a batch (rotating as configured), then hand it to the OS."""
        if self.done or self._w is None:
            return
        now = time.time()
        if self.rotate_seconds and self._gtime is not None \
                and now - self._gtime >= self.rotate_seconds:
            self._rotate(st, now, by_time=True)
            if self.done:
                return
        if self.limit is None:
            self._write(batch)
            return
        sizes = self._sizes(batch)
        i, n = 0, len(batch)
        while i < n:
            if self._size > self.limit:  # tcpdump checks before each packet
                self._rotate(st, now, by_time=False)
            before = self._size + np.concatenate(([0], np.cumsum(sizes[i:])))[:n - i]
            over = np.flatnonzero(before > self.limit)
            j = i + (int(over[0]) if over.size else n - i)
            j = max(j, i + 1)
            self._write(batch.part(i, j))
            i = j

    def _write(self, batch: CaptureBatch) -> None:
        w = self._w
        assert w is not None
        try:
            if isinstance(w, PcapNgWriter) and _directional(batch):
                for i in range(len(batch)):
                    w.write(int(batch.ts_ns[i]), batch.frame(i),
                            0, int(batch.wire_len[i]),
                            flags=2 if batch.outgoing[i] else 1)
            elif isinstance(w, PcapNgWriter):
                w.write_batch(batch.frames, batch.cap_len, batch.ts_ns, 0, batch.wire_len)
            else:
                w.write_batch(batch.frames, batch.cap_len, batch.ts_ns, batch.wire_len)
            w.flush()
        except BrokenPipeError:
            raise
        except (OSError, SetupError) as exc:
            self._cut(exc, self._sizes(batch))
        self._size = self._tell() if self.path != "-" else \
            self._size + int(self._sizes(batch).sum())

    def close(self, st: CaptureStats) -> None:
        """Write the last file's statistics block and close it."""
        self._finish_file(st)


_CLOCK_TEXT = {"hw": "the NIC's hardware clock", "xdp-sw": "bpf_ktime_get_ns in the XDP "
               "program, converted to CLOCK_REALTIME", "sw": "the kernel's software RX stamp"}


def _directional(batch: CaptureBatch) -> bool:
    return bool(batch.outgoing.any())


