"""The ``packet`` adapter's TX path: posted frames → TX ring slots, completions in order.

:meth:`TxPath.tx_post` copies frames into SEND_REQUEST slots (vectorised when every
frame is one descriptor in one region) and kicks with one ``send()``;
:meth:`TxPath._tx_complete` turns slots the kernel gave back into TX/TX_ERROR events.

A frame is handed to the kernel once. When ``send()`` fails because the link cannot
carry frames (``ENOBUFS``/``ENETDOWN``/``ENXIO`` and the interface has no carrier, is
down or gone), the kernel has put the frame it tried back to SEND_REQUEST; kicking again
would make it try (and drop, counting ``tx_dropped``) the same slot on every poll. So
every frame still waiting is taken back instead and completes as TX_ERROR/LINK_DOWN
(``tx_link_down_drops``). With a carrier, ENOBUFS (congestion) is retried as before.
"""

from __future__ import annotations

import errno

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import EventArray, U32Array, U64Array
from efvi.adapters.packet import ring
from efvi.adapters.packet._common import _MASK, _OFF_MASK, _REGION_SHIFT, _TX, _TXERR
from efvi.adapters.packet.filter_prog import VLAN_TPIDS
from efvi.adapters.packet.vibase import PacketVIBase
from efvi.adapters.dma import scatter
from efvi.constants import EF_VI_TRANSMIT_BATCH
from efvi.events import TxErrorType

_TOO_BIG_SLOT = -1  # completion FIFO slot markers: never handed to the kernel
_LINK_DOWN_SLOT = -2
_LINK_ERRNOS = frozenset((errno.ENOBUFS, errno.ENETDOWN, errno.ENXIO, errno.ENODEV))
_ERR_KIND = {_TOO_BIG_SLOT: (int(TxErrorType.TOO_BIG), "tx_too_big_drops"),
             _LINK_DOWN_SLOT: (int(TxErrorType.LINK_DOWN), "tx_link_down_drops")}


class TxPath(PacketVIBase):
    """TX half of :class:`~efvi.adapters.packet.vi.PacketVI`."""

    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """Copy frames into TX slots, mark them SEND_REQUEST, one non-blocking send().

        Cost: one vectorised gather/scatter for single-buffer frames in one region
        (else a loop of slice copies), three strided stores, one system call.
        """
        t = self._tx
        if self.closed or t is None:
            return
        n = int(ids.shape[0])
        ln64 = lens.astype(np.int64)
        if n and bool((ids != _MASK).all()) and int(ln64.max()) <= self.adapter.max_frame:
            region = addrs >> np.uint64(_REGION_SHIFT)
            res = self.pd.resolve(int(addrs[0]))
            if res is not None and not (region != region[0]).any():
                mem, _ = res
                offs = (addrs & np.uint64(_OFF_MASK)).astype(np.int64)
                slots = (self._slot_next + np.arange(n, dtype=np.int64)) % t.nslots
                scatter(t.mem, slots * t.fs + t.data_off, mem, offs, ln64)
                t.length[slots] = lens
                t.status[slots] = ring.TP_STATUS_SEND_REQUEST
                self._slot_next += n
                cidx = (self._c_tail + np.arange(n, dtype=np.int64)) & self._c_mask
                self._c_slot[cidx] = slots
                self._c_ndesc[cidx] = 1
                self._c_len[cidx] = lens
                self._c_tail += n
                self._kick()
                return
        # general path: gather each frame's pieces
        pieces: list[npt.NDArray[np.uint8]] = []
        nd = 0
        sent = False
        for a_, l_, i_ in zip(addrs.tolist(), lens.tolist(), ids.tolist()):
            res = self.pd.resolve(a_)
            if res is not None:
                mem, off = res
                pieces.append(mem[off:off + l_])
            nd += 1
            if i_ == _MASK:
                continue
            sent |= self._queue_frame(pieces, nd)
            pieces, nd = [], 0
        if sent:
            self._kick()

    def tx_post_one(self, addr: int, length: int, rq_id: int) -> None:
        """One whole frame: one slice copy into the next TX slot, two stores, one
        ``send()``; no numpy calls (the one-packet-in-flight path)."""
        t = self._tx
        if self.closed or t is None:
            return
        res = self.pd.resolve(addr)
        if res is None or length > self.adapter.max_frame:
            super().tx_post_one(addr, length, rq_id)
            return
        mem, off = res
        slot = self._slot_next % t.nslots
        self._slot_next += 1
        o = slot * t.fs + ring.TX_DATA_OFFSET
        t.mem[o:o + length] = mem[off:off + length]
        t.length[slot] = length
        t.status[slot] = ring.TP_STATUS_SEND_REQUEST
        ci = self._c_tail & self._c_mask
        self._c_slot[ci] = slot
        self._c_ndesc[ci] = 1
        self._c_len[ci] = length
        self._c_tail += 1
        self._kick()

    def _queue_frame(self, pieces: list[npt.NDArray[np.uint8]], ndesc: int) -> bool:
        t = self._tx
        assert t is not None
        total = sum(int(p.shape[0]) for p in pieces)
        ci = self._c_tail & self._c_mask
        self._c_ndesc[ci] = ndesc
        self._c_len[ci] = total
        self._c_tail += 1
        frame = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if total > self.adapter.max_frame + 4 or (
                total > self.adapter.max_frame and not _tagged(frame)):
            self._c_slot[ci] = _TOO_BIG_SLOT  # completes as a TX_ERROR, never sent
            return False
        slot = self._slot_next % t.nslots
        self._slot_next += 1
        o = slot * t.fs + t.data_off
        t.mem[o:o + total] = frame
        t.length[slot] = total
        t.status[slot] = ring.TP_STATUS_SEND_REQUEST
        self._c_slot[ci] = slot
        return True

    def _kick(self) -> None:
        err = self._s.kick()
        if err and err != errno.EAGAIN:
            if err in _LINK_ERRNOS and self._link_down():
                self._fail_unsent()
                err = 0
            elif err != errno.ENOBUFS:
                self.c["tx_kick_errors"] += 1
        self._kick_err = err

    def _link_down(self) -> bool:
        """The interface cannot carry frames now (only asked after a failed send())."""
        try:
            return self.adapter.link_state() != "up"
        except OSError:
            return False

    def _fail_unsent(self) -> None:
        """Take back every frame still waiting for the kernel (SEND_REQUEST): each
        completes as TX_ERROR/LINK_DOWN instead of being handed to the kernel again.

        Safe: the kernel only reads SEND_REQUEST slots inside ``send()``, and this runs
        after it returned. The kernel's ring head stays on the frame it failed (the
        first taken back), so the next frames are written from that slot on. Cost: one
        strided status read of the in-flight frames."""
        t = self._tx
        h, tl = self._c_head, self._c_tail
        if t is None or h == tl:
            return
        idx = np.arange(h, tl, dtype=np.int64) & self._c_mask
        slots = self._c_slot[idx]
        pending = (slots >= 0) & (t.status[np.maximum(slots, 0)] == ring.TP_STATUS_SEND_REQUEST)
        n = int(np.count_nonzero(pending))
        # the kernel stopped at the first of them and keeps its ring head there: they
        # must be the last n slots handed out, so the next frame can take the first
        # one again (where the kernel will look); anything else: leave them to it
        if not n or int(slots[pending][0]) != (self._slot_next - n) % t.nslots:
            return
        t.status[slots[pending]] = ring.TP_STATUS_AVAILABLE
        self._c_slot[idx[pending]] = _LINK_DOWN_SLOT
        self._slot_next -= n

    def _tx_complete(self, out: EventArray, pos: int, room: int) -> int:
        """Write TX/TX_ERROR events for completed frames, in order; return events written.

        Cost: a strided status scan of the FIFO and O(events) vectorised stores; with
        TX timestamps on, one ``recvmsg`` per stamp waiting in the error queue too
        (one TX event per frame then, ``ts_ns`` its stamp, 0 when none came)."""
        t = self._tx
        h, tl = self._c_head, self._c_tail
        if t is None or h == tl or room <= 0:
            return 0
        idx = np.arange(h, tl, dtype=np.int64) & self._c_mask
        slots = self._c_slot[idx]
        done = (slots < 0) | (t.status[np.maximum(slots, 0)] == ring.TP_STATUS_AVAILABLE)
        k = int(done.size) if done.all() else int(done.argmin())
        if k < done.size and t.status[max(int(slots[k]), 0)] == ring.TP_STATUS_SEND_REQUEST \
                and self._kick_err:
            self._kick()  # an earlier send() gave up (e.g. ENOBUFS): ask again
        if k == 0:
            return 0
        ndesc = self._c_ndesc[idx[:k]].astype(np.int64)
        cum = np.cumsum(ndesc)
        err = slots[:k] < 0
        # TX timestamps: one TX event per frame carrying its stamp (else 0 and batches)
        batch = 1 if self._tx_ts else EF_VI_TRANSMIT_BATCH
        if self._tx_ts:
            k = min(k, room)  # a frame's stamp is consumed with its event
        stamps = self._tx_stamps(~err[:k]) if self._tx_ts else None
        if not err.any():  # the common case, vectorised: one TX event per 64 frames
            ends = np.arange(batch, k + batch, batch, dtype=np.int64)
            ends[-1] = k
            m = min(int(ends.shape[0]), room)
            ends = ends[:m]
            ev = out[pos:pos + m]
            ev["type"] = _TX
            ev["subtype"] = 0
            ev["flags"] = 0
            ev["q_id"] = self.q_id
            ev["ofs"] = 0
            ev["rq_id"] = (self._desc_done + cum[ends - 1]) & _MASK
            ev["len"] = 0
            ev["ts_ns"] = 0 if stamps is None else stamps[ends - 1]
            j = int(ends[-1])
            self.c["tx_packets"] += j
            self.c["tx_bytes"] += int(self._c_len[idx[:j]].sum())
            self._desc_done += int(cum[j - 1])
            self._c_head = h + j
            return m
        written = 0
        i = 0
        code = np.minimum(slots[:k], 0)  # 0: sent, else the slot marker of the error
        while i < k and written < room:
            kind = int(code[i])
            kind_err = kind < 0
            j = i + 1
            lim = min(k, i + batch)
            while j < lim and int(code[j]) == kind:
                j += 1
            e = out[pos + written]
            e["type"] = _TXERR if kind_err else _TX
            e["subtype"] = _ERR_KIND[kind][0] if kind_err else 0
            e["flags"] = 0
            e["q_id"] = self.q_id
            e["ofs"] = 0
            e["rq_id"] = (self._desc_done + int(cum[j - 1])) & _MASK
            e["len"] = 0
            e["ts_ns"] = 0 if stamps is None or kind_err else int(stamps[j - 1])
            if kind_err:
                self.c[_ERR_KIND[kind][1]] += j - i
            else:
                self.c["tx_packets"] += j - i
                self.c["tx_bytes"] += int(self._c_len[idx[i:j]].sum())
            written += 1
            i = j
        if i:
            self._desc_done += int(cum[i - 1])
            self._c_head = h + i
        return written


def _tagged(frame: npt.NDArray[np.uint8]) -> bool:
    return frame.shape[0] >= 14 and (int(frame[12]) << 8 | int(frame[13])) in VLAN_TPIDS
