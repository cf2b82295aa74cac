"""Forward frames between two interfaces (ef_vi's ``efforward``): ``efvi forward``.

Memory model (ef_vi's): one buffer pool in a :class:`~efvi.memory.MemoryRegion` of
A's protection domain, registered in B's PD too (:meth:`MemoryRegion.share`), so a
frame received into buffer ``k`` on A is transmitted from buffer ``k`` on B — no copy
in user space (``mode == "zero-copy"``). On ``xdp`` the two PDs' AF_XDP sockets bind
one UMEM across the two devices (``XDP_SHARED_UMEM``); in AF_XDP copy mode the
kernel still copies into and out of the UMEM, which is the kernel's copy, not ours.
When the two adapters differ the region cannot be shared and each frame is copied
once from A's region to B's (``mode == "copy"``). The ``packet`` adapter itself
copies each frame from its RX ring and into its TX ring
(``Adapter.rx_user_copies``/``tx_user_copies``); ``user_copies`` counts every
user-space copy made, the forwarder's and the adapters'.

Ownership: a buffer received on A belongs to B's TX ring until B's TX completion
returns its id; only then is it posted to A's RX ring again (never earlier, so a
frame in flight is never overwritten). Frames that cannot be sent are dropped and
counted by cause, and their buffer is reposted at once:

* ``oversize_drops`` — longer than B's MTU (+ 14, + 4 with a VLAN tag) or spread
  over several RX buffers: never sent cut;
* ``tx_full_drops`` — B's TX ring had no room;
* ``rx_discard_drops`` — A's NIC discarded the frame (bad CRC, truncated, ...);
* ``tx_error_drops`` — B completed the send with an error.

The loop is batch-first: per poll, a handful of numpy operations over the event
columns and one ``transmit_batch``; no per-frame Python.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import numpy.typing as npt

from efvi import (
    Driver,
    EventType,
    FilterSpec,
    MemoryRegion,
    ProtectionDomain,
    VirtualInterface,
)
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError

__all__ = ["Direction", "ForwardStats", "Forwarder", "default_filters"]

_RX = int(EventType.RX)
_DISCARD = int(EventType.RX_DISCARD)
_TXERR = int(EventType.TX_ERROR)
_CONT = 0x2
_ETH_HLEN = 14
_VLAN = 4
U32 = npt.NDArray[np.uint32]


def default_filters(adapter: str) -> list[FilterSpec]:
    """efforward's filters: ``unicast_all`` + ``multicast_all`` (sniffed on ``packet``,
    whose filters copy; promiscuous there, as a bridge port is)."""
    specs = [FilterSpec.unicast_all(), FilterSpec.multicast_all()]
    if adapter == "packet":
        return [s.sniff(promiscuous=True) for s in specs]
    return specs


@dataclass
class Direction:
    """Counters of one direction (``A->B`` or ``B->A``)."""

    name: str
    forwarded: int = 0
    bytes: int = 0
    oversize_drops: int = 0
    tx_full_drops: int = 0
    rx_discard_drops: int = 0
    tx_error_drops: int = 0
    user_copies: int = 0

    @property
    def drops(self) -> int:
        return (self.oversize_drops + self.tx_full_drops + self.rx_discard_drops
                + self.tx_error_drops)

    def as_dict(self) -> dict[str, int]:
        return {"forwarded": self.forwarded, "bytes": self.bytes,
                "oversize_drops": self.oversize_drops, "tx_full_drops": self.tx_full_drops,
                "rx_discard_drops": self.rx_discard_drops,
                "tx_error_drops": self.tx_error_drops, "user_copies": self.user_copies}


@dataclass
class ForwardStats:
    mode: str
    directions: list[Direction]
    elapsed_s: float = 0.0
    stopped_by: str = "signal"
    vi_drops: dict[str, dict[str, int]] = field(default_factory=dict)
    #: xdp: sockets of each side bound to another socket's UMEM (XDP_SHARED_UMEM)
    shared_umem_sockets: dict[str, int] = field(default_factory=dict)

    @property
    def forwarded(self) -> int:
        return sum(d.forwarded for d in self.directions)

    @property
    def user_copies(self) -> int:
        return sum(d.user_copies for d in self.directions)

    @property
    def drops(self) -> int:
        return sum(d.drops for d in self.directions) + sum(
            sum(v.values()) for v in self.vi_drops.values())


class _Side:
    """One interface: driver, PD, VI, its view of the pool and its RX buffers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.driver = Driver.open(url)
        try:
            self.pd = ProtectionDomain(self.driver)
        except BaseException:
            self.driver.close()
            raise
        info = self.driver.interface
        self.name = info.name
        self.mtu = info.mtu
        self.vi: VirtualInterface | None = None
        self.mr: MemoryRegion | None = None
        self.addrs = np.zeros(0, np.uint64)
        self.rows = np.zeros((0, PKT_BUF_SIZE), np.uint8)
        self.free = np.zeros(0, np.uint32)  # RX buffers waiting for ring space

    def set_region(self, mr: MemoryRegion) -> None:
        self.mr = mr
        self.addrs = mr.dma_addrs()
        self.rows = mr.buf.reshape(-1, PKT_BUF_SIZE)

    def refill(self, ids: U32) -> None:
        """Post ``ids`` (and any left over before) to the RX ring; keep the rest."""
        vi = self.vi
        assert vi is not None
        if self.free.size:
            ids = np.concatenate((self.free, ids)) if ids.size else self.free
        if not ids.size:
            return
        n = vi.receive_post_batch(self.addrs[ids], ids)
        n = max(n, 0)
        self.free = ids[n:]


class Forwarder:
    """Frames received on ``url_a`` go out of ``url_b`` (and back with ``both``)."""

    def __init__(self, url_a: str, url_b: str, *, both: bool = False,
                 filters: Sequence[FilterSpec] | None = None,
                 filters_b: Sequence[FilterSpec] | None = None,
                 rxq: int = 2048, txq: int = 2048, pool: int = 4096) -> None:
        if pool < rxq:
            raise SetupError(f"a pool of {pool} buffers cannot fill an RX ring of {rxq}",
                             errno=errno.EINVAL, hint="give at least as many buffers as rxq")
        self.both = both
        self.a = _Side(url_a)
        try:
            self.b = _Side(url_b)
        except BaseException:
            self.a.driver.close()
            raise
        try:
            self._setup(rxq, txq, pool, filters, filters_b)
        except BaseException:
            self.close()
            raise

    def _setup(self, rxq: int, txq: int, pool: int, filters: Sequence[FilterSpec] | None,
               filters_b: Sequence[FilterSpec] | None) -> None:
        a, b = self.a, self.b
        ndir = 2 if self.both else 1
        nbytes = ndir * pool * PKT_BUF_SIZE
        mr_a = MemoryRegion(a.pd, nbytes)
        a.set_region(mr_a)
        try:
            b.set_region(mr_a.share(b.pd))
            self.mode = "zero-copy"
        except UnsupportedError:
            b.set_region(MemoryRegion(b.pd, nbytes))
            self.mode = "copy"
        self.adapter_copies = {
            "A->B": a.driver.adapter.rx_user_copies + b.driver.adapter.tx_user_copies,
            "B->A": b.driver.adapter.rx_user_copies + a.driver.adapter.tx_user_copies}
        a.vi = VirtualInterface(a.pd, rxq=rxq, txq=txq if self.both else 0)
        b.vi = VirtualInterface(b.pd, rxq=rxq if self.both else 0, txq=txq)
        self.filters_a = list(filters) if filters else default_filters(
            a.driver.capabilities.adapter)
        self.filters_b = list(filters_b or filters or []) or default_filters(
            b.driver.capabilities.adapter)
        for f in self.filters_a:
            a.vi.filter_add(f)
        if self.both:
            for f in self.filters_b:
                b.vi.filter_add(f)
        for vi in (a.vi, b.vi):  # sockets now: not a stall under the first frames
            vi.activate()
        # buffer ids: [0, pool) are A's RX pool, [pool, 2*pool) B's
        a.refill(np.arange(pool, dtype=np.uint32))
        if self.both:
            b.refill(np.arange(pool, 2 * pool, dtype=np.uint32))
        self.dirs = [Direction("A->B")] + ([Direction("B->A")] if self.both else [])

    def _rx(self, src: _Side, dst: _Side, d: Direction, t: npt.NDArray[np.uint8],
            batch_rq: U32, batch_len: U32, batch_ofs: npt.NDArray[np.uint16],
            batch_flags: npt.NDArray[np.uint16]) -> None:
        """Send what ``src`` received out of ``dst`` (one batch; numpy only)."""
        rx = t == _RX
        disc = t == _DISCARD
        back: list[U32] = []
        if disc.any():
            dids = batch_rq[disc].astype(np.uint32)
            d.rx_discard_drops += int(dids.size)
            back.append(dids)
        if rx.any():
            ids = batch_rq[rx].astype(np.uint32)
            lens = batch_len[rx].astype(np.uint32)
            ofs = batch_ofs[rx].astype(np.int64)
            flags = batch_flags[rx]
            limit = dst.mtu + _ETH_HLEN
            rows = src.rows
            tagged = ((rows[ids, ofs + 12] == 0x81) & (rows[ids, ofs + 13] == 0x00))
            ok = ((flags & _CONT) == 0) & (lens <= limit + _VLAN * tagged)
            if not ok.all():
                bad = ids[~ok]
                d.oversize_drops += int(bad.size)
                back.append(bad)
                ids, lens, ofs = ids[ok], lens[ok], ofs[ok]
            if ids.size:
                if self.mode == "copy":
                    dst.rows[ids] = rows[ids]
                    d.user_copies += int(ids.size)
                vi = dst.vi
                assert vi is not None
                n = vi.transmit_batch(dst.addrs[ids] + ofs.astype(np.uint64), lens, ids)
                n = max(n, 0)
                if n < ids.size:
                    d.tx_full_drops += int(ids.size) - n
                    back.append(ids[n:])
                d.forwarded += n
                d.bytes += int(lens[:n].sum())
                d.user_copies += n * self.adapter_copies[d.name]
        if back:
            src.refill(np.concatenate(back) if len(back) > 1 else back[0])

    def _poll(self, side: _Side, other: _Side, d_rx: Direction | None,
              d_tx: Direction | None) -> int:
        """Poll ``side``'s VI: its RX goes to ``other``; its TX completions return
        buffers to ``other``'s RX ring."""
        vi = side.vi
        assert vi is not None
        b = vi.poll()
        n = len(b)
        if not n:
            return 0
        t = b.type
        if d_rx is not None:
            self._rx(side, other, d_rx, t, b.rq_id, b.len, b.ofs, b.flags)
        if d_tx is not None:
            done = vi.transmit_completed(b)
            if done.size:
                errs = int(np.count_nonzero(t == _TXERR))
                if errs:
                    d_tx.tx_error_drops += errs
                other.refill(done)
            elif other.free.size:
                other.refill(done)
        return n

    def step(self) -> int:
        """One pass: poll A then B, forwarding what arrived and returning completed
        buffers to their RX rings. Returns the number of events handled (0: idle)."""
        a, b = self.a, self.b
        ab, ba = self.dirs[0], (self.dirs[1] if self.both else None)
        return self._poll(a, b, ab, ba) + self._poll(b, a, ba, ab)

    def run(self, count: int | None = None, duration_s: float | None = None,
            on_second: Callable[[ForwardStats], None] | None = None,
            stop: list[bool] | None = None,
            link_up: Callable[[], str | None] | None = None,
            idle_exit_s: float | None = None) -> ForwardStats:
        """Forward until ``stop[0]``, ``count`` frames, ``duration_s``, a side's link
        going down (``link_up`` returns the name of a side that is down), or
        ``idle_exit_s`` seconds without a frame after the first."""
        a, b = self.a, self.b
        self.dirs[0]
        self.dirs[1] if self.both else None
        st = ForwardStats(self.mode, self.dirs)
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        deadline = t0 + duration_s if duration_s else None
        last_rx = None
        assert a.vi is not None and b.vi is not None
        while True:
            n = self.step()
            now = time.perf_counter()
            if n:
                last_rx = now
            else:
                a.vi.eventq_wait(1_000_000)
                if self.both or b.vi.transmit_fill_level():
                    b.vi.eventq_wait(0)
                now = time.perf_counter()
            if stop is not None and stop[0]:
                break
            if count is not None and st.forwarded >= count:
                st.stopped_by = "count"
                break
            if deadline is not None and now >= deadline:
                st.stopped_by = "duration"
                break
            if idle_exit_s is not None and last_rx is not None and now - last_rx > idle_exit_s:
                st.stopped_by = "idle"
                break
            if now >= next_tick:
                next_tick = now + 1.0
                st.elapsed_s = now - t0
                down = link_up() if link_up is not None else None
                if down:
                    st.stopped_by = f"link-down: {down}"
                    break
                if on_second is not None:
                    self._vi_drops(st)
                    on_second(st)
        self._drain()
        st.elapsed_s = time.perf_counter() - t0
        for side, key in ((a, "A"), (b, "B")):
            assert side.vi is not None
            s = self._vi_drops(st)[key]
            if "shared_umem_sockets" in s:
                st.shared_umem_sockets[key] = int(s["shared_umem_sockets"])
            if s.get("tx_bounced"):
                # xdp copied gathered frames into bounce buffers: a user-space copy
                for d in self.dirs:
                    d.user_copies += int(s["tx_bounced"]) if d.name.endswith(key) else 0
        return st

    def _vi_drops(self, st: ForwardStats) -> dict[str, dict[str, int]]:
        """Refresh ``st.vi_drops`` from both VIs' counters; return the raw stats."""
        raw: dict[str, dict[str, int]] = {}
        for side, key in ((self.a, "A"), (self.b, "B")):
            assert side.vi is not None
            raw[key] = side.vi.stats()
            st.vi_drops[key] = {k: v for k, v in raw[key].items() if k.endswith("_drops")}
        return raw

    def _drain(self, timeout_s: float = 0.5) -> None:
        """Collect outstanding TX completions so every buffer is accounted for (frames
        still arriving meanwhile are forwarded and counted as usual)."""
        end = time.perf_counter() + timeout_s
        a, b = self.a, self.b
        ab, ba = self.dirs[0], (self.dirs[1] if self.both else None)
        assert a.vi is not None and b.vi is not None
        while time.perf_counter() < end and (b.vi.transmit_fill_level()
                                             or a.vi.transmit_fill_level()):
            if not self._poll(a, b, ab, ba) + self._poll(b, a, ba, ab):
                b.vi.eventq_wait(1_000_000)

    def close(self) -> None:
        for side in (getattr(self, "b", None), self.a):
            if side is not None:
                side.driver.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
