"""The ``xdp`` VI: the RX and TX paths over its AF_XDP sockets, plus the merged event
stream, waiting, counters and close (the module doc of :mod:`efvi.adapters.xdp.adapter`
states the model)."""

from __future__ import annotations

import collections
import time

from efvi.adapters.base import EventArray
from efvi.adapters.xdp._common import _SW
from efvi.adapters.xdp.rx import RxPath
from efvi.adapters.xdp.tx import TxPath


class XdpVI(RxPath, TxPath):
    """One VI: AF_XDP sockets on its queues, one merged event stream."""

    # ---- events ------------------------------------------------------------------------
    def harvest(self, out: EventArray, max_events: int) -> int:
        """RX events, then TX completions, then SW events, up to ``max_events``.

        Cost per call: ~17 numpy ops per RX queue with frames (2 to look for hardware
        stamps, 3 more when there are some), a few per TX batch;
        no per-packet Python work. Publishes ring consumers after reading entries.
        """
        if self._closed:
            return 0
        n = 0
        for q, s in self.rx_socks:
            if n >= max_events:
                break
            n += self._harvest_rx(q, s, out, n, max_events - n)
        if self.tx_sock is not None and n < max_events and (self._runs or self._tx_unkicked):
            n += self._harvest_tx(out, n, max_events - n)  # only while TX is outstanding
        while self._sw and n < max_events:
            out[n] = (_SW, 0, 0, 0, 0, 0, self._sw.popleft(), 0)
            n += 1
        return n

    def wait(self, timeout_ns: int | None) -> None:
        """Block in ``poll()`` on the RX sockets (≤ 1 ms while TX is outstanding)."""
        if self._sw or self._closed:
            return
        ms = -1 if timeout_ns is None else max(0, timeout_ns // 1_000_000)
        if self._runs:
            self._kick()
            ms = 1 if ms < 0 else min(ms, 1)
        if self._poller is None:
            time.sleep((ms if ms >= 0 else 1) / 1000)
            return
        self._poller.poll(ms)

    def sw_event(self, data: int) -> bool:
        if len(self._sw) >= self.evq:
            return False
        self._sw.append(data)
        return True

    def stats(self) -> dict[str, int]:
        """Own counters plus XDP_STATISTICS of every socket mapped to ``*_drops``."""
        raw: dict[str, int] = collections.Counter()
        for s in self.socks.values():
            raw.update(s.statistics())
        out = dict(self.counters)
        empty = raw.get("rx_fill_ring_empty_descs", 0)
        out["rx_nodesc_drops"] = empty
        out["rx_trunc_drops"] = max(0, raw.get("rx_dropped", 0) - empty)
        out["rx_ring_full_drops"] = raw.get("rx_ring_full", 0)
        out["rx_invalid_desc_drops"] = raw.get("rx_invalid_descs", 0)
        out["tx_invalid_desc_drops"] = raw.get("tx_invalid_descs", 0)
        for k, v in raw.items():
            out["xdp_" + k] = v
        out["zero_copy"] = int(self.zerocopy)
        out["queues"] = len(self.socks)
        out["busy_poll"] = int(self.busy_poll_on)
        out["shared_umem_sockets"] = sum(s.shared_umem for s in self.socks.values())
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_sockets()
        self.prog.free_target(self.target)
        self.pd.vis.discard(self)
