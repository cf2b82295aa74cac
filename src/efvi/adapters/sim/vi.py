"""A VI's queues on the software NIC: posted RX descriptors, the event ring, TX DMA."""

from __future__ import annotations

import collections
import itertools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import EventArray, HwVI, U32Array, U64Array
from efvi.adapters.dma import scatter
from efvi.adapters.sim import port as _port
from efvi.adapters.sim.frames import FrameBatch
from efvi.constants import (
    EF_REQUEST_ID_MASK,
    EF_VI_TRANSMIT_BATCH,
    EF_VI_TX_TIMESTAMPS,
    PKT_BUF_SIZE,
)
from efvi.events import DiscardReason, Event, EventType, RxFlags, event_array

if TYPE_CHECKING:
    from efvi.adapters.sim.adapter import SimPD

I64 = npt.NDArray[np.int64]
_RX = int(EventType.RX)
_TX = int(EventType.TX)
_SOP = int(RxFlags.SOP)
_CONT = int(RxFlags.CONT)
_MCAST = int(RxFlags.MULTICAST)
_DISCARD = int(EventType.RX_DISCARD)
_TYPES = tuple(EventType(i) for i in range(len(EventType)))
_new = tuple.__new__
_EV = struct.Struct("<BBHHHIIq")  # EVENT_DTYPE as bytes: one scalar event store
assert _EV.size == 24


class SimVI(HwVI):
    """See :class:`efvi.adapters.base.HwVI`. DMA happens synchronously in the doorbells."""

    def __init__(self, pd: "SimPD", rxq: int, txq: int, evq: int, flags: int = 0) -> None:
        self.pd = pd
        #: EF_VI_TX_TIMESTAMPS: one TX event per frame (ef_vi's TX_WITH_TIMESTAMP)
        self._tx_each = bool(flags & EF_VI_TX_TIMESTAMPS)
        self.port = pd.port
        self.clock_source = self.port.clock.source
        self.rx_buffer_len = PKT_BUF_SIZE
        rs = max(rxq, 1)
        self._p_addr = np.zeros(rs, np.uint64)
        self._p_id = np.zeros(rs, np.uint32)
        self._p_mask = rs - 1
        self._p_head = self._p_tail = 0
        self._p_addr_mv = self._p_addr.data  # plain-int loads for the per-frame path
        self._p_id_mv = self._p_id.data
        self._ev = event_array(evq)
        self._ev_mask = evq - 1
        self._ev_head = self._ev_tail = 0
        self._ev_mv = memoryview(self._ev.view(np.uint8))  # type: ignore[arg-type]
        self._f = {name: self._ev[name] for name in self._ev.dtype.names or ()}
        self._ev_words = self._ev.view(np.uint64).reshape(-1, 3)
        self._out: EventArray | None = None
        self._out_words = self._ev_words
        self._tx_done = 0
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._closed = False
        self.port.vis.append(self)
        #: called after events are queued (an fd-readiness hook: efvi.apps.udp sets it)
        self.on_event: Callable[[], None] | None = None

    # ---- events -------------------------------------------------------------------
    def _event(self, etype: int, flags: int, rq_id: int, length: int, ts: int,
               subtype: int = 0) -> None:
        """Queue one event (cost: one struct.pack_into)."""
        tail = self._ev_tail
        if tail - self._ev_head > self._ev_mask:
            self.counters["evq_overflow_drops"] += 1
            return
        _EV.pack_into(self._ev_mv, (tail & self._ev_mask) * 24, etype, subtype, flags, 0, 0,
                      rq_id, length, ts)
        self._ev_tail = tail + 1
        if self.on_event is not None:
            self.on_event()

    def _run_nic(self) -> None:
        """What the NIC does before a harvest: the TX doorbells rung since the last poll
        (any VI's), the frames waiting on a joined wire, the capture feed when idle."""
        fab = self.port.fabric
        if fab.pending:
            fab.flush()
        if self.port.remote is not None:
            self.port.pump()
        if self.port.feed is not None and self._ev_tail == self._ev_head:
            self.port.feed.pump()

    def harvest(self, out: EventArray, max_events: int) -> int:
        """Copy up to ``max_events`` queued events out (cost: one or two slice copies).

        First the NIC runs the TX doorbells rung since the last poll (any VI's), and on
        a port joined to another process (``wire=@NAME``) pulls the frames waiting on
        the wire through the port.
        """
        self._run_nic()
        k = min(max_events, self._ev_tail - self._ev_head, out.shape[0])
        if k <= 0:
            return 0
        # copy records as 3 × u64 words: a structured-dtype copy is ~10x slower
        src = self._ev_words
        if out is not self._out:
            self._out = out
            self._out_words = out.view(np.uint64).reshape(-1, 3)
        dst = self._out_words
        a = self._ev_head & self._ev_mask
        first = min(k, self._ev_mask + 1 - a)
        dst[:first] = src[a:a + first]
        if first < k:
            dst[first:k] = src[:k - first]
        self._ev_head += k
        return int(k)

    def harvest_events(self, max_events: int) -> tuple[list[Event], int] | None:
        """:meth:`harvest` as :class:`Event` tuples unpacked straight from the event
        ring (one ``struct`` record each; no numpy), with the RX descriptors they
        consumed (see :meth:`HwVI.harvest_events`)."""
        self._run_nic()
        h = self._ev_head
        k = min(max_events, self._ev_tail - h)
        if k <= 0:
            return [], 0
        mv = self._ev_mv
        a = h & self._ev_mask
        b = a + k
        if b <= self._ev_mask + 1:
            recs = _EV.iter_unpack(mv[a * 24:b * 24])
            types = mv[a * 24:b * 24:24].tolist()
        else:
            b -= self._ev_mask + 1
            recs = itertools.chain(_EV.iter_unpack(mv[a * 24:]),
                                   _EV.iter_unpack(mv[:b * 24]))
            types = mv[a * 24::24].tolist() + mv[:b * 24:24].tolist()
        T = _TYPES
        evs = [_new(Event, (T[t], st, fl, q, of, rq, ln, ts))
               for t, st, fl, q, of, rq, ln, ts in recs]
        self._ev_head = h + k
        return evs, types.count(_RX) + types.count(_DISCARD)

    def rx_one(self) -> int:
        """The next event if it is a whole-frame RX (see :meth:`HwVI.rx_one`); runs the
        pending doorbells first, as :meth:`harvest` does. Cost: one struct unpack."""
        fab = self.port.fabric
        if fab.pending:
            fab.flush()
        if self.port.remote is not None:
            self.port.pump()
        h = self._ev_head
        if h == self._ev_tail and self.port.feed is not None:
            self.port.feed.pump()
        if h == self._ev_tail:
            return -1
        t, _st, fl, _q, ofs, rq, ln, ts = _EV.unpack_from(self._ev_mv, (h & self._ev_mask) * 24)
        if t != _RX or fl & _CONT:
            return -2
        self._ev_head = h + 1
        rx1 = self.rx1
        rx1[0] = ofs
        rx1[1] = ln
        rx1[2] = ts
        return int(rq)

    def events_pending(self) -> int:
        """Events queued and not yet harvested."""
        return self._ev_tail - self._ev_head

    def sw_event(self, data: int) -> bool:
        if self._ev_tail - self._ev_head > self._ev_mask:
            return False
        self._event(int(EventType.SW), 0, 0, data, self.port.clock.now_ns())
        return True

    def wait(self, timeout_ns: int | None) -> None:
        """Sleep until the remote wire has frames (or the timeout); in-process wires
        deliver inside doorbells, so nothing can arrive while we sleep alone."""
        fab = self.port.fabric
        if fab.pending:
            fab.flush()
        if self._ev_tail != self._ev_head:
            return
        feed = self.port.feed
        if feed is not None and not feed.done:
            if feed.pump() or self._ev_tail != self._ev_head:
                return
            due = feed.next_due_ns()
            if due is not None:  # clock=real: sleep until the next record is due
                limit = 10_000_000 if timeout_ns is None else timeout_ns
                import time
                time.sleep(min(due, limit) / 1e9)
                return
        if self.port.remote is not None:
            self.port.remote.wait(1.0 if timeout_ns is None else timeout_ns / 1e9)
        elif timeout_ns:
            import time
            time.sleep(min(timeout_ns, 10_000_000) / 1e9)

    # ---- RX -----------------------------------------------------------------------
    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        n = addrs.shape[0]
        a = self._p_tail & self._p_mask
        first = min(n, self._p_mask + 1 - a)
        self._p_addr[a:a + first] = addrs[:first]
        self._p_id[a:a + first] = ids[:first]
        if first < n:
            self._p_addr[:n - first] = addrs[first:]
            self._p_id[:n - first] = ids[first:]
        self._p_tail += n

    def rx_post_one(self, addr: int, rq_id: int) -> None:
        """:meth:`rx_post` of one buffer from plain ints (two stores)."""
        i = self._p_tail & self._p_mask
        self._p_addr_mv[i] = addr
        self._p_id_mv[i] = rq_id
        self._p_tail += 1

    def rx_post_list(self, addrs: list[int], ids: list[int]) -> None:
        """:meth:`rx_post` of a few buffers from plain ints (two stores each)."""
        t, mask = self._p_tail, self._p_mask
        pa, pi = self._p_addr_mv, self._p_id_mv
        for a, i in zip(addrs, ids):
            pa[t & mask] = a
            pi[t & mask] = i
            t += 1
        self._p_tail = t

    def dma_in(self, batch: FrameBatch, sel: I64 | None, ts: I64,
               too_long: npt.NDArray[np.bool_] | None, mcast: bool | None = None) -> None:
        """Receive frames ``sel`` (None: all) of ``batch`` into posted buffers, in order.

        Fast path (every frame fits its buffer): O(1) numpy calls. Otherwise per frame:
        SOP/CONT chains, TRUNC discards, and RX_NO_DESC_TRUNC when buffers run out.
        ``too_long`` marks frames longer than the port accepts (None: none are);
        ``mcast`` says all frames are (or are not) multicast, None: look at each.
        """
        if self._closed:
            return
        n = len(batch) if sel is None else int(sel.shape[0])
        avail = self._p_tail - self._p_head
        m = min(n, avail)
        if m > 0 and (too_long is None or not (too_long if sel is None else too_long[sel]).any()):
            a = self._p_head & self._p_mask
            if a + m <= self._p_mask + 1:
                addrs = self._p_addr[a:a + m]
                ids = self._p_id[a:a + m]
            else:
                didx = (self._p_head + np.arange(m, dtype=np.int64)) & self._p_mask
                addrs = self._p_addr[didx]
                ids = self._p_id[didx]
            fsel = None if sel is None and m == n else (np.arange(m, dtype=np.int64)
                                                      if sel is None else sel[:m])
            lens = batch.lens if fsel is None else batch.lens[fsel]
            col = addrs % PKT_BUF_SIZE
            lim = min(self.rx_buffer_len, PKT_BUF_SIZE - int(col.max()))
            if int(lens.max()) <= lim or bool(
                    (lens <= np.minimum(self.rx_buffer_len,
                                        PKT_BUF_SIZE - col.astype(np.int64))).all()):
                self._dma_fast(batch, fsel, addrs, ids, lens, ts, mcast)
                self._p_head += m
                if n > m:
                    self.counters["rx_nodesc_drops"] += n - m
                return
        if m == 0:
            self.counters["rx_nodesc_drops"] += n
            return
        for i in (range(n) if sel is None else sel.tolist()):
            self._dma_slow(batch.frame(i), int(ts[i]),
                           bool(too_long[i]) if too_long is not None else False)

    def dma_in_one(self, frame: bytes, ts: int) -> None:
        """Receive one frame (see :meth:`dma_in_list`)."""
        self.dma_in_list([frame], [ts])

    def dma_in_list(self, frames: list[bytes], stamps: list[int]) -> None:
        """Receive a few frames into posted buffers, in order: the scalar twin of
        :meth:`dma_in` (same events and counters; no numpy). Per frame: one slice copy
        and one ``struct`` event store; a frame that does not fit its buffer takes the
        per-frame slow path (SOP/CONT chains, TRUNC discards)."""
        if self._closed:
            return
        pd = self.pd
        regions = pd._regions
        if len(regions) == 1:
            mem, base = regions[0].mv, pd._bases[0]
        else:
            mem, base = None, 0
        cap = min(self.rx_buffer_len, self.port.max_frame)
        head, tail, pmask = self._p_head, self._p_tail, self._p_mask
        paddr, pid = self._p_addr_mv, self._p_id_mv
        evmv, evmask, et = self._ev_mv, self._ev_mask, self._ev_tail
        pack = _EV.pack_into
        c = self.counters
        npk = nbytes = nodesc = over = 0
        for frame, ts in zip(frames, stamps):
            if head == tail:
                nodesc += 1
                continue
            ln = len(frame)
            i = head & pmask
            addr = paddr[i]
            if ln > cap or ln > PKT_BUF_SIZE - addr % PKT_BUF_SIZE:
                self._p_head, self._ev_tail = head, et
                self._dma_slow(frame, ts, ln > self.port.max_frame)
                head, et = self._p_head, self._ev_tail
                continue
            if mem is None:
                mv, off = pd.resolve_mv(addr)
                mv[off:off + ln] = frame
            else:
                off = addr - base
                mem[off:off + ln] = frame
            head += 1
            npk += 1
            nbytes += ln
            if et - self._ev_head > evmask:
                over += 1
                continue
            pack(evmv, (et & evmask) * 24, _RX, 0, _SOP | (_MCAST if frame[0] & 1 else 0), 0, 0,
                 pid[i], ln, ts)
            et += 1
        queued = et != self._ev_tail
        self._p_head, self._ev_tail = head, et
        if npk:
            c["rx_packets"] += npk
            c["rx_bytes"] += nbytes
        if nodesc:
            c["rx_nodesc_drops"] += nodesc
        if over:
            c["evq_overflow_drops"] += over
        if queued and self.on_event is not None:
            self.on_event()

    def _dma_fast(self, batch: FrameBatch, fsel: I64 | None, addrs: U64Array, ids: U32Array,
                  lens: I64, ts: I64, mcast: bool | None = None) -> None:
        m = int(addrs.shape[0])
        soffs = batch.offs if fsel is None else batch.offs[fsel]
        dst = self.pd.resolve(addrs)
        if dst is None:  # buffers in several regions: copy frame by frame
            for k in range(m):
                mem, off = self.pd.resolve_one(int(addrs[k]))
                o, ln = int(soffs[k]), int(lens[k])
                mem[off:off + ln] = batch.mem[o:o + ln]
        else:
            mem, doffs = dst
            scatter(mem, doffs, batch.mem, soffs, lens)
        if mcast is None:
            flags: object = ((batch.mem[soffs] & 1).astype(np.uint16) * _MCAST) | _SOP
        else:
            flags = _SOP | (_MCAST if mcast else 0)
        self._write_events(m, _RX, 0, flags, ids, lens, ts if fsel is None else ts[fsel])
        c = self.counters
        c["rx_packets"] += m
        c["rx_bytes"] += int(lens.sum())

    def _write_events(self, k: int, etype: int, subtype: int, flags: object, rq_id: object,
                      length: object, ts: object) -> None:
        """Queue ``k`` events; array arguments have length ``k`` (one or two slices)."""
        free = self._ev_mask + 1 - (self._ev_tail - self._ev_head)
        if k > free:
            self.counters["evq_overflow_drops"] += k - free
            k = free
            if k <= 0:
                return
        a = self._ev_tail & self._ev_mask
        first = min(k, self._ev_mask + 1 - a)
        f = self._f
        for lo, hi, src in ((a, a + first, 0), (0, k - first, first)):
            if hi <= lo:
                continue
            cnt = hi - lo
            f["type"][lo:hi] = etype
            f["subtype"][lo:hi] = subtype
            f["q_id"][lo:hi] = 0
            f["ofs"][lo:hi] = 0
            for name, v in (("flags", flags), ("rq_id", rq_id), ("len", length),
                            ("ts_ns", ts)):
                f[name][lo:hi] = v[src:src + cnt] if isinstance(v, np.ndarray) else v
        self._ev_tail += k
        if self.on_event is not None:
            self.on_event()

    def _take_desc(self) -> tuple[int, int] | None:
        if self._p_head == self._p_tail:
            return None
        i = self._p_head & self._p_mask
        self._p_head += 1
        return int(self._p_addr[i]), int(self._p_id[i])

    def _dma_slow(self, frame: bytes, ts: int, too_long: bool) -> None:
        total = len(frame)
        mcast = _MCAST if frame[0] & 1 else 0
        desc = self._take_desc()
        if desc is None:
            self.counters["rx_nodesc_drops"] += 1
            return
        if too_long:
            addr, rq_id = desc
            mem, off = self.pd.resolve_one(addr)
            cap = min(self.rx_buffer_len, PKT_BUF_SIZE - addr % PKT_BUF_SIZE)
            head = frame[:cap]  # may be shorter than the buffer: longer than the MTU only
            mem[off:off + len(head)] = np.frombuffer(head, np.uint8)
            self._event(int(EventType.RX_DISCARD), _SOP | mcast, rq_id, total, ts,
                        int(DiscardReason.TRUNC))
            self.counters["rx_trunc_drops"] += 1
            return
        done = 0
        flags = _SOP | mcast
        while True:
            addr, rq_id = desc
            mem, off = self.pd.resolve_one(addr)
            cap = min(self.rx_buffer_len, PKT_BUF_SIZE - addr % PKT_BUF_SIZE)
            piece = frame[done:done + cap]
            mem[off:off + len(piece)] = np.frombuffer(piece, np.uint8)
            done += len(piece)
            if done >= total:
                self._event(_RX, flags, rq_id, done, ts)
                self.counters["rx_packets"] += 1
                self.counters["rx_bytes"] += total
                return
            self._event(_RX, flags | _CONT, rq_id, done, ts)
            flags = mcast
            desc = self._take_desc()
            if desc is None:
                self._event(int(EventType.RX_NO_DESC_TRUNC), 0, 0, done, ts)
                self.counters["rx_nodesc_trunc_drops"] += 1
                return

    # ---- TX -----------------------------------------------------------------------
    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """TX doorbell: hand the descriptors to the NIC (cost: one list append).

        The NIC runs them — DMA read, wire, completions, delivery — the next time any VI
        of this process polls or waits, as hardware works while software carries on;
        doorbells rung back to back are processed as one batch. The arrays are views of
        the VI's TX ring, whose slots stay the NIC's until their completion.
        """
        if self._closed:
            return
        fab = self.port.fabric
        fab.pending.append((self, addrs, lens, ids))
        fab.pending_desc += int(ids.shape[0])
        for wake in fab.wakers:  # fileno() readiness: the NIC has work (rarely set)
            wake()
        if fab.pending_desc >= fab.PENDING_LIMIT:
            fab.flush()

    def tx_post_one(self, addr: int, length: int, rq_id: int) -> None:
        """:meth:`tx_post` of one frame from plain ints (no arrays built)."""
        if self._closed:
            return
        fab = self.port.fabric
        fab.pending.append((self, [addr], [length], [rq_id]))
        fab.pending_desc += 1
        for wake in fab.wakers:
            wake()
        if fab.pending_desc >= fab.PENDING_LIMIT:
            fab.flush()

    def tx_run(self, addrs: U64Array | list[int], lens: U32Array | list[int],
               ids: U32Array | list[int]) -> None:
        """Process TX descriptors: DMA-read the frames, send them, complete in order.

        Up to :data:`~efvi.adapters.sim.port.SCALAR_MAX` single-descriptor frames (and
        no injected fault) take the per-frame path (:meth:`_tx_scalar`); anything else
        the numpy batch path. Both give the same stamps, events and counters."""
        if self._closed:
            return
        port = self.port
        ndesc = len(ids)
        if ndesc <= _port.SCALAR_MAX and port.fail_next_tx is None:
            il = ids if isinstance(ids, list) else ids.tolist()
            if EF_REQUEST_ID_MASK not in il:
                self._tx_scalar(addrs if isinstance(addrs, list) else addrs.tolist(),
                                lens if isinstance(lens, list) else lens.tolist())
                return
        addrs = np.asarray(addrs, dtype=np.uint64)
        lens = np.asarray(lens, dtype=np.uint32)
        ids = np.asarray(ids, dtype=np.uint32)
        if int(ids.max()) != EF_REQUEST_ID_MASK:  # one descriptor per packet
            ends = np.arange(ndesc, dtype=np.int64)
        else:  # the last descriptor of each packet
            ends = np.flatnonzero(ids != EF_REQUEST_ID_MASK)
        if ends.shape[0] == 0:
            return
        if port.fail_next_tx is not None:
            subtype, port.fail_next_tx = port.fail_next_tx, None
            self._complete(ends, np.zeros(ends.shape[0], np.int64) + port.clock.now_ns(),
                           int(EventType.TX_ERROR), subtype)
            self._tx_done += ndesc
            return
        if ends.shape[0] == ndesc:
            flat = self.pd.resolve(addrs)
            plens = lens.astype(np.int64)
            if flat is not None:
                mem, offs = flat
                batch = FrameBatch(mem, offs, plens, np.empty(0, np.int64))
            else:
                batch = FrameBatch.from_frames(
                    [self.pd.read(int(a), int(ln)) for a, ln in zip(addrs, lens)],
                    np.empty(0, np.int64))
        else:
            frames: list[bytes] = []
            start = 0
            for e in ends.tolist():
                frames.append(b"".join(self.pd.read(int(addrs[k]), int(lens[k]))
                                       for k in range(start, e + 1)))
                start = e + 1
            batch = FrameBatch.from_frames(frames, np.empty(0, np.int64))
        batch.ts = port.serialise(batch.lens, port.clock.now_ns())
        self.counters["tx_packets"] += len(batch)
        self.counters["tx_bytes"] += int(batch.lens.sum())
        port.deliver(batch)
        self._complete(ends, batch.ts, _TX, 0)
        self._tx_done += ndesc

    def _tx_scalar(self, addrs: list[int], lens: list[int]) -> None:
        """A doorbell of a few single-descriptor frames, frame by frame (no numpy): the
        same stamps, deliveries, events and counters as the batch path."""
        port = self.port
        pd = self.pd
        if len(pd._regions) == 1:
            mem, base = pd._regions[0].mv, pd._bases[0]
            frames = [bytes(mem[a - base:a - base + ln]) for a, ln in zip(addrs, lens)]
        else:
            frames = []
            for a, ln in zip(addrs, lens):
                mv, off = pd.resolve_mv(a)
                frames.append(bytes(mv[off:off + ln]))
        stamps = port.serialise_list(lens)
        c = self.counters
        c["tx_packets"] += len(addrs)
        c["tx_bytes"] += sum(lens)
        port.deliver_list(frames, stamps)
        if self._tx_each:
            for ts in stamps:
                self._tx_done += 1
                self._event(_TX, 0, self._tx_done & 0xFFFFFFFF, 0, ts)
            return
        self._tx_done += len(addrs)
        self._event(_TX, 0, self._tx_done & 0xFFFFFFFF, 0, stamps[-1])

    def _complete(self, ends: I64, ts: I64, etype: int, subtype: int) -> None:
        """TX events, one per ≤ 64 packets (one per packet with TX timestamps on);
        rq_id = descriptors completed (mod 2**32)."""
        npk = int(ends.shape[0])
        step = 1 if self._tx_each else EF_VI_TRANSMIT_BATCH
        last = np.arange(step - 1, npk, step, dtype=np.int64)
        if last.shape[0] == 0 or last[-1] != npk - 1:
            last = np.append(last, npk - 1)
        self._write_events(int(last.shape[0]), etype, subtype, 0,
                           (self._tx_done + ends[last] + 1) & 0xFFFFFFFF, 0,
                           ts[last] if ts.shape[0] == npk else 0)

    def stats(self) -> dict[str, int]:
        """This VI's counters plus the port's wire-level drops (``port_*_drops``) and,
        on a port playing a capture, its ``feed_*`` counters."""
        out = dict(self.counters)
        for k, v in self.port.counters.items():
            if k.endswith("_drops") and k.startswith("tx_"):
                out["port_" + k] = v
            elif k.startswith("feed_"):
                out[k] = v
        return out

    def close(self) -> None:
        fab = self.port.fabric
        if fab.pending:
            fab.flush()
        self._closed = True
        if self in self.port.vis:
            self.port.vis.remove(self)
        self._p_head = self._p_tail
