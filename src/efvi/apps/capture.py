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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface, VISet)
from efvi.apps._link import link_lost
from efvi.bpf.libpcap import DEFAULT_SNAPLEN
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import EfviError, SetupError, UnsupportedError
from efvi.events import RX_FLAG_OUTGOING
from efvi.vi import ViFlags

if TYPE_CHECKING:
    from efvi.apps.capture_files import CaptureWriter

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]

DIRECTIONS = ("in", "out", "inout")
_RX, _RXD = int(EventType.RX), int(EventType.RX_DISCARD)
_NODESC = int(EventType.RX_NO_DESC_TRUNC)
_SOP, _CONT = 0x1, 0x2
_ACCEPT_ALL = ((0x06, 0, 0, 0xFFFFFFFF),)  # ret #-1: every frame
_COALESCE_TARGET = 512  # frames a poll should find (see Capture.batches)


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
                    lost = link_lost(self.driver)  # control path, once a second
                    if lost:
                        st.error = lost
                        break
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

    def run(self, writer: CaptureWriter | Sequence[CaptureWriter] | None = None, *,
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

