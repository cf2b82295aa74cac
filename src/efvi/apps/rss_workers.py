"""``efvi rss --workers``: one process per VI of the set (efrss's model, with processes).

The parent is the control plane, as ef_vi's driver is: it opens the driver, the VI set
and the set filters — on ``xdp`` the interface program and its filter table, on
``packet`` the fanout group's member sockets — and registers no packet memory. It then
forks one worker per VI. Worker *i* registers its own memory (after the fork: neither
the parent nor another worker maps its buffers) and posts it to VI *i* only — on xdp
its AF_XDP socket on RX queue *i* is created now, in the worker, bound to the worker's
UMEM and entered in the program's socket map (``efvi info`` shows the worker's pid as
the queue's holder); on packet it takes over member *i* of the ``PACKET_FANOUT_HASH``
group. It polls, counts and classifies that VI (:func:`efvi.apps.rss.poll_count`) and
reports to the parent over a pipe, one JSON line at most every 0.2 s: cumulative
counts and the flow keys it saw first. The parent joins the reports (per-VI packets;
a flow seen by two workers is a split flow), decides when to stop (count, duration,
idle, a signal) and stops the workers with SIGTERM; each drains its VI, sends its
final counts and exits. A worker that fails sends its error and exits 1; one that dies
sends nothing (or is killed): either way the parent stops the others, reaps every
worker and raises :class:`WorkerError` naming the worker, its pid and its message. A
worker also stops if the parent dies (``PR_SET_PDEATHSIG``).

``sim`` is refused (UnsupportedError): a sim port, its filter table and its flow hash
live in one process (cross-process sim wires are point to point), so there is no VI a
second process could own.

Control path in the parent; each worker's loop is the data path of
:class:`~efvi.apps.rss.RssRunner` for one VI.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from efvi import Driver, FilterSpec, MemoryRegion, ProtectionDomain, VISet
from efvi.apps.rss import _HEAD, RssCounter, RssStats, default_filters, poll_count
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import EfviError, UnsupportedError

__all__ = ["RssWorkers", "WorkerError"]

_REPORT_S = 0.2
_READY_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1

#: a worker's body: (worker index, report function, stop flag) -> None
WorkerBody = Callable[[int, Callable[[dict[str, Any]], None], list[bool]], None]


class WorkerError(EfviError):
    """A worker failed or died; the message names it, its pid and what it said."""


class _Worker:
    def __init__(self, index: int, pid: int, fd: int) -> None:
        self.index = index
        self.pid = pid
        self.fd = fd
        self.buf = b""
        self.ready = False
        self.done = False
        self.eof = False
        self.error = ""
        self.report: dict[str, Any] = {}


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux glibc: the ppid check still stops us
        pass


class Supervisor:
    """Fork ``n`` workers running ``body`` and join their reports (see module doc).

    ``body(i, report, stop)`` runs in worker *i*: it calls ``report(dict)`` (a JSON
    line to the parent; ``{"t": "ready"}`` once set up, ``{"t": "done", ...}`` last)
    and returns when ``stop[0]`` is set (SIGTERM/SIGINT, or the parent gone). An
    exception in it becomes ``{"t": "error", "message": str(exc)}`` and exit status 1.
    """

    def __init__(self, n: int, body: WorkerBody) -> None:
        self.n = n
        self.body = body
        self.workers: list[_Worker] = []
        self.failure = ""
        self._sel = selectors.DefaultSelector()
        self._stopping = False
        self._stop_deadline = 0.0
        self._closed = False

    # ---- worker side ---------------------------------------------------------------------
    def _child(self, i: int, wfd: int) -> None:
        code = 1
        try:
            for w in self.workers:  # the read ends of earlier workers' pipes
                os.close(w.fd)
            parent = os.getppid()
            _die_with_parent()
            stop = [False]

            def on_signal(signum: int, frame: object) -> None:
                stop[0] = True

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            if os.getppid() != parent:
                stop[0] = True

            def report(msg: dict[str, Any]) -> None:
                data = (json.dumps(msg) + "\n").encode()
                while data:
                    data = data[os.write(wfd, data):]

            try:
                self.body(i, report, stop)
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                text = str(exc) or type(exc).__name__
                try:
                    report({"t": "error", "message": text})
                except OSError:
                    pass
        finally:
            os._exit(code)

    # ---- parent side ---------------------------------------------------------------------
    def start(self) -> None:
        """Fork the workers and wait until each said it is ready (or one failed)."""
        try:
            for i in range(self.n):
                rfd, wfd = os.pipe()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the worker (its coverage is not saved)
                    os.close(rfd)
                    self._child(i, wfd)
                os.close(wfd)
                os.set_blocking(rfd, False)
                w = _Worker(i, pid, rfd)
                self.workers.append(w)
                self._sel.register(rfd, selectors.EVENT_READ, w)
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while not all(w.ready for w in self.workers):
                self.pump(0.1)
                if self.failure:
                    raise WorkerError(self.failure)
                if time.monotonic() > deadline:
                    late = [str(w.index) for w in self.workers if not w.ready]
                    raise WorkerError(f"worker(s) {', '.join(late)} not ready after "
                                      f"{_READY_TIMEOUT_S:.0f} s")
        except BaseException:
            self.finish()
            raise

    def pump(self, timeout: float) -> list[tuple[_Worker, dict[str, Any]]]:
        """Read what the workers sent (waiting up to ``timeout`` s); returns the
        messages, and notes errors, deaths and the end of each worker."""
        out: list[tuple[_Worker, dict[str, Any]]] = []
        for key, _ in self._sel.select(timeout):
            w: _Worker = key.data
            try:
                data = os.read(w.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                self._eof(w)
                continue
            w.buf += data
            *lines, w.buf = w.buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                t = msg.get("t")
                if t == "ready":
                    w.ready = True
                elif t == "error":
                    w.error = str(msg.get("message"))
                    self._fail(w, w.error)
                elif t == "done":
                    w.done = True
                if t in ("report", "done"):
                    w.report = msg
                out.append((w, msg))
        if self._stopping and time.monotonic() > self._stop_deadline:
            for w in self.workers:
                if not w.eof:
                    self._kill(w, signal.SIGKILL)
        return out

    def _eof(self, w: _Worker) -> None:
        w.eof = True
        self._sel.unregister(w.fd)
        os.close(w.fd)
        _, status = os.waitpid(w.pid, 0)
        w.pid = -w.pid  # reaped
        if w.done or w.error:
            return
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            self._fail(w, f"died: killed by {signal.Signals(sig).name}")
        else:
            self._fail(w, f"exited with status {os.waitstatus_to_exitcode(status)} "
                          "without its final counts")

    def _fail(self, w: _Worker, why: str) -> None:
        if not self.failure:
            self.failure = f"worker {w.index} (pid {abs(w.pid)}): {why}"
        self.stop()

    def _kill(self, w: _Worker, sig: int) -> None:
        if w.pid > 0:
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Ask every worker to stop (SIGTERM); SIGKILL after a grace period."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + _STOP_GRACE_S
        for w in self.workers:
            self._kill(w, signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    @property
    def running(self) -> bool:
        return any(not w.eof for w in self.workers)

    def finish(self) -> None:
        """Stop every worker and reap it (idempotent)."""
        if self._closed:
            return
        self.stop()
        while self.running:
            self.pump(0.1)
        self._closed = True
        self._sel.close()


class RssWorkers:
    """``efvi rss URL -n N --workers`` as a library: :meth:`run` returns the joined
    :class:`~efvi.apps.rss.RssStats` (``worker_pids`` lists the workers)."""

    def __init__(self, url: str, n: int, filters: Sequence[FilterSpec] | None = None,
                 *, rxq: int = 1024) -> None:
        self.driver = Driver.open(url)
        try:
            adapter = self.driver.capabilities.adapter
            if adapter == "sim":
                raise UnsupportedError(
                    "rss --workers needs a kernel adapter (xdp or packet): a sim port and "
                    "its flow hash live in one process; run without --workers on sim")
            self.pd = ProtectionDomain(self.driver)
            self.set = VISet(self.pd, n, rxq=rxq, txq=0)
            self.filters = list(filters) if filters else default_filters(adapter)
            for f in self.filters:
                self.set.filter_add(f)
        except BaseException:
            self.driver.close()
            raise
        self.n = n
        self.rxq = rxq
        self.counter = RssCounter(n)
        self.sup = Supervisor(n, self._body)
        self.pids: list[int] = []

    # ---- the worker ----------------------------------------------------------------------
    def _body(self, i: int, report: Callable[[dict[str, Any]], None], stop: list[bool]
              ) -> None:
        vi = self.set.vis[i]
        mr = MemoryRegion(self.pd, self.rxq * PKT_BUF_SIZE)  # this worker's memory only
        addrs = mr.dma_addrs()
        rows = mr.buf.reshape(-1, PKT_BUF_SIZE)
        ids = np.arange(self.rxq, dtype=np.uint32)[:vi.receive_capacity()]
        vi.receive_post_batch(addrs[ids], ids)
        cols = np.arange(_HEAD, dtype=np.int64)
        counter = RssCounter(1)
        st = counter.stats
        report({"t": "ready", "pid": os.getpid()})
        parent = os.getppid()
        last = sent_t = time.monotonic()
        sent = -1

        def message(t: str) -> dict[str, Any]:
            return {"t": t, "packets": st.packets, "discards": st.discards,
                    "non_ip": st.non_ip, "new_flows": counter.take_new_flows()}

        while not stop[0]:
            if not poll_count(vi, 0, rows, addrs, cols, counter):
                vi.eventq_wait(1_000_000)
            now = time.monotonic()
            if now - last >= _REPORT_S:
                last = now
                if st.packets != sent or now - sent_t >= 1.0:
                    sent, sent_t = st.packets, now
                    report(message("report"))
                if os.getppid() != parent:
                    break
        while poll_count(vi, 0, rows, addrs, cols, counter):  # what already arrived
            pass
        done = message("done")
        done["vi_drops"] = {k: v for k, v in vi.stats().items() if k.endswith("_drops")}
        report(done)

    # ---- the parent ----------------------------------------------------------------------
    def start(self) -> None:
        """Fork the workers; returns once every worker's VI is receiving."""
        self.sup.start()
        self.pids = [w.pid for w in self.sup.workers]

    def _join(self, msgs: list[tuple[Any, dict[str, Any]]]) -> None:
        st = self.counter.stats
        for w, m in msgs:
            if m.get("t") in ("report", "done"):
                st.per_vi[w.index] = int(m["packets"])
                self.counter.merge(w.index, m["new_flows"])

    def run(self, duration_s: float | None = None, count: int | None = None,
            on_second: Callable[[RssStats], None] | None = None,
            stop: list[bool] | None = None, idle_exit_s: float | None = None) -> RssStats:
        """Count until ``stop[0]``, ``count`` packets, ``duration_s``, or ``idle_exit_s``
        seconds without a frame after the first; then stop and reap the workers.
        Raises WorkerError if a worker failed (the others are stopped first)."""
        if not self.sup.workers:
            self.start()
        sup, st = self.sup, self.counter.stats
        t0 = time.monotonic()
        next_tick = t0 + 1.0
        last_n, last_t = 0, t0
        try:
            while sup.running:
                self._join(sup.pump(0.05))
                now = time.monotonic()
                if st.packets != last_n:
                    last_n, last_t = st.packets, now
                if not sup.stopping:
                    why = ""
                    if stop is not None and stop[0]:
                        why = "signal"
                    elif count is not None and st.packets >= count:
                        why = "count"
                    elif duration_s is not None and now - t0 >= duration_s:
                        why = "duration"
                    elif idle_exit_s is not None and last_n and now - last_t > idle_exit_s:
                        why = "idle"
                    if why:
                        st.stopped_by = why
                        sup.stop()
                if now >= next_tick and not sup.stopping:
                    next_tick = now + 1.0
                    st.elapsed_s = now - t0
                    if on_second is not None:
                        on_second(st)
        finally:
            sup.finish()
        st.elapsed_s = time.monotonic() - t0
        ws = sup.workers
        st.discards = sum(int(w.report.get("discards", 0)) for w in ws)
        st.non_ip = sum(int(w.report.get("non_ip", 0)) for w in ws)
        st.vi_drops = [dict(w.report.get("vi_drops", {})) for w in ws]
        if sup.failure:
            raise WorkerError(sup.failure)
        return st

    def close(self) -> None:
        self.sup.finish()
        self.driver.close()

    def __enter__(self) -> RssWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
