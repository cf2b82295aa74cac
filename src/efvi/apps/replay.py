"""Replay capture files onto an interface with their timing (tcpreplay's job).

Three pieces, usable apart:

* :class:`~efvi.apps.replay_schedule.Scheduler` (sans-I/O) gives every record a
  deadline in ns after the start;
* :class:`ReplaySender` owns a TX-only VI and sends :class:`Chunk` objects on time:
  it stages a chunk's frames into its ring of buffers *before* the first deadline,
  sleeps until close to the deadline, spins the rest, then sends every record that is
  due with one doorbell (``transmit_batch``). Lateness (the time the doorbell is rung
  − the deadline) of every record goes into a :class:`LatencyHistogram`; what the
  adapter adds after the doorbell shows at the peer (``benchmarks/replay_veth.py``
  measures there);
* :func:`replay` reads the files (streaming, or once with ``preload``), loops, and
  drives the two, returning :class:`ReplayStats`.

Frames go out as recorded: every byte of each record, VLAN tags and odd EtherTypes
included. A record the interface cannot carry is never sent cut: longer than the MTU
(+4 for a VLAN-tagged frame) or the 2048-byte buffer, or shorter than an Ethernet
header, it is counted in ``failed`` (by cause) and skipped. ``truncated`` counts
records captured shorter than they were on the wire (``caplen < orig_len``); they go
out as stored. Options: ``dmac``/``smac`` rewrite the MACs, ``fixcsum`` recomputes
IPv4 header and UDP/TCP checksums (IPv4 and IPv6, after VLAN tags).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from efvi import Driver, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.apps.replay_schedule import Chunk, Pacing, Scheduler
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import EfviError, FormatError, SetupError
from efvi.filters import parse_mac
from efvi.pcap import open_capture
from efvi.pcap.constants import LINKTYPE_ETHERNET, LINKTYPE_NAMES
from efvi.pcap.record import RecordBatch
from efvi.wire.checksum import internet_checksum, l4_checksum

__all__ = ["LatencyHistogram", "ReplayError", "ReplaySender", "ReplayStats", "check_files",
           "fix_checksums", "replay"]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: sleep until this long before a deadline, then spin (timer slack is set to 1 ns)
SPIN_NS = 120_000
#: longest single sleep: a stop request or the progress line waits at most this long
MAX_SLEEP_NS = 50_000_000
#: records per chunk in timed modes: staging a chunk (copying its frames) happens
#: between deadlines, so small chunks keep that work from delaying a send
TIMED_CHUNK = 64
#: records read per batch from a file
READ_BATCH = 4096
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


class ReplayError(EfviError):
    """The replay stopped early: a corrupt file, a stalled interface. The stats up to
    the fault are in :attr:`stats`."""

    def __init__(self, message: str, stats: ReplayStats) -> None:
        super().__init__(message)
        self.stats = stats


class LatencyHistogram:
    """Lateness samples in int ns: exact min/max/count, percentiles from 100 ns bins up
    to 10 ms and 1 % wide log bins beyond (constant memory however long the run).

    Cost per :meth:`add`: a few µs for a doorbell's worth of samples (``np.add.at``).
    """

    FINE_NS = 100
    FINE_BINS = 100_000  # 10 ms of 100 ns bins

    def __init__(self) -> None:
        self.fine = np.zeros(self.FINE_BINS, np.int64)
        self.coarse = np.zeros(2400, np.int64)  # log1.01 of ns/10ms, up to ~1e10 x
        self.count = 0
        self.min_ns = 0
        self.max_ns = 0
        self.negative = 0  # sent before the deadline (clamped to 0 in the bins)

    def add(self, samples: I64) -> None:
        if samples.shape[0] == 0:
            return
        lo, hi = int(samples.min()), int(samples.max())
        if self.count == 0:
            self.min_ns, self.max_ns = lo, hi
        else:
            self.min_ns, self.max_ns = min(self.min_ns, lo), max(self.max_ns, hi)
        self.count += int(samples.shape[0])
        s = samples
        if lo < 0:
            self.negative += int(np.count_nonzero(s < 0))
            s = np.maximum(s, 0)
        b = s // self.FINE_NS
        if hi < self.FINE_NS * self.FINE_BINS:
            self._count(b)
            return
        small = b < self.FINE_BINS
        self._count(b[small])
        big = s[~small].astype(np.float64) / (self.FINE_NS * self.FINE_BINS)
        cb = np.minimum(np.log(big) / np.log(1.01), self.coarse.shape[0] - 1).astype(np.int64)
        self.coarse += np.bincount(cb, minlength=self.coarse.shape[0])

    def _count(self, b: I64) -> None:
        # a full-width bincount allocates 800 KB: only worth it for big batches
        if b.shape[0] < 2048:
            np.add.at(self.fine, b, 1)
        else:
            self.fine += np.bincount(b, minlength=self.FINE_BINS)

    def percentile(self, q: float) -> int:
        """The ``q``-th percentile (0..100) in ns (bin upper edge, clamped to max)."""
        if self.count == 0:
            return 0
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        cf = np.cumsum(self.fine)
        if int(cf[-1]) >= rank:
            i = int(np.searchsorted(cf, rank))
            return max(min((i + 1) * self.FINE_NS, self.max_ns), self.min_ns)
        cc = np.cumsum(self.coarse) + int(cf[-1])
        i = int(np.searchsorted(cc, rank))
        v = int(self.FINE_NS * self.FINE_BINS * 1.01 ** (i + 1))
        return max(min(v, self.max_ns), self.min_ns)

    def summary_us(self) -> dict[str, float]:
        """``{"min", "p50", "p99", "max"}`` in µs (rounded to 0.1)."""
        if self.count == 0:
            return {}
        return {"min": round(self.min_ns / 1000, 1), "p50": round(self.percentile(50) / 1000, 1),
                "p99": round(self.percentile(99) / 1000, 1), "max": round(self.max_ns / 1000, 1)}


@dataclass
class ReplayStats:
    """What a replay did. ``attempted == successful + failed`` once the sender drained;
    ``failed_causes`` splits ``failed`` (``too_big``: over the MTU, ``over_buffer``: over
    2048 bytes, ``runt``: under 14 bytes, ``tx_error``: the adapter refused it,
    ``unsent``: still queued when the replay stopped on a fault)."""

    attempted: int = 0
    successful: int = 0
    bytes_sent: int = 0
    failed: int = 0
    failed_causes: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    retried: int = 0
    loops_done: int = 0
    elapsed_ns: int = 0
    mode: str = "original"
    lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    device: str = ""
    error: str | None = None
    vi_stats: dict[str, int] = field(default_factory=dict)

    def fail(self, cause: str, n: int) -> None:
        if n:
            self.failed += n
            self.failed_causes[cause] = self.failed_causes.get(cause, 0) + n

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_ns / 1e9

    def rates(self) -> tuple[float, float, float]:
        """(bytes/s, Mbit/s, packets/s) over the elapsed time."""
        s = self.elapsed_s or 1e-9
        return self.bytes_sent / s, self.bytes_sent * 8 / s / 1e6, self.successful / s

    def as_dict(self) -> dict[str, Any]:
        bps, mbps, pps = self.rates()
        return {"device": self.device, "mode": self.mode, "packets": self.successful,
                "bytes": self.bytes_sent, "seconds": round(self.elapsed_s, 6),
                "Bps": round(bps, 1), "Mbps": round(mbps, 2), "pps": round(pps, 2),
                "attempted": self.attempted, "successful": self.successful,
                "failed": self.failed, "failed_causes": dict(self.failed_causes),
                "truncated": self.truncated, "retried_eagain": self.retried,
                "loops_done": self.loops_done,
                "lateness_us": self.lateness.summary_us() or None,
                "vi_stats": self.vi_stats, "error": self.error}


def _set_timer_slack(ns: int) -> None:
    """prctl(PR_SET_TIMERSLACK): sleeps wake within ``ns`` of the asked time instead of
    the default 50 µs (Linux; ignored elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _l3_offset(frame: bytes | bytearray) -> tuple[int, int]:
    """(offset of the L3 header, EtherType) after any VLAN tags."""
    off = 12
    while len(frame) >= off + 4 and int.from_bytes(frame[off:off + 2], "big") in _VLAN_TPIDS:
        off += 4
    if len(frame) < off + 2:
        return off + 2, -1
    return off + 2, int.from_bytes(frame[off:off + 2], "big")


def fix_checksums(frame: bytearray) -> bool:
    """Recompute the IPv4 header checksum and the UDP/TCP checksum of ``frame`` in place
    (IPv4, or IPv6 with UDP/TCP as the first next header; VLAN tags skipped;
    fragments other than a whole datagram keep their L4 checksum). Returns True when
    something was rewritten. Per-frame Python: the ``--fixcsum`` path only."""
    l3, etype = _l3_offset(frame)
    n = len(frame)
    if etype == 0x0800 and n >= l3 + 20:
        ihl = (frame[l3] & 0x0F) * 4
        if ihl < 20 or n < l3 + ihl:
            return False
        frame[l3 + 10:l3 + 12] = b"\0\0"
        frame[l3 + 10:l3 + 12] = internet_checksum(frame[l3:l3 + ihl]).to_bytes(2, "big")
        tot = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        end = min(n, l3 + tot)
        frag = int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF
        proto = frame[l3 + 9]
        if frag == 0:
            _fix_l4(frame, proto, l3 + ihl, end, bytes(frame[l3 + 12:l3 + 16]),
                    bytes(frame[l3 + 16:l3 + 20]))
        return True
    if etype == 0x86DD and n >= l3 + 40:
        plen = int.from_bytes(frame[l3 + 4:l3 + 6], "big")
        end = min(n, l3 + 40 + plen)
        return _fix_l4(frame, frame[l3 + 6], l3 + 40, end, bytes(frame[l3 + 8:l3 + 24]),
                       bytes(frame[l3 + 24:l3 + 40]))
    return False


def _fix_l4(frame: bytearray, proto: int, l4: int, end: int, src: bytes, dst: bytes) -> bool:
    if proto == 17 and end >= l4 + 8:
        at = l4 + 6
    elif proto == 6 and end >= l4 + 20:
        at = l4 + 16
    else:
        return False
    frame[at:at + 2] = b"\0\0"
    c = l4_checksum(src, dst, proto, frame[l4:end])
    if proto == 17 and c == 0:
        c = 0xFFFF
    frame[at:at + 2] = c.to_bytes(2, "big")
    return True


@dataclass(slots=True)
class _Staged:
    """Records copied into the sender's buffers, waiting for their deadlines."""

    dl: I64
    addrs: npt.NDArray[np.uint64]
    lens: npt.NDArray[np.uint32]
    ids: npt.NDArray[np.uint32]
    sent: int = 0

    def __len__(self) -> int:
        return int(self.dl.shape[0])


class _Cost:
    """A running estimate of how long a piece of work takes (ns): the largest of the
    recent samples, decaying, so idle-time work is only started when it fits."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def add(self, ns: int) -> None:
        self.ns = max(ns, (self.ns * 7 + ns) // 8)


class ReplaySender:
    """A TX-only VI on ``url`` that sends records at their deadlines.

    ``nbuf`` 2048-byte buffers form a ring. :meth:`run` takes a *producer* (an
    iterator that stages records through :meth:`stage` and yields after each small
    step) and sends what it staged: it sleeps until close to the next deadline and
    spins the rest, rings one doorbell for every record due by then, and spends the
    idle time before a deadline on the producer's next step (reading, copying) or on
    reaping completions — only when the step's measured cost fits before the
    deadline. ``stall_ns`` bounds the wait for TX completions (buffers) before it
    gives up: an interface that goes down mid-run cannot hang the replay.
    """

    def __init__(self, url: str, *, nbuf: int = 4096, dmac: str | None = None,
                 smac: str | None = None, fixcsum: bool = False,
                 stall_ns: int = 1_000_000_000) -> None:
        self.dmac = parse_mac(dmac) if dmac else None
        self.smac = parse_mac(smac) if smac else None
        self.fixcsum = fixcsum
        self.stall_ns = stall_ns
        self.driver = Driver.open(url)
        try:
            self.pd = ProtectionDomain(self.driver)
            self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
            self.vi = VirtualInterface(self.pd, rxq=0, txq=nbuf, evq=2 * nbuf)
        except BaseException:
            self.driver.close()
            raise
        info = self.driver.interface
        self.device = info.name
        self.mtu = info.mtu
        #: frames shorter than this are padded with zeros (no adapter asks for it today:
        #: veth, AF_PACKET and AF_XDP pass runts as they are)
        self.pad_to = int(getattr(self.driver.adapter, "tx_min_frame", 0))
        self.nbuf = min(nbuf, self.vi.transmit_capacity())
        self.rows = self.mr.buf.reshape(-1, PKT_BUF_SIZE)
        self.addrs = self.mr.dma_addrs()
        self.ids = np.arange(self.rows.shape[0], dtype=np.uint32)
        self._slot_len = np.zeros(self.rows.shape[0], np.int64)  # bytes staged per buffer
        self._staged = 0      # frames copied into buffers
        self._completed = 0   # buffers free again (completed, or never posted)
        self.queue: collections.deque[_Staged] = collections.deque()
        self.stats = ReplayStats(device=self.device)
        self._t0 = 0
        self._started = False
        _set_timer_slack(1)

    # ---- buffers and completions --------------------------------------------------------
    @property
    def t0_ns(self) -> int:
        """CLOCK_MONOTONIC ns that deadlines count from (set when the first record is
        staged, so opening files and the first copy do not make the start late)."""
        return self._t0

    @property
    def free(self) -> int:
        """Buffers free for staging."""
        return self.nbuf - (self._staged - self._completed)

    def reap(self) -> int:
        """Poll the VI and count completed frames (TX_ERROR ones are counted as failed
        from the VI's drop counters in :meth:`finish`). Cost: one poll."""
        vi = self.vi
        ev = vi.poll()
        if len(ev) == 0:
            return 0
        n = int(vi.transmit_completed(ev).size)
        self._completed += n
        return n

    # ---- staging ----------------------------------------------------------------------
    def classify(self, ch: Chunk) -> I64 | None:
        """Indices of the records of ``ch`` that can go out (None: all of them); the
        rest are counted as failed by cause. Cost: ~4 numpy reductions when every
        record fits, ~20 numpy calls otherwise."""
        caplen = ch.caplen
        st = self.stats
        n = len(ch)
        st.attempted += n
        if bool((caplen < ch.orig_len).any()):
            st.truncated += int(np.count_nonzero(caplen < ch.orig_len))
        hi, lo = int(caplen.max()), int(caplen.min())
        if lo >= 14 and hi <= min(self.mtu + 14, PKT_BUF_SIZE):
            return None
        buf = ch.buf
        at = np.minimum(ch.data_offset + 12, max(buf.shape[0] - 2, 0))
        et = (buf[at].astype(np.int64) << 8) | buf[at + 1]
        tagged = (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)
        limit = self.mtu + 14 + 4 * tagged.astype(np.int64)
        runt = caplen < 14
        over_buf = caplen > PKT_BUF_SIZE
        too_big = (caplen > limit) & ~over_buf
        st.fail("runt", int(np.count_nonzero(runt)))
        st.fail("over_buffer", int(np.count_nonzero(over_buf)))
        st.fail("too_big", int(np.count_nonzero(too_big)))
        return np.flatnonzero(~(runt | over_buf | too_big))

    def stage(self, ch: Chunk, sel: I64 | None) -> _Staged:
        """Copy records ``sel`` (None: all) of ``ch`` into the next free buffers (the
        caller checked :attr:`free`), rewrite MACs, fix checksums, queue them."""
        if sel is None:
            lens64, offs, dl = ch.caplen, ch.data_offset, ch.deadline_ns
        else:
            lens64, offs, dl = ch.caplen[sel], ch.data_offset[sel], ch.deadline_ns[sel]
        n = int(lens64.shape[0])
        start = self._staged % self.nbuf
        if start + n <= self.nbuf:
            slots: I64 | slice = slice(start, start + n)
            addrs = self.addrs[start:start + n]
            ids = self.ids[start:start + n]
        else:
            slots = (self._staged + np.arange(n, dtype=np.int64)) % self.nbuf
            addrs, ids = self.addrs[slots], self.ids[slots]
        rows = self.rows[slots]
        w = int(lens64.max())
        buf = ch.buf
        o0 = int(offs[0])
        if o0 + n * w <= buf.shape[0] and int(lens64.min()) == w and \
                int(offs[-1]) == o0 + (n - 1) * w and (n < 3 or bool((np.diff(offs) == w).all())):
            rows[:, :w] = buf[o0:o0 + n * w].reshape(n, w)
        else:
            idx = offs[:, None] + np.arange(w, dtype=np.int64)
            np.minimum(idx, buf.shape[0] - 1, out=idx)
            rows[:, :w] = buf[idx]
        lens = lens64.astype(np.uint32)
        if self.pad_to and int(lens64.min()) < self.pad_to:
            for k in np.flatnonzero(lens64 < self.pad_to).tolist():
                rows[k, int(lens64[k]):self.pad_to] = 0
            lens = np.maximum(lens, self.pad_to).astype(np.uint32)
        if self.dmac is not None:
            rows[:, 0:6] = np.frombuffer(self.dmac, np.uint8)
        if self.smac is not None:
            rows[:, 6:12] = np.frombuffer(self.smac, np.uint8)
        if self.fixcsum:
            for k in range(n):
                ln = int(lens[k])
                fr = bytearray(rows[k, :ln].tobytes())
                if fix_checksums(fr):
                    rows[k, :ln] = np.frombuffer(bytes(fr), np.uint8)
        if not isinstance(slots, slice):
            self.rows[slots] = rows  # fancy indexing copied: write back
        self._slot_len[slots] = lens
        self._staged += n
        if not self._started:
            self._started = True
            self._t0 = time.monotonic_ns()
        s = _Staged(dl, addrs, lens, ids)
        self.queue.append(s)
        return s

    # ---- sending ------------------------------------------------------------------------
    def run(self, producer: Iterator[str], *, timed: bool,
            stop: Sequence[bool] | None = None, wall_limit_ns: int = 0,
            on_second: Callable[[ReplayStats], None] | None = None) -> str | None:
        """Send everything ``producer`` stages; returns None, or why it stopped early:
        ``"stop"``, ``"stall"``, or a :class:`FormatError` message from the producer
        (every record staged before the fault is still sent).

        ``producer`` yields the kind of work its next step will do (``"read"``,
        ``"stage"``) or ``"blocked"`` while it waits for free buffers; the sender keeps a
        cost estimate per kind. Cost per doorbell: one ``transmit_batch``; per record:
        its share of the producer's vectorised staging.
        """
        q = self.queue
        st = self.stats
        vi = self.vi
        prod_done = False
        error: str | None = None
        costs = {"read": _Cost(100_000), "stage": _Cost(50_000), "blocked": _Cost(5_000)}
        reap_cost = _Cost(10_000)
        kind = "read"
        next_tick = 0
        idle_since = 0

        def step() -> bool:
            """Advance the producer one step; True if it made progress."""
            nonlocal prod_done, error, kind
            if prod_done:
                return False
            t = time.monotonic_ns()
            was = kind
            try:
                kind = next(producer)
            except StopIteration:
                prod_done = True
                return False
            except FormatError as exc:
                error = str(exc)
                prod_done = True
                return False
            costs[was].add(time.monotonic_ns() - t)
            return was != "blocked"

        def do_reap() -> int:
            t = time.monotonic_ns()
            n = self.reap()
            reap_cost.add(time.monotonic_ns() - t)
            return n

        while True:
            if stop is not None and stop[0]:
                self._abandon(stop)
                return "stop"
            now = time.monotonic_ns()
            if self._started:
                if next_tick == 0:
                    next_tick = self._t0 + 1_000_000_000
                if on_second is not None and now >= next_tick:
                    next_tick += 1_000_000_000
                    st.elapsed_ns = now - self._t0
                    on_second(st)
                if wall_limit_ns and now - self._t0 >= wall_limit_ns:
                    self._abandon(None, count=False)
                    return None
            if not q:
                if prod_done:
                    return error
                if not step():
                    if prod_done:
                        continue
                    if do_reap() == 0:  # blocked on buffers: bounded wait for completions
                        if idle_since == 0:
                            idle_since = now
                            st.retried += 1
                        elif now - idle_since > self.stall_ns:
                            self._abandon(None)
                            return "stall"
                        time.sleep(0.00002)
                    else:
                        idle_since = 0
                else:
                    idle_since = 0
                continue
            head = q[0]
            i = head.sent
            n = len(head)
            if timed:
                t0 = self._t0
                target = t0 + int(head.dl[i])
                if target > now:
                    left = target - now
                    if not prod_done and kind != "blocked" and left > costs[kind].ns + 10_000:
                        step()
                        continue
                    if left > reap_cost.ns + 10_000 and (
                            kind == "blocked" or self.free < self.nbuf // 2):
                        if do_reap():
                            kind = "stage" if kind == "blocked" else kind
                        continue
                    if left > SPIN_NS + MAX_SLEEP_NS:  # a long gap: wake to check stop
                        time.sleep(MAX_SLEEP_NS / 1e9)
                        continue
                    if left > SPIN_NS:
                        time.sleep((left - SPIN_NS) / 1e9)
                    while time.monotonic_ns() < target:
                        pass
                    now = time.monotonic_ns()
                j = int(np.searchsorted(head.dl, now - t0, side="right")) if n - i > 1 else n
            else:
                j = n
            t_ring = time.monotonic_ns()
            k = vi.transmit_batch(head.addrs[i:j], head.lens[i:j], head.ids[i:j])
            if k < 0:  # refused (a length this adapter cannot send): count, free, go on
                st.fail("tx_error", j - i)
                self._completed += j - i
                k = j - i
            elif k > 0:
                if timed:
                    st.lateness.add(t_ring - self._t0 - head.dl[i:i + k])
                st.successful += k
                st.bytes_sent += int(head.lens[i:i + k].sum())
            head.sent = i + k
            if head.sent >= n:
                q.popleft()
            if i + k < j:  # the ring took fewer than were due: reap and retry (EAGAIN)
                st.retried += 1
                if do_reap() == 0:
                    if idle_since == 0:
                        idle_since = time.monotonic_ns()
                    elif time.monotonic_ns() - idle_since > self.stall_ns:
                        self._abandon(None)
                        return "stall"
                else:
                    idle_since = 0
            elif not timed:
                do_reap()

    def _abandon(self, stop: Sequence[bool] | None, *, count: bool = True) -> None:
        """Drop what is staged but not sent: after a stop request (or the duration)
        those records were never attempted; after a stall they failed (``unsent``)."""
        left = sum(len(s) - s.sent for s in self.queue)
        self.queue.clear()
        if (stop is not None and stop[0]) or not count:
            self.stats.attempted -= left
        else:
            self.stats.fail("unsent", left)
        self._completed += left  # staged but never posted: their buffers are free

    def drain(self, timeout_ns: int | None = None) -> tuple[int, int]:
        """Wait (bounded) until every posted frame completed; returns (frames, bytes) of
        those that did not."""
        limit = self.stall_ns if timeout_ns is None else timeout_ns
        last = time.monotonic_ns()
        while self._completed < self._staged:
            if self.reap():
                last = time.monotonic_ns()
                continue
            if time.monotonic_ns() - last > limit:
                lost = self._staged - self._completed
                idx = np.arange(self._completed, self._staged, dtype=np.int64) % self.nbuf
                return lost, int(self._slot_len[idx].sum())
            time.sleep(0.0001)
        return 0, 0

    def link_state(self) -> str:
        """The interface's operstate (``up``, ``down``, ...) or "" when unknown."""
        try:
            with open(f"/sys/class/net/{self.device}/operstate") as f:
                return f.read().strip()
        except OSError:
            return ""

    def finish(self) -> ReplayStats:
        """Final counters: elapsed time, the VI's stats, and frames the adapter failed
        (its ``tx_*_drops`` counters) moved from successful to failed."""
        st = self.stats
        st.elapsed_ns = max(time.monotonic_ns() - self._t0, 1) if self._started else 0
        vst = self.vi.stats()
        st.vi_stats = {k: v for k, v in vst.items() if k.startswith("tx_") or k == "drops"}
        tx_drops = sum(v for k, v in vst.items() if k.startswith("tx_") and k.endswith("_drops"))
        if tx_drops:
            st.successful -= tx_drops
            st.fail("tx_error", tx_drops)
        return st

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> ReplaySender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_linktype(path: str, reader: Any, ifidx: npt.NDArray[np.uint32]) -> None:
    ifaces = reader.interfaces
    for i in np.unique(ifidx).tolist():
        lt = ifaces[i].linktype if i < len(ifaces) else -1
        if lt != LINKTYPE_ETHERNET:
            name = LINKTYPE_NAMES.get(lt, str(lt))
            raise SetupError(f"{path}: link type {name} cannot be replayed onto Ethernet",
                             errno=errno.EINVAL,
                             hint="replay needs LINKTYPE_ETHERNET (1) captures")


def _file_batches(path: str, batch: int) -> Iterator[RecordBatch]:
    with open_capture(path) as r:
        if r.format == "pcap":
            _check_linktype(path, r, np.zeros(1, np.uint32))
        for rb in r.batches(batch):
            if r.format != "pcap":
                _check_linktype(path, r, rb.ifidx)
            yield rb


def check_files(paths: Sequence[str]) -> None:
    """Open each file and read its header (control path): a missing file, an unknown
    format or a non-Ethernet link type fails here, before anything is sent."""
    for p in paths:
        if p == "-":
            continue  # stdin can be read once only: checked as it is read
        if not os.path.exists(p):
            raise SetupError(f"{p}: no such file", errno=errno.ENOENT,
                             hint="give the path of a pcap or pcapng file")
        with open_capture(p) as r:
            if r.format == "pcap":
                _check_linktype(p, r, np.zeros(1, np.uint32))


#: top speed over a preloaded pass shorter than this unrolls passes into one batch
UNROLL = 1024
#: looping files up to this size (in all) are preloaded without -K, as re-reading them
#: every pass would cost more than sending them
AUTO_PRELOAD_BYTES = 64 << 20


def _concat(batches: list[RecordBatch]) -> RecordBatch:
    """One batch holding the records of ``batches`` in order (their bytes copied once)."""
    if len(batches) == 1:
        return batches[0]
    shifts = np.cumsum([0] + [b.buf.shape[0] for b in batches[:-1]])
    return RecordBatch(np.concatenate([b.ts_ns for b in batches]),
                       np.concatenate([b.caplen for b in batches]),
                       np.concatenate([b.orig_len for b in batches]),
                       np.concatenate([b.ifidx for b in batches]),
                       np.concatenate([b.data_offset + s for b, s in zip(batches, shifts)]),
                       np.concatenate([b.buf for b in batches]))


def _repeat(b: RecordBatch, k: int) -> RecordBatch:
    """``b``'s records ``k`` times over (the bytes are shared, not copied)."""
    return RecordBatch(np.tile(b.ts_ns, k), np.tile(b.caplen, k), np.tile(b.orig_len, k),
                       np.tile(b.ifidx, k), np.tile(b.data_offset, k), b.buf)


def _head(b: RecordBatch, n: int) -> RecordBatch:
    return RecordBatch(b.ts_ns[:n], b.caplen[:n], b.orig_len[:n], b.ifidx[:n],
                       b.data_offset[:n], b.buf)


def producer(snd: ReplaySender, sched: Scheduler, files: Sequence[str], *,
             preload: bool = False) -> Iterator[str]:
    """Read ``files`` pass after pass, schedule, classify and stage into ``snd`` — one
    small step per ``next()``, which yields the kind of the *next* step (``"read"``,
    ``"stage"``) or ``"blocked"`` while it waits for free buffers. Raises FormatError
    (after staging every good record before it) on a corrupt file, SetupError on a
    non-Ethernet one."""
    timed = sched.pacing.timed
    rb_size = 1024 if timed else READ_BATCH
    cache: dict[int, list[RecordBatch]] = {}
    if preload:
        for k, p in enumerate(files):
            cache[k] = list(_file_batches(p, READ_BATCH))
    st = snd.stats
    if preload and not timed and sched.loops != 1:
        flat = _concat([b for k in range(len(files)) for b in cache[k]])
        n = len(flat)
        if 0 < n < UNROLL:
            # a small file looped at top speed: one batch holds several passes, so each
            # doorbell carries up to a chunk instead of one pass
            rep = -(-UNROLL // n)
            big = _repeat(flat, rep)
            while not sched.done:
                k = rep if not sched.loops else min(rep, sched.loops - sched.pass_index)
                for ch in sched.add(_head(big, k * n)):
                    yield "stage"
                    sel = snd.classify(ch)
                    m = len(ch) if sel is None else int(sel.shape[0])
                    if m == 0:
                        continue
                    while snd.free < m:
                        yield "blocked"
                    snd.stage(ch, sel)
                sched.end_file()
                sched.end_pass(k)
                st.loops_done = min(sched.pass_index, sched.scheduled // n)
                yield "stage"
            return
    while not sched.done:
        for k in range(len(files)):
            src: Iterable[RecordBatch] = cache[k] if preload else _file_batches(files[k], rb_size)
            try:
                for rb in src:
                    for ch in sched.add(rb):
                        yield "stage"
                        sel = snd.classify(ch)
                        n = len(ch) if sel is None else int(sel.shape[0])
                        if n == 0:
                            continue
                        while snd.free < n:
                            yield "blocked"
                        snd.stage(ch, sel)
                    if sched.done:
                        break
                    yield "read"
            finally:
                sched.end_file()
            if sched.done:
                break
        sched.end_pass()
        st.loops_done = sched.pass_index


def replay(url: str, files: Sequence[str], *, pacing: Pacing | None = None, loops: int = 1,
           loopdelay_ns: int = 0, limit: int = 0, duration_ns: int = 0,
           preload: bool = False, dmac: str | None = None, smac: str | None = None,
           fixcsum: bool = False, stop: Sequence[bool] | None = None,
           on_second: Callable[[ReplayStats], None] | None = None,
           sender: ReplaySender | None = None) -> ReplayStats:
    """Replay ``files`` (in order, ``loops`` times; 0 = forever) onto ``url``.

    Returns the stats; raises :class:`ReplayError` (carrying the stats so far) when a
    file turns out corrupt mid-way — every good record before the fault was sent — or
    the interface stops completing frames. ``stop[0]`` set by a signal handler ends
    the replay cleanly (the stats so far are returned).
    """
    pacing = pacing or Pacing()
    check_files(files)
    if loops != 1 and not preload and ("-" in files or  # stdin can be read only once
                                       sum(os.path.getsize(f) for f in files)
                                       <= AUTO_PRELOAD_BYTES):
        preload = True
    own = sender is None
    snd = sender or ReplaySender(url, dmac=dmac, smac=smac, fixcsum=fixcsum)
    try:
        sched = Scheduler(pacing, loops=loops, loopdelay_ns=loopdelay_ns, limit=limit,
                          duration_ns=duration_ns,
                          max_chunk=TIMED_CHUNK if pacing.timed else 1024)
        st = snd.stats
        st.mode = pacing.mode
        why = snd.run(producer(snd, sched, files, preload=preload), timed=pacing.timed,
                      stop=stop, wall_limit_ns=duration_ns, on_second=on_second)
        lost, lost_bytes = snd.drain(snd.stall_ns // 5 if why == "stall" else None)
        if lost:
            st.successful -= lost
            st.bytes_sent -= lost_bytes
            st.fail("unsent", lost)
            why = why or "stall"
        snd.finish()
        if why is not None and why != "stop":
            if why == "stall":
                kick = st.vi_stats.get("tx_kick_errors", 0)
                state = snd.link_state()
                what = (f"{snd.device} went down" if state in ("down", "lowerlayerdown")
                        else f"{snd.device}: no TX completions for {snd.stall_ns / 1e9:.1f} s")
                why = (f"{what} ({kick} send errors); stopped — check `ip link show "
                       f"{snd.device}`")
            st.error = why
            raise ReplayError(why, st)
        return st
    finally:
        if own:
            snd.close()
