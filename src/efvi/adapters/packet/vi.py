"""The ``packet`` VI: the RX path and TX path over one AF_PACKET socket, plus events,
waiting, counters and close (the module doc of :mod:`efvi.adapters.packet.adapter`
states the model)."""

from __future__ import annotations

import contextlib

import numpy as np

from efvi.adapters.base import EventArray
from efvi.adapters.packet import ring
from efvi.adapters.packet._common import _SW
from efvi.adapters.packet.rx import RxPath
from efvi.adapters.packet.tx import TxPath


class PacketVI(RxPath, TxPath):
    """One VI: a socket, its RX and TX rings, a descriptor FIFO and pending events."""

    # ---- events ----------------------------------------------------------------------------
    def harvest(self, out: EventArray, max_events: int) -> int:
        """Pending RX/SW events, TX completions, then frames waiting in the ring.

        Never blocks; takes only frames ready when it looks (never chases arrivals).
        Cost: a strided status scan of the ring (1024 slots per step) and of the TX
        FIFO, the copies of the frames taken (vectorised when each fits one buffer),
        and ``O(events)`` record stores.
        """
        if self.closed:
            return 0
        n = self._drain(out, 0, max_events)
        n += self._tx_complete(out, n, max_events - n)
        if n < max_events:
            self._take(max_events - n)
            n += self._drain(out, n, max_events - n)
        return n

    def _drain(self, out: EventArray, pos: int, room: int) -> int:
        h = self._ph
        k = min(self._np - h, room)
        if k <= 0:
            return 0
        # as 3 x u64 words per record: a structured-dtype copy is several times slower
        out.view(np.uint64).reshape(-1, 3)[pos:pos + k] = self._pend_words[h:h + k]
        h += k
        if h == self._np:
            self._ph = self._np = 0
        else:
            self._ph = h
        return k

    def wait(self, timeout_ns: int | None) -> None:
        """Sleep in poll(2) until the ring has a frame or ``timeout_ns`` passes."""
        if self.closed or self._np > self._ph:
            return
        if self._c_head != self._c_tail:
            timeout_ns = min(timeout_ns if timeout_ns is not None else 1_000_000, 1_000_000)
        r = self._rx
        if r is not None and r.status[self._cur] & ring.TP_STATUS_USER:
            return
        br = self._blocks
        if br is not None and (self._bfr is not None or br.ready(self._cur)):
            return
        ms = -1 if timeout_ns is None else max(0, (timeout_ns + 999_999) // 1_000_000)
        if r is None and br is None and ms < 0:
            ms = 1
        with contextlib.suppress(InterruptedError):
            self._poller.poll(ms)

    def sw_event(self, data: int) -> bool:
        if self.closed or self._room() <= 0:
            return False
        self._event(_SW, 0, 0, data & 0xFFFF, 0)
        return True

    def stats(self) -> dict[str, int]:
        """Counters; reads (and so resets) PACKET_STATISTICS into the running totals."""
        if not self.closed and (self._rx is not None or self._blocks is not None):
            with contextlib.suppress(OSError):
                packets, drops = self._s.statistics()
                self.c["rx_kernel_packets"] += packets
                self.c["rx_ring_drops"] += drops
        return dict(self.c)

    def close(self) -> None:
        if self.closed:
            return
        self.stats()
        self.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self._poller.unregister(self._s.fileno())
        self._rx = self._tx = None
        self._blocks = self._bfr = None
        self._s.close()
        self.adapter._vis.discard(self)

