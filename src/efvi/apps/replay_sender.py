"""The replay engine: :class:`ReplaySender` owns a TX-only VI and sends the records
of :class:`~efvi.apps.replay_schedule.Chunk` objects at their deadlines.

It stages a chunk's frames into its ring of buffers *before* the first deadline
(:meth:`ReplaySender.classify` counts what the interface cannot carry,
:meth:`ReplaySender.stage` copies and rewrites), sleeps until close to the deadline,
spins the rest, then sends every record that is due with one doorbell
(``transmit_batch``). Lateness (the time the doorbell is rung − the deadline) of every
record goes into the stats' :class:`~efvi.apps.replay_stats.LatencyHistogram`. Where
the records come from (files, loops) is :mod:`efvi.apps.replay`'s business: the sender
runs any *producer* that stages through it.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from efvi import Driver, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.apps.replay_rewrite import fix_checksums
from efvi.apps.replay_schedule import Chunk
from efvi.apps.replay_stats import I64, ReplayStats
from efvi.constants import PKT_BUF_SIZE
from efvi.apps._link import link_lost
from efvi.errors import EfviError, FormatError
from efvi.filters import parse_mac

__all__ = ["MAX_SLEEP_NS", "SPIN_NS", "ReplaySender"]

#: sleep until this long before a deadline, then spin (timer slack is set to 1 ns)
SPIN_NS = 120_000
#: longest single sleep: a stop request or the progress line waits at most this long
MAX_SLEEP_NS = 50_000_000


def _set_timer_slack(ns: int) -> None:
    """prctl(PR_SET_TIMERSLACK): sleeps wake within ``ns`` of the asked time instead of
    the default 50 µs (Linux; ignored elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


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
        #: why :meth:`run` returned ``"link"`` (the interface gone, down, no carrier)
        self.link_error = ""
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
                if now >= next_tick:
                    next_tick += 1_000_000_000
                    st.elapsed_ns = now - self._t0
                    # the link, once a second (control path): frames it cannot carry
                    # fail at once on packet, or vanish on xdp — stop either way
                    self.link_error = link_lost(self.driver, carrier=True)
                    if self.link_error:
                        self._abandon(None)
                        return "link"
                    if on_second is not None:
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
        """``up`` | ``no-carrier`` | ``down`` | ``gone`` (:meth:`efvi.Driver.link_state`),
        or "" when it cannot be read."""
        try:
            return self.driver.link_state()
        except (OSError, EfviError):
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
