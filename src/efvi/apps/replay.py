"""Replay capture files onto an interface with their timing (tcpreplay's job).

Three pieces, usable apart:

* :class:`~efvi.apps.replay_schedule.Scheduler` (sans-I/O) gives every record a
  deadline in ns after the start;
* :class:`~efvi.apps.replay_sender.ReplaySender` owns a TX-only VI and sends
  :class:`Chunk` objects on time: it stages a chunk's frames into its ring of buffers
  *before* the first deadline, sleeps until close to the deadline, spins the rest,
  then sends every record that is due with one doorbell (``transmit_batch``).
  Lateness (the time the doorbell is rung − the deadline) of every record goes into a
  :class:`LatencyHistogram`; what the adapter adds after the doorbell shows at the
  peer (``benchmarks/replay_veth.py`` measures there);
* :func:`replay` (this module) reads the files (streaming, or once with ``preload``),
  loops, and drives the two, returning :class:`ReplayStats`
  (:mod:`efvi.apps.replay_stats`).

Frames go out as recorded: every byte of each record, VLAN tags and odd EtherTypes
included. A record the interface cannot carry is never sent cut: longer than the MTU
(+4 for a VLAN-tagged frame) or the 2048-byte buffer, or shorter than an Ethernet
header, it is counted in ``failed`` (by cause) and skipped. ``truncated`` counts
records captured shorter than they were on the wire (``caplen < orig_len``); they go
out as stored. Options: ``dmac``/``smac`` rewrite the MACs, ``fixcsum`` recomputes
IPv4 header and UDP/TCP checksums (IPv4 and IPv6, after VLAN tags;
:mod:`efvi.apps.replay_rewrite`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from efvi.apps.replay_rewrite import fix_checksums
from efvi.apps.replay_schedule import Pacing, Scheduler
from efvi.apps.replay_sender import ReplaySender
from efvi.apps.replay_stats import LatencyHistogram, ReplayError, ReplayStats
from efvi.errors import SetupError
from efvi.pcap import open_capture
from efvi.pcap.constants import LINKTYPE_ETHERNET, LINKTYPE_NAMES
from efvi.pcap.record import RecordBatch

__all__ = ["LatencyHistogram", "ReplayError", "ReplaySender", "ReplayStats", "check_files",
           "fix_checksums", "replay"]

#: records per chunk in timed modes: staging a chunk (copying its frames) happens
#: between deadlines, so small chunks keep that work from delaying a send
TIMED_CHUNK = 64
#: records read per batch from a file
READ_BATCH = 4096


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
        lost, lost_bytes = snd.drain(snd.stall_ns // 5 if why in ("stall", "link") else None)
        if lost:
            st.successful -= lost
            st.bytes_sent -= lost_bytes
            st.fail("unsent", lost)
            why = why or "stall"
        snd.finish()
        if why == "link":
            why = snd.link_error
        if why is not None and why != "stop":
            if why == "stall":
                kick = st.vi_stats.get("tx_kick_errors", 0)
                state = snd.link_state()
                what = (f"{snd.device} went down ({state})"
                        if state in ("down", "gone", "no-carrier")
                        else f"{snd.device}: no TX completions for {snd.stall_ns / 1e9:.1f} s")
                why = (f"{what} ({kick} send errors); stopped — check `ip link show "
                       f"{snd.device}`")
            st.error = why
            raise ReplayError(why, st)
        return st
    finally:
        if own:
            snd.close()
