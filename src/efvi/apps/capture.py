"""Packet capture on a VI (``efvi capture``): filters in, timestamped frames out.

:class:`Capture` owns one VI on any adapter with the filters of the capture: ef_vi
specs and/or a tcpdump expression (compiled by libpcap, run where the adapter
filters: the socket filter on ``packet``, *inside the XDP program* on ``xdp``, numpy
on ``sim`` — see :mod:`efvi.filters`). What a capture sees, per adapter:

* ``packet`` — a copy of every matching frame (the kernel keeps its own): received
  frames, and with ``direction="out"``/``"inout"`` the frames this host sends
  (``PACKET_OUTGOING``, as ``tcpdump -Q``). Without filters: every frame
  (promiscuous unless ``promiscuous=False``).
* ``xdp`` — matching *received* frames, **stolen** from the kernel (XDP redirects a
  frame to exactly one place): the kernel keeps everything else. Without filters the
  capture takes every frame, so the host's own traffic on that interface stops while
  it runs. Frames sent by the host never pass XDP (``-Q out`` is refused).
* ``sim`` — a copy of every matching received frame.

Iterate :meth:`Capture.batches` for :class:`CaptureBatch` objects (numpy columns:
``ts_ns``, ``wire_len``, ``cap_len``, ``frames``) to analyse in-process, or
:meth:`Capture.run` with a :class:`CaptureWriter` to write pcapng/pcap files
(rotation as ``tcpdump -G/-C/-W``). Timestamps are the VI's integer ns RX stamps
(clock ``hw``, ``xdp-sw`` or ``sw``: :attr:`Capture.clock`). A frame longer than the
snap length is stored cut with its wire length; a frame longer than a buffer (which
the adapter reports as a TRUNC discard or a chain cut short) is stored with what
arrived and its wire length, and counted in ``truncated`` — never dropped silently.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface, VISet)
from efvi.vi import ViFlags
from efvi.bpf.libpcap import DEFAULT_SNAPLEN
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import EfviError, SetupError, UnsupportedError
from efvi.events import RX_FLAG_OUTGOING
from efvi.pcap.constants import OPT_COMMENT
from efvi.pcap.pcap import PcapWriter
from efvi.pcap.pcapng import PcapNgWriter
from efvi.wire.classify import classify_one

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

DIRECTIONS = ("in", "out", "inout")
_RX, _RXD = int(EventType.RX), int(EventType.RX_DISCARD)
_NODESC = int(EventType.RX_NO_DESC_TRUNC)
_SOP, _CONT = 0x1, 0x2
_ACCEPT_ALL = ((0x06, 0, 0, 0xFFFFFFFF),)  # ret #-1: every frame
_COALESCE_TARGET = 512  # frames a poll should find (see Capture.batches)
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"}


class OutputError(EfviError):
    """The capture file cannot be written (disk full, I/O error); what was written stays."""


@dataclass(frozen=True, slots=True)
class CaptureBatch:
    """Frames captured together: row ``i`` of ``frames`` holds ``cap_len[i]`` bytes.

    ``ts_ns`` int64 RX timestamps (ns), ``wire_len`` the length on the wire,
    ``cap_len`` the bytes kept (≤ snap length), ``outgoing`` True for frames this host
    sent (packet adapter with ``direction`` out/inout).
    """

    ts_ns: I64
    wire_len: I64
    cap_len: I64
    frames: U8
    outgoing: B
    worker: int = 0  # the VI set member (RX queue on xdp) it came from; -1: merged

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def frame(self, i: int) -> bytes:
        return self.frames[i, :int(self.cap_len[i])].tobytes()

    def head(self, n: int) -> "CaptureBatch":
        return self.part(0, n)

    def part(self, i: int, j: int) -> "CaptureBatch":
        """Frames ``i`` to ``j - 1`` (views, no copy)."""
        return CaptureBatch(self.ts_ns[i:j], self.wire_len[i:j], self.cap_len[i:j],
                            self.frames[i:j], self.outgoing[i:j], self.worker)


@dataclass
class CaptureStats:
    """Counters of a capture (tcpdump's three, plus efvi's drops by cause)."""

    captured: int = 0  # frames delivered (written)
    bytes: int = 0  # their wire bytes
    truncated: int = 0  # stored shorter than the wire length by a buffer limit (not snaplen)
    discards: int = 0  # RX_DISCARD events (other than TRUNC)
    drops: int = 0  # frames the filter took but the adapter/kernel dropped
    drop_causes: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    clock: str = ""
    files: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def received_by_filter(self) -> int:
        """Frames the filters accepted: captured + dropped after the filter."""
        return self.captured + self.drops + self.discards

    def as_dict(self) -> dict[str, object]:
        return {"packets_captured": self.captured, "packets_received_by_filter":
                self.received_by_filter, "packets_dropped_by_kernel": self.drops,
                "drop_causes": dict(self.drop_causes), "truncated": self.truncated,
                "discards": self.discards, "bytes": self.bytes,
                "elapsed_s": round(self.elapsed_s, 6), "clock": self.clock,
                "files": list(self.files), "error": self.error or None}


@dataclass(eq=False)
class _Member:
    """One capturing VI (of a VI set, or the only one) and its chain being assembled."""

    index: int
    vi: VirtualInterface
    chain: list[bytes] | None = None  # a multi-buffer frame being assembled
    chain_ts: int = 0
    chain_out: bool = False


def _merged(parts: Sequence[CaptureBatch]) -> CaptureBatch:
    """The batches of one polling round as one, in timestamp order (stable)."""
    w = max(p.frames.shape[1] for p in parts)
    frames = np.zeros((sum(len(p) for p in parts), w), dtype=np.uint8)
    row = 0
    for p in parts:
        frames[row:row + len(p), :p.frames.shape[1]] = p.frames
        row += len(p)
    ts = np.concatenate([p.ts_ns for p in parts])
    order = np.argsort(ts, kind="stable")
    return CaptureBatch(ts[order], np.concatenate([p.wire_len for p in parts])[order],
                        np.concatenate([p.cap_len for p in parts])[order], frames[order],
                        np.concatenate([p.outgoing for p in parts])[order], -1)


def _with_option(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


class Capture:
    """A capturing VI on ``url`` (see the module doc). Set-up may raise SetupError.

    ``filters`` are ef_vi specs (made sniff filters where the adapter sniffs),
    ``expression`` a tcpdump expression; the VI gets frames matching any of them, or
    every frame when both are empty. ``snaplen`` bytes of each frame are kept.
    """

    def __init__(self, url: str, *, filters: Sequence[FilterSpec] = (),
                 expression: str | None = None, snaplen: int = DEFAULT_SNAPLEN,
                 direction: str = "in", promiscuous: bool = True, nbuf: int = 32768,
                 rxq: int = 16384, coalesce_us: int = 20_000, workers: int = 1,
                 merge: bool = False) -> None:
        if direction not in DIRECTIONS:
            raise SetupError(f"unknown direction {direction!r}", errno=errno.EINVAL,
                             hint="use in, out or inout")
        if not 1 <= snaplen <= DEFAULT_SNAPLEN:
            raise SetupError(f"snaplen {snaplen} outside 1..{DEFAULT_SNAPLEN}",
                             errno=errno.EINVAL, hint="tcpdump's default is 262144")
        self.snaplen = snaplen
        self.expression = expression
        self.direction = direction
        expr_prog = FilterSpec.expression(expression) if expression else None  # fail early
        kind = url.split(":", 1)[0]
        if direction != "in":
            if kind != "packet":
                raise UnsupportedError(
                    f"-Q {direction}: the {kind} adapter sees received frames only "
                    f"({'XDP runs on the receive path' if kind == 'xdp' else 'a NIC filter'}"
                    "); use packet:IFNAME to capture what this host sends")
            url = _with_option(url, "dir", direction)
        self.url = url
        self.driver = Driver.open(url)
        try:
            caps = self.driver.capabilities
            sniff = caps.sniff
            # on a sniffing adapter every filter is a copy, promiscuous like tcpdump
            specs = [s.sniff(promiscuous) if sniff else s for s in filters]
            if expr_prog is not None:
                e = FilterSpec.bpf(expr_prog.program, expression=expression)
                specs.append(e.sniff(promiscuous) if sniff else e)
            if not specs:
                specs = [FilterSpec.port_sniff(promiscuous) if sniff
                         else FilterSpec.bpf(_ACCEPT_ALL, expression="")]
            self.specs = specs
            self.pd = ProtectionDomain(self.driver)
            self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
            # merged RX events: a capture trades per-frame latency for throughput (on
            # packet a TPACKET_V3 block ring, one wake-up per block)
            flags = ViFlags.RX_EVENT_MERGE
            if workers > 1:  # a VI set: member i on RX queue i (xdp), or a fanout (packet)
                per = max(rxq // workers, 64)
                self.viset: VISet | None = VISet(self.pd, workers, rxq=per, txq=0,
                                                 flags=flags)
                vis = list(self.viset.vis)
                self.cookies = [self.viset.filter_add(s) for s in specs]
            else:
                self.viset = None
                vis = [VirtualInterface(self.pd, rxq=rxq, txq=0, flags=flags)]
                self.cookies = [vis[0].filter_add(s) for s in specs]
            self.vi = vis[0]
            self.nbuf = nbuf
            self.addrs = self.mr.dma_addrs()
            self.rows = self.mr.buf.reshape(nbuf, PKT_BUF_SIZE)
            share = nbuf // len(vis)
            self.members: list[_Member] = []
            for i, vi in enumerate(vis):
                fill = min(vi.receive_capacity(), share)
                ids = np.arange(i * share, i * share + fill, dtype=np.uint32)
                vi.receive_post_batch(self.addrs[ids], ids)
                self.members.append(_Member(i, vi))
            self.bufcap = min(self.vi.receive_buffer_len(), PKT_BUF_SIZE)
        except BaseException:
            self.driver.close()
            raise
        self.coalesce_s = coalesce_us / 1e6
        self.merge = merge
        self.stats = CaptureStats(clock=self.vi.clock_source)

    @property
    def clock(self) -> str:
        """Where the timestamps come from (``hw``, ``xdp-sw``, ``sw``)."""
        return self.vi.clock_source

    @property
    def interface(self) -> str:
        return self.driver.interface.name

    # ---- the loop ------------------------------------------------------------------------
    def batches(self, *, count: int | None = None, duration_s: float | None = None,
                stop: Callable[[], bool] | None = None,
                on_second: Callable[[CaptureStats], None] | None = None
                ) -> Iterator[CaptureBatch]:
        """Captured frames, batch by batch, until ``count`` frames, ``duration_s``
        seconds, or ``stop()`` returns True (checked between batches and at least
        every 20 ms when idle). ``on_second`` is called about once a second."""
        st = self.stats
        t0 = time.monotonic()
        tick = t0 + 1.0
        deadline = t0 + duration_s if duration_s else None
        last_poll = t0
        try:
            while True:
                if count is not None and st.captured >= count:
                    break
                k = 0
                outs: list[CaptureBatch] = []
                for m in self.members:
                    b = m.vi.poll()
                    if len(b):
                        k += len(b)
                        got = self._extract(b, m)
                        if got is not None:
                            outs.append(got)
                if self.merge and len(outs) > 1:
                    outs = [_merged(outs)]
                for out in outs:
                    if count is not None and st.captured + len(out) > count:
                        out = out.head(count - st.captured)
                    if not len(out):
                        continue
                    st.captured += len(out)
                    st.bytes += int(out.wire_len.sum())
                    yield out
                if k:
                    # a small batch: let frames gather before the next poll, for about
                    # the time _COALESCE_TARGET frames take at the rate just seen (at
                    # most coalesce_us), so a trickle costs a wake-up per batch, not per
                    # frame; a fast stream is polled back to back
                    t = time.monotonic()
                    rate = k / max(t - last_poll, 1e-5)
                    last_poll = t
                    if k < _COALESCE_TARGET and self.coalesce_s:
                        time.sleep(min(self.coalesce_s, (_COALESCE_TARGET - k) / rate))
                else:
                    if len(self.members) == 1:
                        self.vi.eventq_wait(20_000_000)
                    else:
                        time.sleep(0.002)
                    last_poll = time.monotonic()
                now = time.monotonic()
                if now >= tick:
                    tick = now + 1.0
                    st.elapsed_s = now - t0
                    self._refresh()
                    if on_second is not None:
                        on_second(st)
                if (deadline is not None and now >= deadline) or (stop is not None and stop()):
                    break
        finally:
            st.elapsed_s = time.monotonic() - t0
            self._refresh()

    def _refresh(self) -> None:
        causes: dict[str, int] = {}
        for m in self.members:
            for k, v in m.vi.stats().items():
                if k.startswith("rx_") and k.endswith("_drops"):
                    causes[k] = causes.get(k, 0) + v
        self.stats.drop_causes = causes
        self.stats.drops = sum(causes.values())
        self.stats.clock = self.vi.clock_source

    def _extract(self, b: "object", m: "_Member") -> CaptureBatch | None:
        """RX events → a batch (fast path: whole frames in one buffer each)."""
        from efvi.events import EventBatch
        assert isinstance(b, EventBatch)
        t = b.type
        sel = (t == _RX) | (t == _RXD) | (t == _NODESC)
        if not sel.any():
            return None
        types = t[sel]
        flags = b.flags[sel].astype(np.int64)
        ids = b.rq_id[sel].astype(np.int64)
        lens = b.len[sel].astype(np.int64)
        ts = b.ts_ns[sel].astype(np.int64)
        ofs = b.ofs[sel].astype(np.int64)
        simple = (types == _RX).all() and ((flags & (_SOP | _CONT)) == _SOP).all() \
            and m.chain is None and (ofs == ofs[0]).all()
        if simple:
            o = int(ofs[0])
            room = min(self.bufcap, PKT_BUF_SIZE - o)
            cap = np.minimum(np.minimum(lens, room), self.snaplen)
            w = int(cap.max())
            frames = self.rows[ids, o:o + w] if w else np.zeros((len(ids), 0), np.uint8)
            self.stats.truncated += int(np.count_nonzero(lens > room))
            out = CaptureBatch(ts, lens, cap, frames, (flags & RX_FLAG_OUTGOING) != 0,
                               m.index)
            self._repost(ids, m)
            return out
        return self._extract_slow(types, flags, ids, lens, ts, ofs, m)

    def _extract_slow(self, types: npt.NDArray[np.uint8], flags: I64, ids: I64, lens: I64,
                      ts: I64, ofs: I64, m: "_Member") -> CaptureBatch | None:
        """Event by event: chains (SOP/CONT), TRUNC discards, cut chains."""
        recs: list[tuple[int, int, bytes, bool]] = []
        back: list[int] = []
        st = self.stats
        for k in range(len(types)):
            ty, fl, rid, ln = int(types[k]), int(flags[k]), int(ids[k]), int(lens[k])
            o = int(ofs[k])
            room = min(self.bufcap, PKT_BUF_SIZE - o)
            if ty == _NODESC:  # the chain ran out of buffers: keep what arrived
                if m.chain is not None:
                    data = b"".join(m.chain)
                    recs.append((m.chain_ts, len(data), data, m.chain_out))
                    st.truncated += 1
                    m.chain = None
                continue
            back.append(rid)
            piece = self.rows[rid, o:o + min(room, ln)].tobytes()
            if ty == _RXD:
                m.chain = None
                if fl & _SOP and ln > len(piece):  # TRUNC: longer than the buffer
                    recs.append((int(ts[k]), ln, piece[:min(room, ln)],
                                 bool(fl & RX_FLAG_OUTGOING)))
                    st.truncated += 1
                else:
                    st.discards += 1
                continue
            if fl & _SOP:
                m.chain = []
                m.chain_ts = int(ts[k])
                m.chain_out = bool(fl & RX_FLAG_OUTGOING)
                have = 0
            else:
                have = sum(len(p) for p in m.chain or ())
            if m.chain is None:  # a continuation without its start: skip it
                continue
            if fl & _CONT:  # len is cumulative: this buffer holds len - have bytes
                m.chain.append(self.rows[rid, o:o + max(0, ln - have)].tobytes())
                continue
            m.chain.append(self.rows[rid, o:o + max(0, min(ln - have, room))].tobytes())
            data = b"".join(m.chain)
            if len(data) < ln:
                st.truncated += 1
            recs.append((m.chain_ts, ln, data, m.chain_out))
            m.chain = None
        if back:
            self._repost(np.array(back, dtype=np.int64), m)
        if not recs:
            return None
        n = len(recs)
        cap = np.array([min(len(r[2]), self.snaplen) for r in recs], dtype=np.int64)
        frames = np.zeros((n, int(cap.max(initial=0))), dtype=np.uint8)
        for i, r in enumerate(recs):
            frames[i, :cap[i]] = np.frombuffer(r[2][:cap[i]], np.uint8)
        return CaptureBatch(np.array([r[0] for r in recs], dtype=np.int64),
                            np.array([r[1] for r in recs], dtype=np.int64), cap, frames,
                            np.array([r[3] for r in recs], dtype=bool), m.index)

    def _repost(self, ids: I64, m: "_Member") -> None:
        m.vi.receive_post_batch(self.addrs[ids], ids.astype(np.uint32))

    def run(self, writer: "CaptureWriter | Sequence[CaptureWriter] | None" = None, *,
            count: int | None = None,
            duration_s: float | None = None, stop: Callable[[], bool] | None = None,
            on_second: Callable[[CaptureStats], None] | None = None,
            on_batch: Callable[[CaptureBatch], None] | None = None) -> CaptureStats:
        """Capture until a limit (see :meth:`batches`); write each batch to ``writer``
        (flushed per batch) and/or hand it to ``on_batch``. With ``workers`` and no
        ``merge``, ``writer`` may be one writer per worker. A write error (disk full)
        ends the capture with ``stats.error`` set; the file keeps every whole record."""
        st = self.stats
        writers: list[CaptureWriter] = (list(writer) if isinstance(writer, Sequence)
                                        else [writer] if writer is not None else [])
        try:
            for batch in self.batches(count=count, duration_s=duration_s, stop=stop,
                                      on_second=on_second):
                if writers:
                    w = writers[batch.worker] if len(writers) > 1 else writers[0]
                    w.write(batch, st)
                if on_batch is not None:
                    on_batch(batch)
        except OutputError as exc:
            st.error = str(exc)
        finally:
            for w in writers:
                try:
                    w.close(st)
                except OutputError as exc:
                    st.error = st.error or str(exc)
                st.files += w.files
        return st

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- files -------------------------------------------------------------------------------
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


# ---- one line per packet, like tcpdump -n ------------------------------------------------
_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"),
              (0x80, "W"))


def format_packet(ts_ns: int, frame: bytes, wire_len: int, *, outgoing: bool = False) -> str:
    """``HH:MM:SS.nnnnnnnnn`` + a tcpdump ``-n``-style summary from efvi's codecs."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%H:%M:%S", time.localtime(sec)) + f".{ns:09d}"
    return f"{stamp} {'Out ' if outgoing else ''}{describe(frame, wire_len)}"


def describe(frame: bytes, wire_len: int) -> str:
    """What ``tcpdump -n`` would say about a frame (addresses, ports, protocol, length)."""
    info = classify_one(frame)
    vlan = f"vlan {info.vlan_outer}, " if info.vlan_outer >= 0 else ""
    if info.ip_version == 4:
        src, dst = (socket.inet_ntoa(struct.pack("!I", a)) for a in (info.src_ip4,
                                                                     info.dst_ip4))
        fam = "IP"
    elif info.ip_version == 6:
        src, dst = (socket.inet_ntop(socket.AF_INET6, a) for a in (info.src_ip6, info.dst_ip6))
        fam = "IP6"
    elif info.ethertype == 0x0806 and len(frame) >= 42:
        op = int.from_bytes(frame[20:22], "big")
        spa, tpa = socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42])
        if op == 1:
            return f"{vlan}ARP, Request who-has {tpa} tell {spa}, length {wire_len - 14}"
        if op == 2:
            return f"{vlan}ARP, Reply {spa} is-at {frame[22:28].hex(':')}, length {wire_len - 14}"
        return f"{vlan}ARP, op {op}, length {wire_len - 14}"
    else:
        src_mac = info.src_mac.to_bytes(6, "big").hex(":")
        dst_mac = info.dst_mac.to_bytes(6, "big").hex(":")
        return (f"{vlan}{src_mac} > {dst_mac}, ethertype {info.ethertype:#06x}, "
                f"length {wire_len}")
    l4 = info.l4_offset
    if info.is_fragment:
        return f"{vlan}{fam} {src} > {dst}: ip-proto-{info.proto} fragment, length {wire_len}"
    if info.proto in (6, 17) and l4 >= 0 and len(frame) >= l4 + 8:
        head = f"{vlan}{fam} {src}.{info.src_port} > {dst}.{info.dst_port}:"
        plen = max(0, wire_len - info.payload_offset) if info.payload_offset >= 0 else 0
        if info.proto == 17:
            return f"{head} UDP, length {plen}"
        fl = frame[l4 + 13] if len(frame) > l4 + 13 else 0
        flags = "".join(c for bit, c in _TCP_FLAGS if fl & bit) + ("." if fl & 0x10 else "")
        return f"{head} Flags [{flags or 'none'}], length {plen}"
    if info.proto in (1, 58) and l4 >= 0 and len(frame) >= l4 + 2:
        name = "ICMP" if info.proto == 1 else "ICMP6"
        return (f"{vlan}{fam} {src} > {dst}: {name} type {frame[l4]} code {frame[l4 + 1]}, "
                f"length {wire_len - l4}")
    return f"{vlan}{fam} {src} > {dst}: ip-proto-{info.proto}, length {wire_len}"
