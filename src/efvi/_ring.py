"""Ring index helpers of the core VI: spans and stores that wrap at the ring's end."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U64Array = npt.NDArray[np.uint64]
U32Array = npt.NDArray[np.uint32]


def ring_span(addr: U64Array, ids: U32Array, lo: int, hi: int,
               mask: int) -> tuple[U64Array, U32Array]:
    a, b = lo & mask, hi & mask
    if a < b:
        return addr[a:b], ids[a:b]
    idx = np.arange(lo, hi, dtype=np.int64) & mask
    return addr[idx], ids[idx]


def ring_store(ring: npt.NDArray[np.generic], start: int, mask: int,
                values: npt.NDArray[np.generic]) -> None:
    n = values.shape[0]
    a = start & mask
    first = min(n, mask + 1 - a)
    ring[a:a + first] = values[:first]
    if first < n:
        ring[:n - first] = values[first:]
