"""Virtual interfaces (``ef_vi``): this module has the VI's state, RX path, events,
filters and lifecycle; its TX half (descriptors, doorbell, PIO sends, completions) is
:mod:`efvi.vitx`. VI sets are in :mod:`efvi.viset`, PIO areas in :mod:`efvi.pio`,
filter bookkeeping in :mod:`efvi.filter_book`.

Control path (``__init__``, ``filter_add``, ``filter_del``, ``stats``, ``close``)
may allocate and raise. Data path (``receive_*``, ``transmit_*``, ``poll``,
``eventq_poll``, ``transmit_unbundle``) preallocates, returns ``0``/counts or a
negative errno, and never raises for per-packet conditions:

* ``-EAGAIN`` — the ring is full (nothing was written);
* ``-EINVAL`` — a bad argument: request id ``0xffffffff``, an address outside every
  registered region, a frame shorter than 14 bytes or longer than its buffers, a
  misaligned PIO offset;
* ``-EBADF`` — the VI was closed. Calls that return a batch return an empty one
  instead (``poll``: an empty :class:`EventBatch`; ``eventq_poll``,
  ``transmit_unbundle``: ``[]``; ``transmit_completed``: an empty array) and
  ``eventq_wait`` returns at once; ``vi.closed`` tells a closed VI from an idle one.
  Only control-path calls (``filter_add``, ``pio``, ...) raise ClosedError.

Rings have a power-of-two size; usable capacity is size − 1 (ef_vi's ``mask``).
Buffers belong to the NIC from post until their RX event; TX buffers until
``transmit_unbundle`` has returned their id.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.constants import (DEFAULT_RXQ_SIZE, DEFAULT_TXQ_SIZE, EF_REQUEST_ID_MASK,
                            EF_VI_EVENT_POLL_MIN_EVS, MAX_RING_SIZE)
from efvi.driver import ProtectionDomain, round_ring
from efvi.errors import ClosedError, SetupError
from efvi.events import Event, EventBatch, event_array
from efvi.filter_book import FilterBook, FilterCookie
from efvi.filters import FilterSpec
from efvi._ring import ring_span as _ring_span
from efvi._ring import ring_store as _ring_store
from efvi.pio import PioRegion
from efvi.viflags import ViFlags
from efvi.viflags import check_flags as _check_flags
from efvi.vitx import EAGAIN, EBADF, EINVAL, TxPath

if TYPE_CHECKING:
    from efvi.adapters.base import HwVI

_MASK = EF_REQUEST_ID_MASK
_FEW_RX = 64  # receive_push of at most this many: plain-int refill (rx_post_list)

U64Array = npt.NDArray[np.uint64]
U32Array = npt.NDArray[np.uint32]

__all__ = ["EAGAIN", "EBADF", "EINVAL", "FilterCookie", "PioRegion", "ViFlags",
           "VirtualInterface"]


class VirtualInterface(TxPath):
    """A VI: an event queue, an RX ring and a TX ring in ``pd``.

    ``rxq``/``txq``/``evq``: -1 for the default (512/512/derived), 0 for none,
    else rounded up to a power of two. ``flags``: :class:`ViFlags` values (ORed).
    ``queue`` binds one hardware RX queue where the adapter has several
    (``xdp:IF@Q`` does the same from the URL).

    Convention: what describes the VI (``pd``, ``flags``, ``clock_source``,
    ``filters``, ring sizes) is an attribute or property; every query of ring or
    buffer state is a method named after ef_vi's function (``receive_capacity()``,
    ``receive_fill_level()``, ``transmit_space()``, ``receive_buffer_len()``,
    ``receive_prefix_len()``, ``ring_state()``). :meth:`stats` returns counters only.
    """

    def __init__(self, pd: ProtectionDomain, rxq: int = -1, txq: int = -1,
                 evq: int = -1, flags: int = 0, queue: int | None = None) -> None:
        pd._check_open()
        self.pd = pd
        self.driver = pd.driver
        self.rxq_size = round_ring(rxq, DEFAULT_RXQ_SIZE, "RX ring", MAX_RING_SIZE)
        self.txq_size = round_ring(txq, DEFAULT_TXQ_SIZE, "TX ring", MAX_RING_SIZE)
        if evq == -1:
            evq = self.rxq_size + self.txq_size + 64
        self.evq_size = round_ring(evq, 1024, "event queue", 4 * MAX_RING_SIZE)
        if self.evq_size < EF_VI_EVENT_POLL_MIN_EVS:
            raise SetupError("a VI needs an event queue", errno=errno.EINVAL,
                             hint="pass evq=-1 for the default size")
        self.flags = _check_flags(pd, flags)
        self._hw: HwVI = pd._hw.alloc_vi(self.rxq_size, self.txq_size, self.evq_size,
                                         flags, queue)
        self._closed = False
        rs = max(self.rxq_size, 1)
        ts = max(self.txq_size, 1)
        self._rx_mask = self.rxq_size - 1 if self.rxq_size else 0
        self._rx_ids = np.zeros(rs, np.uint32)
        self._rx_addr = np.zeros(rs, np.uint64)
        self._rx_added = self._rx_pushed = self._rx_removed = 0
        self._tx_mask = self.txq_size - 1 if self.txq_size else 0
        self._tx_ids = np.zeros(ts, np.uint32)
        self._tx_addr = np.zeros(ts, np.uint64)
        self._tx_len = np.zeros(ts, np.uint32)
        self._tx_added = self._tx_pushed = self._tx_removed = 0
        # memoryviews over the same rings: per-packet stores/loads through them are
        # about twice as fast as numpy scalar indexing and yield plain ints
        self._rx_ids_mv = self._rx_ids.data
        self._rx_addr_mv = self._rx_addr.data
        self._tx_ids_mv = self._tx_ids.data
        self._tx_addr_mv = self._tx_addr.data
        self._tx_len_mv = self._tx_len.data
        self._evbuf = event_array(self.evq_size)
        self._empty = EventBatch(self._evbuf[:0])
        self._evtypes = memoryview(self._evbuf.view(np.uint8))  # type: ignore[arg-type]
        self._filters = FilterBook(pd, [self._hw], "VI")
        if not hasattr(self._hw, "rx1"):
            self._hw.rx1 = [0, 0, 0]
        #: ``[ofs, len, ts_ns]`` of the frame :meth:`poll_rx1` returned (updated in place)
        self.rx1: list[int] = self._hw.rx1
        self._pio: PioRegion | None = None
        self._rejected = 0  # data-path calls refused with -EINVAL
        pd._vis.add(self)

    # ---- queries ------------------------------------------------------------------
    def receive_buffer_len(self) -> int:
        """Bytes the NIC writes per RX buffer (``ef_vi_receive_buffer_len``)."""
        return self._hw.rx_buffer_len

    def receive_set_buffer_len(self, nbytes: int) -> None:
        if not 64 <= nbytes <= 2048:
            raise SetupError(f"RX buffer length {nbytes} outside 64..2048", errno=errno.EINVAL)
        self._hw.set_rx_buffer_len(nbytes)

    def receive_prefix_len(self) -> int:
        """Bytes of metadata before the frame in each RX buffer (``ef_vi_receive_prefix_len``)."""
        return self._hw.rx_prefix_len

    @property
    def clock_source(self) -> str:
        return self._hw.clock_source

    def receive_capacity(self) -> int:
        return self._rx_mask

    def receive_fill_level(self) -> int:
        return self._rx_added - self._rx_removed

    def receive_space(self) -> int:
        return self._rx_mask - (self._rx_added - self._rx_removed)

    # ---- RX --------------------------------------------------------------------
    def receive_init(self, dma_addr: int, rq_id: int) -> int:
        """Write one RX descriptor (not yet visible to the NIC: call ``receive_push``).

        Cost: a few attribute reads and three array stores. 0, -EAGAIN, -EINVAL, -EBADF.
        """
        if self._closed:
            return EBADF
        pd = self.pd
        if not 0 <= rq_id < _MASK or not (
                pd._lo <= dma_addr < pd._hi or pd.dma_ok(dma_addr, 1)):
            self._rejected += 1
            return EINVAL
        added = self._rx_added
        if added - self._rx_removed >= self._rx_mask:
            return EAGAIN
        i = added & self._rx_mask
        self._rx_addr_mv[i] = dma_addr
        self._rx_ids_mv[i] = rq_id
        self._rx_added = added + 1
        return 0

    def receive_push(self) -> int:
        """RX doorbell: give every descriptor written since the last push to the NIC.

        Returns the number pushed. Refill in batches (8–64) rather than one by one.
        """
        if self._closed:
            return EBADF
        lo, hi = self._rx_pushed, self._rx_added
        if hi == lo:
            return 0
        self._rx_pushed = hi
        n = hi - lo
        if n == 1:  # one buffer (per-packet refill): plain ints, no numpy
            i = lo & self._rx_mask
            self._hw.rx_post_one(self._rx_addr_mv[i], self._rx_ids_mv[i])
            return 1
        if n <= _FEW_RX:  # a per-packet loop's refill: two list copies, no numpy
            mask = self._rx_mask
            a, b = lo & mask, hi & mask
            am, im = self._rx_addr_mv, self._rx_ids_mv
            if a < b:
                self._hw.rx_post_list(am[a:b].tolist(), im[a:b].tolist())
            else:
                self._hw.rx_post_list(am[a:].tolist() + am[:b].tolist(),
                                      im[a:].tolist() + im[:b].tolist())
            return n
        addrs, ids = _ring_span(self._rx_addr, self._rx_ids, lo, hi, self._rx_mask)
        self._hw.rx_post(addrs, ids)
        return hi - lo

    def receive_post(self, dma_addr: int, rq_id: int) -> int:
        """``receive_init`` + ``receive_push`` (convenient, slower than batching; with
        nothing else written, one scalar doorbell: the per-packet refill)."""
        if self._rx_pushed != self._rx_added:
            rc = self.receive_init(dma_addr, rq_id)
            if rc == 0:
                self.receive_push()
            return rc
        rc = self.receive_init(dma_addr, rq_id)
        if rc == 0:
            self._rx_pushed = self._rx_added
            self._hw.rx_post_one(dma_addr, rq_id)
        return rc

    def receive_post_batch(self, dma_addrs: U64Array, rq_ids: U32Array) -> int:
        """Post and push many RX buffers at once (numpy arrays of equal length).

        Posts ``min(len, receive_space())`` in order and returns that count (0 when the
        ring is full); -EINVAL (posting none) if any id is ``0xffffffff`` or any address
        is unregistered. Cost: O(n) numpy work, one doorbell.
        """
        if self._closed:
            return EBADF
        addrs = np.asarray(dma_addrs, dtype=np.uint64)
        ids = np.asarray(rq_ids, dtype=np.uint32)
        if addrs.shape != ids.shape or addrs.ndim != 1:
            return EINVAL
        n = min(int(addrs.shape[0]), self.receive_space())
        if n <= 0:
            return 0
        addrs, ids = addrs[:n], ids[:n]
        if int(ids.max()) == _MASK or not self._dma_ok_batch(addrs, None):
            self._rejected += 1
            return EINVAL
        _ring_store(self._rx_addr, self._rx_added, self._rx_mask, addrs)
        _ring_store(self._rx_ids, self._rx_added, self._rx_mask, ids)
        self._rx_added += n
        self.receive_push()
        return n

    # ---- events ---------------------------------------------------------------------
    def poll(self, max_events: int | None = None) -> EventBatch:
        """Harvest up to ``max_events`` events as numpy columns (the batch form).

        The columns are views into the VI's event buffer, valid until the next poll.
        Cost: the adapter's harvest plus ~3 numpy calls; no per-event Python object.
        On a closed VI: an empty batch (never raises).
        """
        if self._closed:
            return self._empty
        cap = self.evq_size
        n = self._hw.harvest(self._evbuf, cap if max_events is None or max_events > cap
                             else max(max_events, 1))
        if n == 0:
            return self._empty
        recs = self._evbuf[:n]
        # RX (0) and RX_DISCARD (2) each consume one RX descriptor; the type is the
        # first byte of each 24-byte record
        if n <= 16:
            self._rx_removed += sum(1 for t in self._evtypes[:n * 24:24] if not t & 0xFD)
        else:
            self._rx_removed += int(np.count_nonzero((recs["type"] & 0xFD) == 0))
        return EventBatch(recs)

    def poll_rx1(self) -> int:
        """The one-packet-in-flight receive: the next event, if it is a whole-frame RX.

        Returns its request id, with ``vi.rx1 == [ofs, len, ts_ns]`` updated in place
        (no object built); -1 when nothing waits; -2 when the next event is anything
        else (a TX completion on sim, a SOP/CONT chain, an adapter without this path):
        call :meth:`poll` to take it; -EBADF on a closed VI. Cost on xdp: one ring read
        and ~12 int operations (no numpy). TX completions are not taken here: poll() now
        and then to reap them.
        """
        if self._closed:
            return EBADF
        i = self._hw.rx_one()
        if i >= 0:
            self._rx_removed += 1
        return i

    def eventq_poll(self, max_events: int = 64) -> list[Event]:
        """Harvest up to ``max_events`` events as :class:`Event` objects.

        Costs one small object per event. Where the adapter can (sim; xdp while only
        whole-frame RX events wait) the events are built straight from its rings — no
        record array, no numpy — otherwise from :meth:`poll`; the events and their
        order are the same either way. ``[]`` on a closed VI.
        """
        if self._closed:
            return []
        if max_events < EF_VI_EVENT_POLL_MIN_EVS:
            max_events = EF_VI_EVENT_POLL_MIN_EVS
        elif max_events > self.evq_size:
            max_events = self.evq_size
        got = self._hw.harvest_events(max_events)
        if got is not None:
            self._rx_removed += got[1]
            return got[0]
        return self.poll(max_events).events()

    def eventq_wait(self, timeout_ns: int | None = None) -> None:
        """Block until events may be ready (or the timeout); then poll.

        Returns at once on a closed VI (nothing will arrive; never raises).
        """
        if self._closed:
            return
        self._hw.wait(timeout_ns)

    def eventq_put(self, data: int) -> int:
        """Queue a software event carrying 16 bits of ``data``; 0 or -EAGAIN."""
        if self._closed:
            return EBADF
        return 0 if self._hw.sw_event(data & 0xFFFF) else EAGAIN

    # ---- filters -------------------------------------------------------------------
    def activate(self) -> None:
        """Create the adapter objects (e.g. AF_XDP sockets) the VI would otherwise
        create on its first post, transmit or filter, so that call does not stall
        (control path; may raise SetupError). Register memory first."""
        self._check_open()
        self._hw.activate()

    def filter_add(self, spec: FilterSpec) -> FilterCookie:
        """Steer frames matching ``spec`` to this VI (control path).

        Raises FilterExistsError for an identical unicast steal filter on the port,
        UnsupportedError when the adapter cannot steal (or sniff) as asked.
        """
        self._check_open()
        return self._filters.add(spec)

    def filter_del(self, cookie: FilterCookie) -> None:
        self._check_open()
        self._filters.delete(cookie)

    @property
    def filters(self) -> list[FilterSpec]:
        return [c.spec for c, _ in self._filters.entries.values()]

    # ---- stats and lifecycle -----------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters only (each only grows): ``rx_packets``, ``rx_bytes``, ``tx_packets``,
        ``tx_bytes``, ``rejected_calls``, drops by cause (every key ending ``_drops``)
        and ``drops``, their sum. Ring state is :meth:`ring_state`."""
        s: dict[str, int] = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0,
                             "rx_nodesc_drops": 0, "rx_trunc_drops": 0}
        s.update(self._hw.stats())
        s["rejected_calls"] = self._rejected
        s["drops"] = sum(v for k, v in s.items() if k.endswith("_drops"))
        return s

    def ring_state(self) -> dict[str, int]:
        """What the rings hold now (goes up and down): ``rx_fill_level``,
        ``rx_capacity``, ``tx_fill_level``, ``tx_space``, ``tx_capacity``,
        ``rx_buffer_len``."""
        return {"rx_fill_level": self.receive_fill_level(),
                "rx_capacity": self.receive_capacity(),
                "tx_fill_level": self.transmit_fill_level(),
                "tx_space": self.transmit_space(),
                "tx_capacity": self.transmit_capacity(),
                "rx_buffer_len": self.receive_buffer_len()}

    def _dma_ok_batch(self, addrs: U64Array, lens: npt.NDArray[np.uint32] | None) -> bool:
        pd = self.pd
        if pd._hi:  # one region: the extremes decide (the lowest start, the highest end)
            if int(addrs.min()) < pd._lo:
                return False
            top = int(addrs.max()) + (int(lens.max()) if lens is not None else 1)
            if top <= pd._hi:
                return True
        ends = addrs + (lens.astype(np.uint64) if lens is not None else np.uint64(1))
        if pd._hi:
            return bool((ends <= pd._hi).all())
        if not pd._regions:
            return False
        bases = np.asarray(pd._bases, dtype=np.uint64)
        limits = np.asarray([e for _, e, _ in pd._regions], dtype=np.uint64)
        i = np.searchsorted(bases, addrs, side="right") - 1
        if (i < 0).any():
            return False
        return bool((ends <= limits[i]).all())

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("VI is closed")
        self.pd._check_open()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Remove this VI's filters and free its queues (idempotent)."""
        if self._closed:
            return
        self._filters.clear()
        self._closed = True
        self._hw.close()
        self.pd._vis.discard(self)

    def __enter__(self) -> "VirtualInterface":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
