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
from efvi.adapters.dma import scatter
from efvi.constants import PKT_BUF_SIZE
from efvi.events import DiscardReason

#: frame-sized numpy void types, by size (made once)
_VOID: dict[int, np.dtype[np.void]] = {}


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
        a = self._d_tail & self._d_mask
        if a + n <= self._d_mask + 1:  # no wrap: two slice stores
            self._d_addr[a:a + n] = addrs
            self._d_id[a:a + n] = ids
        else:
            idx = (self._d_tail + np.arange(n, dtype=np.int64)) & self._d_mask
            self._d_addr[idx] = addrs
            self._d_id[idx] = ids
        self._d_tail += n

    def rx_one(self) -> int:
        """The next frame, if it is the plain case, as :meth:`HwVI.rx_one` takes it: one
        slot read, one slice copy into the first posted buffer, the slot returned to the
        kernel; no numpy calls. -2 when events are pending or the frame needs the
        general path (VLAN tag, truncation, longer than a buffer, no buffer): harvest."""
        r = self._rx
        if r is None or self.closed:
            # TPACKET_V3 blocks have no one-frame path: poll() takes their frames
            return -2 if self._blocks is not None and not self.closed else -1
        if self._np > self._ph or self._blocks is not None:
            return -2  # events pending, or a TPACKET_V3 ring: harvest
        cur = self._cur
        st = int(r.status[cur])
        if not st & ring.TP_STATUS_USER:
            return -1
        if st & ring.TP_STATUS_VLAN_VALID or self._d_head == self._d_tail:
            return -2
        length, snap = int(r.length[cur]), int(r.snaplen[cur])
        i = self._d_head & self._d_mask
        addr = int(self._d_addr[i])
        res = self.pd.resolve(addr)
        if res is None or snap != length:
            return -2
        mem, off = res
        if length > min(self.rx_buffer_len, PKT_BUF_SIZE - off % PKT_BUF_SIZE):
            return -2
        if self.adapter.direction != "in":
            return -2  # outgoing frames carry a flag: the general path sets it
        base = cur * r.fs + int(r.mac[cur])
        mem[off:off + length] = r.mem[base:base + length]
        rx1 = self.rx1
        rx1[0] = 0
        rx1[1] = length
        rx1[2] = int(r.sec[cur]) * 1_000_000_000 + int(r.nsec[cur])
        r.status[cur] = ring.TP_STATUS_KERNEL
        self._cur = (cur + 1) % r.nslots
        self._d_head += 1
        c = self.c
        c["rx_packets"] += 1
        c["rx_bytes"] += length
        return int(self._d_id[i])

    def _take(self, budget: int | None = None) -> None:
        if self._blocks is not None:
            self._take_blocks(budget)
        else:
            self._take_slots(budget)

    def _take_slots(self, budget: int | None = None) -> None:
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
        if not r.status[self._cur] & ring.TP_STATUS_USER:
            return  # nothing ready: one scalar read, no scan (the idle busy-poll)
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
                fr = _slot_frames(r, cur, take)
                done = self._take_fast(fr, take)
                if done == 0:
                    done = self._take_slow(fr, take)
                    if done == 0:
                        return
                r.status[cur:cur + done] = ring.TP_STATUS_KERNEL  # back to the kernel
                cur += done
                self._cur = cur % ns
                nready -= done
                left -= done
                if left <= 0:
                    return
            if run_ends:
                return

    def _take_blocks(self, budget: int | None = None) -> None:
        """TPACKET_V3: the frames of the block being read, then of the next block if it
        is ready — at most one block newly opened per call (never chases the kernel).
        A block goes back to the kernel when its last frame has been taken (or dropped:
        frames finding no posted buffer are ``rx_nodesc_drops``, as with slots)."""
        br = self._blocks
        assert br is not None
        left = budget if budget is not None else 1 << 62
        opened = False
        while left > 0:
            fr = self._bfr
            if fr is None:
                if opened or not br.ready(self._cur):
                    return
                fr = self._bfr = br.frames(self._cur)
                self._bpos = 0
                opened = True
            pos, k = self._bpos, len(fr)
            while pos < k:
                avail = self._d_tail - self._d_head
                if avail == 0:  # nowhere to put them: dropped, as on a NIC
                    self.c["rx_nodesc_drops"] += k - pos
                    pos = k
                    break
                take = min(k - pos, avail, self._room(), left)
                if take <= 0:
                    self._bpos = pos
                    return
                part = fr if pos == 0 and take == k else fr.part(pos, pos + take)
                done = self._take_stride(part, take) if fr.stride else 0
                if done == 0:
                    done = self._take_fast(part, take)
                if done == 0:
                    done = self._take_slow(part, take)
                    if done == 0:
                        self._bpos = pos
                        return
                pos += done
                left -= done
                if left <= 0 and pos < k:
                    self._bpos = pos
                    return
            br.release(self._cur)
            self._cur = (self._cur + 1) % br.nblocks
            self._bfr = None

    def _take_stride(self, fr: ring.Frames, n: int) -> int:
        """TPACKET_V3 frames of one stride (:attr:`~.ring.Frames.stride`) — none cut
        short, no VLAN tag, lengths within one 8-byte word of each other — into posted
        buffers at one column of one region: ~20 numpy calls whatever ``n``, each one
        1-D pass (the header columns are a contiguous copy, the frames a strided view
        of the block: no gathers, no index arrays, no 2-D loops); each frame moves as
        one fixed-size element, each event as three 8-byte words. Stops where the
        descriptor FIFO wraps (the caller comes back for the rest); returns the frames
        taken, 0 when they need :meth:`_take_fast`.
        """
        st, h, mac, mem = fr.stride, fr.h0, fr.mac, fr.mem
        i0 = self._d_head & self._d_mask
        if n > self._d_mask + 1 - i0:
            n = self._d_mask + 1 - i0
            fr = fr.part(0, n)
        lens = fr.length
        lmax = int(lens.max())
        lmin = int(lens.min())
        cw = (lmax + 7) & ~7  # bytes moved per frame: whole words
        if lmax > min(self.rx_buffer_len, st - mac) or cw - lmin > 7 or (st | mac) & 7 \
                or (fr.status & ring.TP_STATUS_VLAN_VALID).any() or (fr.snaplen != lens).any():
            return 0
        addrs = self._d_addr[i0:i0 + n]
        a0 = int(addrs[0])
        res = self.pd.resolve(a0)
        if res is None:
            return 0
        dmem, off0 = res
        col = off0 & (PKT_BUF_SIZE - 1)
        if col & 7 or col + cw > PKT_BUF_SIZE:
            return 0
        vt = _VOID.get(cw)
        if vt is None:
            vt = _VOID[cw] = np.dtype((np.void, cw))
        src: npt.NDArray[np.void] = np.ndarray((n,), vt, mem, h + mac, (st,))
        nrows = dmem.shape[0] // PKT_BUF_SIZE
        dst: npt.NDArray[np.void] = np.ndarray((nrows,), vt, dmem, col, (PKT_BUF_SIZE,))
        r0 = off0 >> 11
        if r0 + n <= nrows and np.array_equal(addrs, self._iota2k[:n] + np.uint64(a0)):
            dst[r0:r0 + n] = src  # buffers posted in address order: one slice store
        else:  # any order: every buffer at this column of this region, else not here
            rel = addrs - np.uint64(a0 - off0 + col)
            if int(rel.max()) >= dmem.shape[0] or (rel & np.uint64(PKT_BUF_SIZE - 1)).any():
                return 0
            dst[rel >> np.uint64(11)] = src
        # events: type RX, flags SOP (| MULTICAST | OUTGOING), q_id; rq_id, len; ts. The
        # frames' first bytes are read after the copy brought their lines in
        np0 = self._np
        ev = self._pend_words[np0:np0 + n]
        w0 = (_SOP << 16) | (self.q_id << 32)
        mc = np.ndarray((n,), np.uint8, mem, h + mac, (st,)) & 1
        if self.adapter.direction != "in":
            out = np.ndarray((n,), np.uint8, mem, h + fr.pkttype_at, (st,)) == _PACKET_OUTGOING
            ev[:, 0] = w0 | (mc.astype(np.uint64) << np.uint64(19)) \
                | (out.astype(np.uint64) << np.uint64(16 + _OUT.bit_length() - 1))
        elif mc.any():
            ev[:, 0] = w0 | (mc.astype(np.uint64) << np.uint64(19))
        else:
            ev[:, 0] = w0
        ev32 = self._pend_u32[np0:np0 + n]
        ev32[:, 2] = self._d_id[i0:i0 + n]
        if lmin == lmax:
            ev32[:, 3] = lmax
            nbytes = n * lmax
        else:
            ev32[:, 3] = lens
            nbytes = int(lens.sum())
        ts = self._pend_i64[np0:np0 + n, 2]
        ts[:] = fr.sec
        ts *= 1_000_000_000
        ts += fr.nsec
        self._np = np0 + n
        self._d_head += n
        c = self.c
        c["rx_packets"] += n
        c["rx_bytes"] += nbytes
        return n

    def _take_fast(self, fr: ring.Frames, n: int) -> int:
        """The n frames of ``fr``, one buffer each, vectorised; 0 if not applicable."""
        status = fr.status
        lens = fr.length.astype(np.int64)
        if (status & ring.TP_STATUS_VLAN_VALID).any() or (fr.snaplen != fr.length).any():
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
        soffs = fr.soff
        scatter(mem, offs, fr.mem, soffs, lens)
        ts = fr.sec.astype(np.int64) * 1_000_000_000 + fr.nsec
        first = fr.mem[soffs]
        ev = self._pend[self._np:self._np + n]
        ev["type"] = _RX
        ev["subtype"] = 0
        ev["flags"] = _SOP | ((first & 1).astype(np.uint16) * _MCAST)
        if self.adapter.direction != "in":  # mark what this host sent
            out = fr.mem[fr.hdr + fr.pkttype_at]
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

    def _take_slow(self, fr: ring.Frames, n: int) -> int:
        """Frame by frame: VLAN re-insertion, chains, truncation. Returns frames taken
        (the caller gives their ring space back)."""
        c = self.c
        taken = 0
        for i in range(n):
            st = int(fr.status[i])
            length, snap = int(fr.length[i]), int(fr.snaplen[i])
            ts = int(fr.sec[i]) * 1_000_000_000 + int(fr.nsec[i])
            base = int(fr.soff[i])
            frame = fr.mem[base:base + snap]
            if st & ring.TP_STATUS_VLAN_VALID:
                tpid = int(fr.vlan_tpid[i]) if st & ring.TP_STATUS_VLAN_TPID_VALID else 0
                tag = np.frombuffer(struct.pack(">HH", tpid or 0x8100,
                                                int(fr.vlan_tci[i]) & 0xFFFF), np.uint8)
                frame = np.concatenate((frame[:12], tag, frame[12:]))
                length += 4
                snap += 4
            # worst case events: one per buffer (≥ 64 bytes each) + a NO_DESC_TRUNC
            if self._room() < min(length // 64 + 2, self._d_tail - self._d_head + 1):
                break
            desc = self._next_desc()
            if desc is None:
                c["rx_nodesc_drops"] += 1
                taken += 1
                continue
            mcast = _MCAST if snap and frame[0] & 1 else 0
            if int(fr.mem[int(fr.hdr[i]) + fr.pkttype_at]) == _PACKET_OUTGOING:
                mcast |= _OUT  # rides with the SOP flags: this host sent it
            if snap < length:  # the ring cut it (longer than snaplen): TRUNC discard
                addr, rq_id = desc
                self._copy(addr, frame, 0)
                self._event(_RXD, _SOP | mcast, rq_id, length, ts, int(DiscardReason.TRUNC))
                c["rx_trunc_drops"] += 1
            else:
                self._chain(desc, frame, length, mcast, ts)
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



def _slot_frames(r: ring.Ring, cur: int, n: int) -> ring.Frames:
    """Slots ``cur .. cur+n`` of a V2 ring as :class:`~.ring.Frames` (views)."""
    sl = slice(cur, cur + n)
    hdr = np.arange(cur, cur + n, dtype=np.int64) * r.fs
    return ring.Frames(r.mem, hdr + r.mac[sl], r.length[sl], r.snaplen[sl], r.status[sl],
                       r.sec[sl], r.nsec[sl], r.vlan_tci[sl], r.vlan_tpid[sl], hdr,
                       _PKTTYPE_OFF)
