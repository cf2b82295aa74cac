"""The TX half of a virtual interface (:class:`~efvi.vi.VirtualInterface` inherits it):
descriptors, the doorbell, batches, PIO, and completions.

Read top to bottom: ``transmit_init``/``transmitv_init`` write descriptors into the TX
ring (validated here, so the adapter never sees a bad one), ``transmit_push`` rings
the doorbell (one scalar ``tx_post_one`` for a lone frame, else one ``tx_post`` of
numpy columns), ``transmit``/``transmit_batch`` do both; ``transmit_pio`` sends from
the VI's PIO area; ``transmit_unbundle``/``transmit_completed`` turn TX events back
into request ids in submission order and free their ring slots. Data-path calls
return 0/counts or a negative errno and never raise (see :mod:`efvi.vi`).

The ring state is created by ``VirtualInterface.__init__``; it is declared here.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi._ring import ring_store as _ring_store
from efvi.constants import (EF_REQUEST_ID_MASK, MAX_TX_FRAME, MIN_TX_FRAME, PIO_ALIGN,
                            PIO_MIN_LEN, PIO_SIZE)
from efvi.errors import UnsupportedError
from efvi.events import Event, EventBatch, EventType
from efvi.pio import PioRegion

if TYPE_CHECKING:
    from efvi.adapters.base import HwVI
    from efvi.driver import Driver, ProtectionDomain

EAGAIN = -errno.EAGAIN
EINVAL = -errno.EINVAL
EBADF = -errno.EBADF
_MASK = EF_REQUEST_ID_MASK
_U32 = 0xFFFFFFFF
_TX_TYPE = int(EventType.TX)
_TXERR_TYPE = int(EventType.TX_ERROR)

U64Array = npt.NDArray[np.uint64]
U32Array = npt.NDArray[np.uint32]

__all__ = ["TxPath"]


class TxPath:
    """TX half of :class:`~efvi.vi.VirtualInterface` (not used alone)."""

    # state set by VirtualInterface.__init__
    pd: ProtectionDomain
    driver: Driver
    _hw: HwVI
    _closed: bool
    _rejected: int  # data-path calls refused with -EINVAL
    _tx_mask: int
    _tx_ids: U32Array
    _tx_addr: U64Array
    _tx_len: U32Array
    _tx_added: int
    _tx_pushed: int
    _tx_removed: int
    _tx_ids_mv: memoryview  # the same rings as memoryviews: plain-int stores and loads
    _tx_addr_mv: memoryview
    _tx_len_mv: memoryview
    _pio: PioRegion | None

    if TYPE_CHECKING:  # VirtualInterface's
        def _check_open(self) -> None: ...

        def _dma_ok_batch(self, addrs: U64Array,
                          lens: npt.NDArray[np.uint32] | None) -> bool: ...

    # ---- queries ------------------------------------------------------------------
    def transmit_capacity(self) -> int:
        return self._tx_mask

    def transmit_fill_level(self) -> int:
        return self._tx_added - self._tx_removed

    def transmit_space(self) -> int:
        return self._tx_mask - (self._tx_added - self._tx_removed)

    # ---- TX --------------------------------------------------------------------
    def transmit_init(self, dma_addr: int, length: int, rq_id: int) -> int:
        """Write one TX descriptor for a whole frame (send it with ``transmit_push``).

        0, -EAGAIN (ring full), -EINVAL (id, address, or length outside 14..9224).
        """
        if self._closed:
            return EBADF
        pd = self.pd
        if (not MIN_TX_FRAME <= length <= MAX_TX_FRAME or not 0 <= rq_id < _MASK
                or not (pd._lo <= dma_addr and dma_addr + length <= pd._hi
                        or pd.dma_ok(dma_addr, length))):
            self._rejected += 1
            return EINVAL
        added = self._tx_added
        if added - self._tx_removed >= self._tx_mask:
            return EAGAIN
        i = added & self._tx_mask
        self._tx_addr_mv[i] = dma_addr
        self._tx_len_mv[i] = length
        self._tx_ids_mv[i] = rq_id
        self._tx_added = added + 1
        return 0

    def transmitv_init(self, iov: Sequence[tuple[int, int]], rq_id: int) -> int:
        """One frame from several (dma_addr, length) pieces; all or nothing."""
        if self._closed:
            return EBADF
        total = 0
        for addr, ln in iov:
            if ln <= 0 or not self.pd.dma_ok(addr, ln):
                self._rejected += 1
                return EINVAL
            total += ln
        if not iov or not MIN_TX_FRAME <= total <= MAX_TX_FRAME or not 0 <= rq_id < _MASK:
            self._rejected += 1
            return EINVAL
        added = self._tx_added
        if self._tx_mask - (added - self._tx_removed) < len(iov):
            return EAGAIN
        last = len(iov) - 1
        for k, (addr, ln) in enumerate(iov):
            i = (added + k) & self._tx_mask
            self._tx_addr[i] = addr
            self._tx_len[i] = ln
            self._tx_ids[i] = rq_id if k == last else _MASK
        self._tx_added = added + len(iov)
        return 0

    def transmit_push(self) -> int:
        """TX doorbell: send every descriptor written since the last push, in order."""
        if self._closed:
            return EBADF
        lo, hi = self._tx_pushed, self._tx_added
        if hi == lo:
            return 0
        self._tx_pushed = hi
        mask = self._tx_mask
        a, b = lo & mask, hi & mask
        if hi - lo == 1 and self._tx_ids_mv[a] != _MASK:  # one frame: plain ints
            self._hw.tx_post_one(self._tx_addr_mv[a], self._tx_len_mv[a], self._tx_ids_mv[a])
            return 1
        if a < b:
            self._hw.tx_post(self._tx_addr[a:b], self._tx_len[a:b], self._tx_ids[a:b])
        else:
            idx = np.arange(lo, hi, dtype=np.int64) & mask
            self._hw.tx_post(self._tx_addr[idx], self._tx_len[idx], self._tx_ids[idx])
        return hi - lo

    def transmit(self, dma_addr: int, length: int, rq_id: int) -> int:
        """``transmit_init`` + ``transmit_push``: the right call for a single frame.

        With nothing else queued (the one-packet-in-flight case) the doorbell goes
        straight to the adapter's scalar path: one descriptor, one kick, no numpy."""
        if self._tx_pushed != self._tx_added:
            rc = self.transmit_init(dma_addr, length, rq_id)
            if rc == 0:
                self.transmit_push()
            return rc
        rc = self.transmit_init(dma_addr, length, rq_id)
        if rc == 0:
            self._tx_pushed = self._tx_added
            self._hw.tx_post_one(dma_addr, length, rq_id)
        return rc

    def transmitv(self, iov: Sequence[tuple[int, int]], rq_id: int) -> int:
        rc = self.transmitv_init(iov, rq_id)
        if rc == 0:
            self.transmit_push()
        return rc

    def transmit_batch(self, dma_addrs: U64Array, lengths: npt.NDArray[np.integer],
                       rq_ids: U32Array) -> int:
        """Queue and push many single-descriptor frames (numpy arrays).

        Sends ``min(n, transmit_space())`` in order and returns that count (0 when the
        ring is full); -EINVAL, sending none, on a bad id, address or length.
        """
        if self._closed:
            return EBADF
        addrs = np.asarray(dma_addrs, dtype=np.uint64)
        lens = np.asarray(lengths, dtype=np.uint32)
        ids = np.asarray(rq_ids, dtype=np.uint32)
        if not addrs.shape == lens.shape == ids.shape or addrs.ndim != 1:
            return EINVAL
        n = min(int(addrs.shape[0]), self.transmit_space())
        if n <= 0:
            return 0
        addrs, lens, ids = addrs[:n], lens[:n], ids[:n]
        if (int(ids.max()) == _MASK or int(lens.min()) < MIN_TX_FRAME
                or int(lens.max()) > MAX_TX_FRAME or not self._dma_ok_batch(addrs, lens)):
            self._rejected += 1
            return EINVAL
        base = self._tx_added
        _ring_store(self._tx_addr, base, self._tx_mask, addrs)
        _ring_store(self._tx_len, base, self._tx_mask, lens)
        _ring_store(self._tx_ids, base, self._tx_mask, ids)
        self._tx_added = base + n
        self.transmit_push()
        return n

    # ---- PIO ----------------------------------------------------------------------
    @property
    def pio(self) -> PioRegion:
        """This VI's PIO region (allocated on first use; control path)."""
        if self._pio is None:
            self._check_open()
            area = self.pd._hw.pio_area(PIO_SIZE) if self.driver.capabilities.pio else None
            if area is not None:
                mv, dma = area
                self.pd._add_range(dma, PIO_SIZE)
                self._pio = PioRegion(mv, dma, PIO_SIZE, None)
            elif self.driver.capabilities.pio and self.driver.capabilities.multi_region:
                from efvi.memory import MemoryRegion
                mr = MemoryRegion(self.pd, PIO_SIZE)
                self._pio = PioRegion(mr.mv, mr.dma_base, PIO_SIZE, mr)
            else:
                raise UnsupportedError(
                    f"the {self.driver.adapter.name} adapter has no PIO; use sim or xdp")
        return self._pio

    def transmit_pio(self, offset: int, length: int, rq_id: int) -> int:
        """Send ``length`` bytes staged at ``offset`` of the PIO region.

        ``offset`` must be a multiple of 64 and ``length`` ≥ 16 (else -EINVAL);
        -EBADF on a closed VI. The first call allocates the region (control path).
        """
        if self._closed:
            return EBADF
        pio = self._pio
        if pio is None:
            pio = self.pio
        if offset % PIO_ALIGN or length < PIO_MIN_LEN or offset < 0 or offset + length > pio.size:
            self._rejected += 1
            return EINVAL
        return self.transmit(pio.dma_addr + offset, length, rq_id)

    def transmit_copy_pio(self, offset: int, data: bytes | bytearray | memoryview,
                          rq_id: int) -> int:
        """Copy ``data`` into the PIO region at ``offset`` and send it.

        0, -EINVAL (misaligned offset, fewer than 16 bytes), -EAGAIN, -EBADF (closed).
        """
        if self._closed:
            return EBADF
        pio = self.pio
        if offset % PIO_ALIGN or len(data) < PIO_MIN_LEN:
            self._rejected += 1
            return EINVAL
        rc = pio.copy(offset, data)
        return rc if rc else self.transmit(pio.dma_addr + offset, len(data), rq_id)

    # ---- completions ---------------------------------------------------------------
    def transmit_unbundle(self, event: Event) -> list[int]:
        """Request ids completed by a TX (or TX_ERROR) event, in submission order.

        Frees their ring slots; at most 64 ids. Call once per TX event. Cost: a few
        µs (plain ints for up to 8 ids, one numpy gather beyond). ``[]`` on a closed VI.
        """
        if self._closed:
            return []
        removed = self._tx_removed
        n = (event.rq_id - removed) & _U32
        if n == 0 or n > self._tx_pushed - removed:
            return []
        if n <= 8:
            mask = self._tx_mask
            ids = self._tx_ids_mv
            self._tx_removed = removed + n
            out = [ids[(removed + k) & mask] for k in range(n)]
            return [x for x in out if x != _MASK] if _MASK in out else out
        res: list[int] = self._unbundle_to(event.rq_id).tolist()
        return res

    def transmit_completed(self, batch: EventBatch) -> U32Array:
        """Every id completed by the TX and TX_ERROR events of ``batch``, in order.

        The batch twin of :meth:`transmit_unbundle` (one numpy gather); empty on a
        closed VI.
        """
        if self._closed:
            return np.empty(0, np.uint32)
        t = batch.type
        sel = np.flatnonzero((t == _TX_TYPE) | (t == _TXERR_TYPE))
        if sel.size == 0:
            return np.empty(0, np.uint32)
        return self._unbundle_to(int(batch.rq_id[sel[-1]]))

    def _unbundle_to(self, desc_id: int) -> U32Array:
        removed = self._tx_removed
        n = (desc_id - removed) & _U32
        if n == 0 or n > self._tx_pushed - removed:
            return np.empty(0, np.uint32)
        mask = self._tx_mask
        a, b = removed & mask, (removed + n) & mask
        if a < b:
            ids = self._tx_ids[a:b]
        else:
            ids = self._tx_ids[np.arange(removed, removed + n, dtype=np.int64) & mask]
        self._tx_removed = removed + n
        out: U32Array = ids[ids != _MASK]
        return out
