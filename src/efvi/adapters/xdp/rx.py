"""The ``xdp`` adapter's RX path: buffers → FILL ring(s), RX ring(s) → RX events.

Read top to bottom: :meth:`RxPath.rx_post` writes FILL descriptors (scalar for one
buffer, spread over queues otherwise); :meth:`RxPath._harvest_rx` turns RX ring
entries into events (vectorised, or :meth:`RxPath._harvest_rx_scalar` for a few),
converting the program's timestamps.
"""

from __future__ import annotations

import time

import numpy as np

from efvi.adapters.base import EventArray, U32Array, U64Array
from efvi.adapters.xdp._common import _HW_TS_MASK, _SCALAR_RX, M32, RX_FLAG_HW_TS
from efvi.adapters.xdp.vibase import XdpVIBase
from efvi.adapters.xdp.xsk import (ADDR_MASK, OFFSET_SHIFT, XDP_PKT_CONTD, XDP_RING_NEED_WAKEUP,
                                   Ring, XskSocket)
from efvi.events import Event, EventType

_CONT = 0x2  # RxFlags.CONT
_RX = EventType.RX
_new = tuple.__new__


class RxPath(XdpVIBase):
    """RX half of :class:`~efvi.adapters.xdp.vi.XdpVI`."""

    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        """FILL doorbell: write ``addrs`` to the FILL ring(s), spreading over queues.

        Cost: a few numpy ops per queue touched, one producer store each, and a
        ``recvfrom`` only when the driver asks (need_wakeup). The first call creates the
        VI's sockets and may raise SetupError.
        """
        if self._closed or not self._ready():
            return
        n = int(addrs.shape[0])
        if n == 0 or not self.rx_socks:
            return
        self._rx_post(addrs, ids, n)
        if not self._published:
            self._publish()  # after the buffers are in: no frame meets an empty ring

    def _rx_post(self, addrs: U64Array, ids: U32Array, n: int) -> None:
        if n == 1 and len(self.rx_socks) == 1:  # per-packet refill: scalar path
            q, s = self.rx_socks[0]
            f = s.fill
            assert f is not None
            addr = int(addrs[0])
            self._rx_id_mv[addr >> 11] = int(ids[0])
            p = self._fill_prod[q]
            f.desc_q[p & f.mask] = addr
            p = (p + 1) & M32
            f.prod[0] = p
            self._fill_prod[q] = p
            self._q_out[q] += 1
            if f.flags[0] & XDP_RING_NEED_WAKEUP:
                s.kick_rx()
            return
        self._rx_id[(addrs >> np.uint64(11)).astype(np.intp)] = ids
        if len(self.rx_socks) == 1:
            self._fill(self.rx_socks[0], addrs)
            return
        # give buffers to the queues holding the fewest
        outs = self._q_out
        total = sum(outs.values()) + n
        share = -(-total // len(self.rx_socks))
        pos = 0
        order = sorted(self.rx_socks, key=lambda x: outs[x[0]])
        for qs in order:
            k = min(n - pos, max(share - outs[qs[0]], 0))
            if k > 0:
                self._fill(qs, addrs[pos:pos + k])
                pos += k
        if pos < n:
            self._fill(order[0], addrs[pos:])

    def _fill(self, qs: tuple[int, XskSocket], addrs: U64Array) -> None:
        q, s = qs
        f = s.fill
        assert f is not None
        p = self._fill_prod[q]
        k = int(addrs.shape[0])
        a = p & f.mask
        if a + k <= f.size:
            f.desc[a:a + k] = addrs
        else:
            f.desc[(p + np.arange(k, dtype=np.int64)) & f.mask] = addrs
        self._fill_publish(q, s, p + k, k)

    def _fill_publish(self, q: int, s: XskSocket, prod: int, k: int) -> None:
        """Make ``k`` descriptors written up to ``prod`` visible on queue ``q``'s FILL
        ring: one producer store, the queue's count, a kick if the kernel asks for one."""
        f = s.fill
        assert f is not None
        prod &= M32
        f.prod[0] = prod
        self._fill_prod[q] = prod
        self._q_out[q] += k
        if f.flags[0] & XDP_RING_NEED_WAKEUP:
            s.kick_rx()

    def rx_post_one(self, addr: int, rq_id: int) -> None:
        """One buffer to the FILL ring from plain ints (the per-packet refill)."""
        if len(self.rx_socks) != 1 or not self._published:
            super().rx_post_one(addr, rq_id)
            return
        q, s = self.rx_socks[0]
        f = s.fill
        assert f is not None
        self._rx_id_mv[addr >> 11] = rq_id
        p = self._fill_prod[q]
        f.desc_q[p & f.mask] = addr
        self._fill_publish(q, s, p + 1, 1)

    def rx_post_list(self, addrs: list[int], ids: list[int]) -> None:
        """A few buffers to the FILL ring from plain ints: one descriptor store each,
        one producer store, one need_wakeup check (the per-packet loop's refill)."""
        if len(self.rx_socks) != 1 or not self._published:
            super().rx_post_list(addrs, ids)
            return
        q, s = self.rx_socks[0]
        f = s.fill
        assert f is not None
        idmv, dq, fm = self._rx_id_mv, f.desc_q, f.mask
        p = p0 = self._fill_prod[q]
        for a, i in zip(addrs, ids):
            idmv[a >> 11] = i
            dq[p & fm] = a
            p += 1
        self._fill_publish(q, s, p, p - p0)

    def harvest_events(self, max_events: int) -> tuple[list[Event], int] | None:
        """Up to ``max_events`` whole-frame RX events of a one-queue VI as
        :class:`Event` tuples read straight from the RX ring (see
        :meth:`HwVI.harvest_events`): per frame ~4 memoryview loads, the stamp converted
        and one tuple; one consumer store per call; no numpy. None — use
        :meth:`harvest` — while TX completions or SW events are outstanding, on several
        queues, or at a multi-buffer frame."""
        one = self._rx1q
        if one is None:
            return None
        q, r = one
        cons = self._rx_cons[q]
        k = (r.prod[0] - cons) & M32
        if self._sw or self._runs or self._tx_unkicked or self._chain_len[q]:
            return None
        if k == 0:
            return [], 0
        if k > max_events:
            k = max_events
        dq, di, ids, umem, umem_q, mask = (r.desc_q, r.desc_i, self._rx_id_mv, self._umem_mv,
                                           self._umem_q, r.mask)
        self._ts_age -= 1
        if self._ts_age <= 0:
            self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                            - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self._ts_age = 256
        off = self._ts_off
        evs: list[Event] = []
        add = evs.append
        nbytes = 0
        j = cons & mask
        for i in range(k):
            if di[4 * j + 3] & XDP_PKT_CONTD:  # a multi-buffer frame: harvest takes it
                k = i
                break
            raw = dq[2 * j]
            ln = di[4 * j + 2]
            base = raw & ADDR_MASK
            ofs = raw >> OFFSET_SHIFT
            data = base + ofs
            meta = (umem_q[(data >> 3) - 1] if not data & 7 else
                    int.from_bytes(umem[data - 8:data], "little", signed=True))
            if meta > 0:
                add(_new(Event, (_RX, 0, 1 | ((umem[data] & 1) << 3), q, ofs, ids[base >> 11],
                                 ln, meta + off)))
            elif meta == 0:
                add(_new(Event, (_RX, 0, 1 | ((umem[data] & 1) << 3), q, ofs, ids[base >> 11],
                                 ln, 0)))
            else:  # bit 63: a hardware stamp (kfunc program only)
                self.clock_source = "hw"
                add(_new(Event, (_RX, 0, 1 | ((umem[data] & 1) << 3) | RX_FLAG_HW_TS, q, ofs,
                                 ids[base >> 11], ln, meta & _HW_TS_MASK)))
            nbytes += ln
            j = (j + 1) & mask
        if k == 0:
            return None
        cons = (cons + k) & M32
        r.cons[0] = cons
        self._rx_cons[q] = cons
        self._q_out[q] -= k
        c = self.counters
        c["rx_packets"] += k
        c["rx_bytes"] += nbytes
        return evs, k

    def rx_one(self) -> int:
        """The next RX frame of a one-queue VI (see :meth:`HwVI.rx_one`): one descriptor
        read, its timestamp converted, the consumer published. -2 on several queues or
        a multi-buffer frame (harvest those)."""
        socks = self.rx_socks
        if len(socks) != 1:
            return -2 if socks else -1
        q, s = socks[0]
        r = s.rx
        assert r is not None
        cons = self._rx_cons[q]
        if r.prod[0] == cons:
            return -1
        j = cons & r.mask
        if self._chain_len[q] or r.desc_i[4 * j + 3] & XDP_PKT_CONTD:
            return -2  # a multi-buffer frame: harvest it
        raw = r.desc_q[2 * j]
        ln = r.desc_i[4 * j + 2]
        base = raw & ADDR_MASK
        ofs = raw >> OFFSET_SHIFT
        data = base + ofs
        meta = int.from_bytes(self._umem_mv[data - 8:data], "little", signed=True)
        if meta > 0:
            self._ts_age -= 1
            if self._ts_age <= 0:
                self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                                - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
                self._ts_age = 256
            ts = meta + self._ts_off
        elif meta < 0:
            self.clock_source = "hw"
            ts = meta & _HW_TS_MASK
        else:
            ts = 0
        rx1 = self.rx1
        rx1[0] = ofs
        rx1[1] = ln
        rx1[2] = ts
        cons = (cons + 1) & M32
        r.cons[0] = cons
        self._rx_cons[q] = cons
        self._q_out[q] -= 1
        c = self.counters
        c["rx_packets"] += 1
        c["rx_bytes"] += ln
        return int(self._rx_id_mv[base >> 11])

    def _harvest_rx(self, q: int, s: XskSocket, out: EventArray, n: int, room: int) -> int:
        r = s.rx
        assert r is not None
        prod = r.prod[0]
        cons = self._rx_cons[q]
        k = min((prod - cons) & M32, room)
        if k <= 0:
            return 0
        if k <= _SCALAR_RX or self._chain_len[q]:
            return self._harvest_rx_scalar(q, r, out, n, k, cons)
        a = cons & r.mask
        if a + k <= r.size:
            d = r.desc[a:a + k]
        else:
            d = r.desc[(cons + np.arange(k, dtype=np.int64)) & r.mask]
        if self.adapter.sg and (d["options"] & XDP_PKT_CONTD).any():
            return self._harvest_rx_scalar(q, r, out, n, k, cons)  # multi-buffer frames
        raw = d["addr"]
        lens = d["len"].copy()
        base = raw & np.uint64(ADDR_MASK)
        ofs = raw >> np.uint64(OFFSET_SHIFT)
        data = (base + ofs).astype(np.intp)
        ids = self._rx_id[(base >> np.uint64(11)).astype(np.intp)]
        umem = self.pd.umem
        assert umem is not None
        mpos = data - 8
        if not (mpos & 7).any():  # the stamps are 8-byte words: one gather
            meta = self._umem_i64[mpos >> 3]
        else:
            meta = umem[mpos[:, None] + np.arange(8)].view("<i8")[:, 0]
        mcast = umem[data] & 1
        self._ts_age -= 1
        if self._ts_age <= 0:
            self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                            - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self._ts_age = 256
        # each 24-byte record as three 8-byte words (EVENT_DTYPE, little-endian):
        # type | subtype << 8 | flags << 16 | q_id << 32 | ofs << 48; rq_id | len << 32; ts
        words = out.view(np.uint64).reshape(-1, 3)[n:n + k]
        flags = 1 | (mcast.astype(np.uint64) << 3)
        ts = np.where(meta > 0, meta + self._ts_off, 0)
        hw = meta < 0  # bit 63: a hardware stamp (kfunc program only)
        if hw.any():
            self.clock_source = "hw"
            ts = np.where(hw, meta & _HW_TS_MASK, ts)
            flags |= hw.astype(np.uint64) << 8
        words[:, 0] = (flags << 16) | (ofs << 48) | (q << 32)
        words[:, 1] = ids.astype(np.uint64) | (lens.astype(np.uint64) << 32)
        words[:, 2] = ts.view(np.uint64)
        r.cons[0] = (cons + k) & M32
        self._rx_cons[q] = (cons + k) & M32
        self._q_out[q] -= k
        self.counters["rx_packets"] += k
        self.counters["rx_bytes"] += int(lens.sum())
        return k

    def _harvest_rx_scalar(self, q: int, r: "Ring", out: EventArray, n: int, k: int,
                           cons: int) -> int:
        """Few frames: memoryview reads and one record store each (no numpy calls)."""
        dq, di, ids, umem = r.desc_q, r.desc_i, self._rx_id_mv, self._umem_mv
        self._ts_age -= 1
        if self._ts_age <= 0:
            self._ts_off = (time.clock_gettime_ns(time.CLOCK_REALTIME)
                            - time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            self._ts_age = 256
        off = self._ts_off
        mask = r.mask
        nbytes = 0
        frames = 0
        chain = self._chain_len[q]
        for i in range(k):
            j = (cons + i) & mask
            raw = dq[2 * j]
            ln = di[4 * j + 2]
            contd = di[4 * j + 3] & XDP_PKT_CONTD
            base = raw & ADDR_MASK
            ofs = raw >> OFFSET_SHIFT
            nbytes += ln
            if chain:  # a later buffer of a multi-buffer frame: CONT while more follow
                chain += ln
                out[n + i] = (0, 0, _CONT if contd else 0, q, ofs, ids[base >> 11], chain,
                              self._chain_ts[q])
                if not contd:
                    chain = 0
                    frames += 1
                continue
            data = base + ofs
            meta = int.from_bytes(umem[data - 8:data], "little", signed=True)
            fl = 1 | ((umem[data] & 1) << 3)
            if meta >= 0:
                ts = meta + off if meta > 0 else 0
            else:  # bit 63: a hardware stamp
                self.clock_source = "hw"
                fl |= RX_FLAG_HW_TS
                ts = meta & _HW_TS_MASK
            if contd:  # the first buffer of a multi-buffer frame (SOP|CONT)
                fl |= _CONT
                chain = ln
                self._chain_ts[q] = ts
            else:
                frames += 1
            out[n + i] = (0, 0, fl, q, ofs, ids[base >> 11], ln, ts)
        self._chain_len[q] = chain
        cons = (cons + k) & M32
        r.cons[0] = cons
        self._rx_cons[q] = cons
        self._q_out[q] -= k
        self.counters["rx_packets"] += frames
        self.counters["rx_bytes"] += nbytes
        return k

