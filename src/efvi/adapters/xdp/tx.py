"""The ``xdp`` adapter's TX path: descriptors → TX ring, completions → TX events.

Read top to bottom: :meth:`TxPath.tx_post` writes descriptors (scalar for one, numpy
for a batch, :meth:`TxPath._tx_slow` for gathered or oversized packets, which merges
adjacent pieces or copies them into a bounce frame) and kicks;
:meth:`TxPath._harvest_tx` matches COMPLETION ring entries with the runs recorded at
post time and emits TX/TX_ERROR events (≤ 64 descriptors each).
"""

from __future__ import annotations

import ctypes

import numpy as np

from efvi.adapters.base import EventArray, U32Array, U64Array
from efvi.adapters.xdp._common import (_KICK_LIMIT, _REQ_NONE, _RETRY, _TX, _TXERR,
                                       BOUNCE_PER_VI, M32)
from efvi.adapters.xdp.vibase import XdpVIBase
from efvi.adapters.xdp.xsk import CHUNK_SIZE, XDP_RING_NEED_WAKEUP
from efvi.events import TxErrorType


class TxPath(XdpVIBase):
    """TX half of :class:`~efvi.adapters.xdp.vi.XdpVI`."""

    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """TX doorbell: descriptors to the TX ring, then ``sendto`` if the kernel asks.

        Cost: ~6 numpy ops and one producer store; in copy mode the kick runs the
        kernel's transmit of the batch on this thread (one syscall per
        XDP_MAX_TX_SKB_BUDGET frames). The first call may create sockets (SetupError).
        """
        if self._closed or not self._ready() or self.tx_sock is None:
            return
        n = int(addrs.shape[0])
        if n == 0:
            return
        if n == 1 and int(ids[0]) != _REQ_NONE and int(lens[0]) <= CHUNK_SIZE:
            self.tx_post_one(int(addrs[0]), int(lens[0]), int(ids[0]))
            return
        if (ids == _REQ_NONE).any() or (lens > CHUNK_SIZE).any():
            self._tx_slow(addrs, lens, ids)
        else:
            self._tx_write(addrs, lens)
            self._run(0, n, n)
            self.counters["tx_bytes"] += int(lens.sum())
        self._kick()

    def tx_post_one(self, addr: int, length: int, rq_id: int) -> None:
        """One whole frame: one descriptor store, one producer store, the kick (a
        ``sendto`` in copy mode, which transmits it on this thread). No numpy."""
        if self._closed or not self._ready() or self.tx_sock is None:
            return
        if length > CHUNK_SIZE:
            super().tx_post_one(addr, length, rq_id)
            return
        t = self.tx_sock.tx
        assert t is not None
        p = self._tx_prod
        j = (p & t.mask) * 2
        t.desc_q[j] = addr
        t.desc_i[2 * j + 2] = length
        self._tx_prod = p = (p + 1) & M32
        t.prod[0] = p
        self._tx_unkicked = True
        self._run(0, 1, 1)
        self.counters["tx_bytes"] += length
        self._kick()

    def _run(self, kind: int, n_core: int, n_xdp: int) -> None:
        runs = self._runs
        if kind == 0 and runs and runs[-1][0] == 0:
            runs[-1][1] += n_core
            runs[-1][2] += n_xdp
        else:
            runs.append([kind, n_core, n_xdp])

    def _tx_write(self, addrs: U64Array, lens: U32Array) -> None:
        t = self.tx_sock.tx  # type: ignore[union-attr]
        assert t is not None
        p = self._tx_prod
        k = int(addrs.shape[0])
        a = p & t.mask
        if a + k <= t.size:
            d = t.desc[a:a + k]
            d["addr"] = addrs
            d["len"] = lens
        else:
            idx = (p + np.arange(k, dtype=np.int64)) & t.mask
            t.desc["addr"][idx] = addrs
            t.desc["len"][idx] = lens
        self._tx_prod = p = (p + k) & M32
        t.prod[0] = p
        self._tx_unkicked = True

    def _tx_slow(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """Packets of several descriptors: merge adjacent pieces, else copy them into a
        bounce frame (one ``memmove`` per piece); TX_ERROR above 2048 bytes.

        Cost: a Python loop over the descriptors, plus the copy for gathered packets.
        """
        al, ll, il = addrs.tolist(), lens.tolist(), ids.tolist()
        i = 0
        while i < len(al):
            j = i
            while il[j] == _REQ_NONE and j + 1 < len(al):
                j += 1
            start, total, ok = al[i], 0, True
            for k in range(i, j + 1):
                if al[k] != start + total:
                    ok = False
                total += ll[k]
            if total > CHUNK_SIZE:
                self._run(1, j - i + 1, 0)
            else:
                if not ok:  # gather: copy the pieces into a bounce frame
                    dst = self._bounce_frame()
                    if dst >= 0:
                        base = self.pd.umem_addr
                        at = dst
                        for k in range(i, j + 1):
                            ctypes.memmove(base + at, base + al[k], ll[k])
                            at += ll[k]
                        self._bounce_seq[self._bounce_k] = self._tx_prod
                        self._bounce_k = (self._bounce_k + 1) % len(self._bounce_seq)
                        self.counters["tx_bounced"] += 1
                        start, ok = dst, True
                if ok:
                    self._tx_write(np.array([start], np.uint64), np.array([total], np.uint32))
                    self._run(0 if i == j else 2, j - i + 1, 1)
                    self.counters["tx_bytes"] += total
                else:
                    self._run(3, j - i + 1, 0)
            i = j + 1

    def _bounce_frame(self) -> int:
        """The next bounce frame once the kernel is done with it (DMA address), else -1.

        Cost: a comparison with the completion producer; a ``sendto`` kick only when
        the frame is still in flight (rare: it was used ``BOUNCE_PER_VI`` sends ago).
        """
        if self._bounce is None:
            self._bounce = self.pd.bounce_frames(BOUNCE_PER_VI)
            self._bounce_seq = [-1] * len(self._bounce)
        if not self._bounce:
            return -1
        seq = self._bounce_seq[self._bounce_k]
        if seq >= 0:
            s = self.tx_sock
            assert s is not None and s.comp is not None
            for _ in range(_KICK_LIMIT):
                # completions are in TX-ring order: done once the producer passed seq
                if (int(s.comp.prod[0]) - seq - 1) & M32 < 0x80000000:
                    break
                self._kick()
            else:
                return -1
        return self._bounce[self._bounce_k]

    def _kick(self) -> None:
        s = self.tx_sock
        if s is None or s.tx is None:
            return
        t = s.tx
        if not t.flags[0] & XDP_RING_NEED_WAKEUP:
            self._tx_unkicked = False  # the driver polls the TX ring itself
            return
        for _ in range(_KICK_LIMIT):
            rc = s.kick_tx()
            if rc not in (0, *_RETRY):
                self.counters["tx_kick_errors"] += 1
                break
            if t.cons[0] == self._tx_prod:
                self._tx_unkicked = False
                break

    def _harvest_tx(self, out: EventArray, n: int, room: int) -> int:
        s = self.tx_sock
        assert s is not None and s.comp is not None
        if self._tx_unkicked or (s.tx is not None and s.tx.cons[0] != self._tx_prod):
            self._kick()
        c = s.comp
        prod = c.prod[0]
        avail = (prod - self._comp_cons) & M32
        used = 0
        start = n
        runs = self._runs
        while runs and n < start + room:
            kind, n_core, n_xdp = runs[0]
            if kind == 0:
                m = min(n_core, avail - used)
                if m <= 0:
                    break
                used += m
                n, left = self._tx_events(out, n, start + room, _TX, 0, m)
                done = m - left
                used -= left
                runs[0][1] -= done
                runs[0][2] -= done
                self.counters["tx_packets"] += done
                if runs[0][1] == 0:
                    runs.popleft()
                if left:
                    break
            elif kind == 2:  # merged packet: n_core descriptors, one xdp descriptor
                if avail - used < 1:
                    break
                n2, left = self._tx_events(out, n, start + room, _TX, 0, n_core)
                if left:
                    break  # no room: retry next harvest
                n = n2
                used += 1
                runs.popleft()
                self.counters["tx_packets"] += 1
            else:  # software-failed packet
                sub = int(TxErrorType.TOO_BIG) if kind == 1 else int(TxErrorType.BUS)
                n2, left = self._tx_events(out, n, start + room, _TXERR, sub, n_core)
                if left:
                    break
                n = n2
                runs.popleft()
                self.counters["tx_error_drops"] += 1
        if used:
            self._comp_cons = (self._comp_cons + used) & M32
            c.cons[0] = self._comp_cons
        return n - start

    def _tx_events(self, out: EventArray, n: int, limit: int, etype: int, sub: int,
                   count: int) -> tuple[int, int]:
        """Emit events covering ``count`` descriptors (≤ 64 each); return (n, left)."""
        q = self.tx_sock.queue if self.tx_sock is not None else 0
        while count > 0 and n < limit:
            m = min(count, 64)
            self._tx_done = (self._tx_done + m) & M32
            out[n] = (etype, sub, 0, q, 0, self._tx_done, 0, 0)
            n += 1
            count -= m
        return n, count

