"""The ``packet`` adapter's RX path: ring slots → posted buffers (copies), events queued.

Read top to bottom: :meth:`RxPath.rx_post` queues descriptors after taking frames
already waiting; :meth:`RxPath._take` walks the run of ready slots and hands it to the
vectorised :meth:`RxPath._take_fast` (one buffer per frame, one region) or the
frame-by-frame :meth:`RxPath._take_slow` (VLAN re-insertion, chains, truncation).
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import U32Array, U64Array
from efvi.adapters.packet import ring
from efvi.adapters.packet._common import (_CONT, _MCAST, _NODESC, _OFF_MASK, _OUT,
                                          _PACKET_OUTGOING, _PKTTYPE_OFF, _REGION_SHIFT, _RX,
                                          _RXD, _SCAN, _SOP)
from efvi.adapters.packet.vibase import PacketVIBase
from efvi.adapters.sim.dma import scatter
from efvi.constants import PKT_BUF_SIZE
from efvi.events import DiscardReason


class RxPath(PacketVIBase):
    """RX half of :class:`~efvi.adapters.packet.vi.PacketVI`."""

    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        """Take waiting frames with the buffers posted so far, then queue these.

        Cost: one ring scan (a strided numpy read) plus the copies it does; O(n) stores.
        """
        if self.closed:
            return
        self._take()
        n = int(addrs.shape[0])
        idx = (self._d_tail + np.arange(n, dtype=np.int64)) & self._d_mask
        self._d_addr[idx] = addrs
        self._d_id[idx] = ids
        self._d_tail += n

    def _take(self, budget: int | None = None) -> None:
        """Move ready ring frames into posted buffers (events into the pending queue).

        ``budget`` bounds the frames delivered (frames with no buffer are dropped
        whatever the budget: a drop costs no event). A call takes the run of frames
        that is ready when it looks and returns where that run ends: it never chases
        frames that arrive while it copies. (Chasing a steady stream costs a scan per
        few frames and keeps the caller from reposting buffers until all are used, so
        a busy consumer would drop frames while it still had time to spare.)
        """
        r = self._rx
        if r is None:
            return
        ns = r.nslots
        left = budget if budget is not None else 1 << 62
        while left > 0:
            cur = self._cur
            w = min(ns - cur, _SCAN)
            ready = (r.status[cur:cur + w] & ring.TP_STATUS_USER).astype(bool)
            nready = w if ready.all() else int(ready.argmin())
            if nready == 0:
                return
            run_ends = nready < w  # later frames arrived after we looked: next call's
            while nready > 0:  # the run seen in this window, without looking again
                avail = self._d_tail - self._d_head
                if avail == 0:  # nowhere to put them: dropped, as on a NIC
                    self.c["rx_nodesc_drops"] += nready
                    r.status[cur:cur + nready] = ring.TP_STATUS_KERNEL
                    cur += nready
                    self._cur = cur % ns
                    break
                take = min(nready, avail, self._room(), left)
                if take <= 0:
                    return
                done = self._take_fast(cur, take)
                if done == 0:
                    done = self._take_slow(cur, take)
                    if done == 0:
                        return
                cur += done
                self._cur = cur % ns
                nready -= done
                left -= done
                if left <= 0:
                    return
            if run_ends:
                return

    def _take_fast(self, cur: int, n: int) -> int:
        """n frames from slot ``cur``, one buffer each, vectorised; 0 if not applicable."""
        r = self._rx
        assert r is not None
        sl = slice(cur, cur + n)
        status = r.status[sl]
        lens = r.length[sl].astype(np.int64)
        if (status & ring.TP_STATUS_VLAN_VALID).any() or (r.snaplen[sl] != r.length[sl]).any():
            return 0
        didx = (self._d_head + np.arange(n, dtype=np.int64)) & self._d_mask
        addrs = self._d_addr[didx]
        region = addrs >> np.uint64(_REGION_SHIFT)
        if (region != region[0]).any():
            return 0
        res = self.pd.resolve(int(addrs[0]))
        if res is None:
            return 0
        mem, _ = res
        offs = (addrs & np.uint64(_OFF_MASK)).astype(np.int64)
        cap = np.minimum(self.rx_buffer_len, PKT_BUF_SIZE - (offs % PKT_BUF_SIZE))
        if (lens > cap).any():
            return 0
        soffs = np.arange(cur, cur + n, dtype=np.int64) * r.fs + r.mac[sl]
        scatter(mem, offs, r.mem, soffs, lens)
        ts = r.sec[sl].astype(np.int64) * 1_000_000_000 + r.nsec[sl]
        first = r.mem[soffs]
        r.status[sl] = ring.TP_STATUS_KERNEL  # the slots go back to the kernel
        ev = self._pend[self._np:self._np + n]
        ev["type"] = _RX
        ev["subtype"] = 0
        ev["flags"] = _SOP | ((first & 1).astype(np.uint16) * _MCAST)
        if self.adapter.direction != "in":  # mark what this host sent
            out = r.mem[np.arange(cur, cur + n, dtype=np.int64) * r.fs + _PKTTYPE_OFF]
            ev["flags"] |= (out == _PACKET_OUTGOING).astype(np.uint16) * _OUT
        ev["q_id"] = self.q_id
        ev["ofs"] = 0
        ev["rq_id"] = self._d_id[didx]
        ev["len"] = lens
        ev["ts_ns"] = ts
        self._np += n
        self._d_head += n
        self.c["rx_packets"] += n
        self.c["rx_bytes"] += int(lens.sum())
        return n

    def _next_desc(self) -> tuple[int, int] | None:
        if self._d_head == self._d_tail:
            return None
        i = self._d_head & self._d_mask
        self._d_head += 1
        return int(self._d_addr[i]), int(self._d_id[i])

    def _take_slow(self, cur: int, n: int) -> int:
        """Frame by frame: VLAN re-insertion, chains, truncation. Returns frames taken."""
        r = self._rx
        assert r is not None
        c = self.c
        taken = 0
        for slot in range(cur, cur + n):
            st = int(r.status[slot])
            length, snap, mac = int(r.length[slot]), int(r.snaplen[slot]), int(r.mac[slot])
            ts = int(r.sec[slot]) * 1_000_000_000 + int(r.nsec[slot])
            base = slot * r.fs + mac
            frame = r.mem[base:base + snap]
            if st & ring.TP_STATUS_VLAN_VALID:
                tpid = int(r.vlan_tpid[slot]) if st & ring.TP_STATUS_VLAN_TPID_VALID else 0
                tag = np.frombuffer(struct.pack(">HH", tpid or 0x8100, int(r.vlan_tci[slot])),
                                    np.uint8)
                frame = np.concatenate((frame[:12], tag, frame[12:]))
                length += 4
                snap += 4
            # worst case events: one per buffer (≥ 64 bytes each) + a NO_DESC_TRUNC
            if self._room() < min(length // 64 + 2, self._d_tail - self._d_head + 1):
                break
            desc = self._next_desc()
            if desc is None:
                c["rx_nodesc_drops"] += 1
                r.status[slot] = ring.TP_STATUS_KERNEL
                taken += 1
                continue
            mcast = _MCAST if snap and frame[0] & 1 else 0
            if int(r.mem[slot * r.fs + _PKTTYPE_OFF]) == _PACKET_OUTGOING:
                mcast |= _OUT  # rides with the SOP flags: this host sent it
            if snap < length:  # the ring cut it (longer than snaplen): TRUNC discard
                addr, rq_id = desc
                self._copy(addr, frame, 0)
                self._event(_RXD, _SOP | mcast, rq_id, length, ts, int(DiscardReason.TRUNC))
                c["rx_trunc_drops"] += 1
            else:
                self._chain(desc, frame, length, mcast, ts)
            r.status[slot] = ring.TP_STATUS_KERNEL
            taken += 1
        return taken

    def _copy(self, addr: int, frame: npt.NDArray[np.uint8], start: int) -> int:
        """Copy from ``frame[start:]`` into the buffer at ``addr``; return bytes copied."""
        res = self.pd.resolve(addr)
        if res is None:
            return 0
        mem, off = res
        cap = min(self.rx_buffer_len, PKT_BUF_SIZE - off % PKT_BUF_SIZE)
        piece = frame[start:start + cap]
        mem[off:off + piece.shape[0]] = piece
        return int(piece.shape[0])

    def _chain(self, desc: tuple[int, int], frame: npt.NDArray[np.uint8], total: int,
               mcast: int, ts: int) -> None:
        c = self.c
        done = 0
        flags = _SOP | mcast
        while True:
            addr, rq_id = desc
            done += self._copy(addr, frame, done)
            if done >= total:
                self._event(_RX, flags, rq_id, total, ts)
                c["rx_packets"] += 1
                c["rx_bytes"] += total
                return
            self._event(_RX, flags | _CONT, rq_id, done, ts)
            flags = mcast
            nxt = self._next_desc()
            if nxt is None:
                self._event(_NODESC, 0, 0, done, ts)
                c["rx_nodesc_trunc_drops"] += 1
                return
            desc = nxt

