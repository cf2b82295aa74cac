"""Vectorised DMA between flat byte arrays (the sim's copy engine).

Copies move 8-byte words when every offset is 8-byte aligned (the common case:
buffers are 2 KiB aligned, DMA starts are 64-byte aligned) — eight times fewer
elements for numpy's fancy indexing — and bytes otherwise. Like a real DMA engine,
the word path may write up to 7 bytes of padding after a frame, never past the end
of the 8-byte-aligned buffer area it was given.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def _words(mem: U8) -> npt.NDArray[np.uint64] | None:
    if mem.ctypes.data % 8:
        return None
    n = mem.shape[0] // 8
    return mem[:n * 8].view(np.uint64)


def gather_rows(mem: U8, offs: I64, width: int) -> U8:
    """``(len(offs), width)`` bytes starting at each offset (reads past the end are 0)."""
    limit = mem.shape[0]
    if width % 8 == 0 and not (offs % 8).any():
        words = _words(mem)
        if words is not None:
            idx = (offs // 8)[:, None] + np.arange(width // 8, dtype=np.int64)
            np.minimum(idx, words.shape[0] - 1, out=idx)
            rows: U8 = np.ascontiguousarray(words[idx]).view(np.uint8)
            return rows
    idx = offs[:, None] + np.arange(width, dtype=np.int64)
    np.minimum(idx, limit - 1, out=idx)
    out: U8 = mem[idx]
    return out


def scatter(dst: U8, doffs: I64, src: U8, soffs: I64, lens: I64) -> None:
    """Copy ``lens[i]`` bytes from ``src[soffs[i]:]`` to ``dst[doffs[i]:]`` for every i.

    Cost: one gather and one scatter of ``n × max(lens)`` elements (÷ 8 on the word
    path), or a Python loop of slice copies when frames are large.
    """
    n = int(lens.shape[0])
    if n == 0:
        return
    w = int(lens.max())
    if n * w > (1 << 19):
        for s, d, ln in zip(soffs.tolist(), doffs.tolist(), lens.tolist()):
            dst[d:d + ln] = src[s:s + ln]
        return
    dw, sw = _words(dst), _words(src)
    if dw is not None and sw is not None and not (doffs % 8).any() and not (soffs % 8).any():
        nw = (w + 7) // 8
        ar = np.arange(nw, dtype=np.int64)
        sidx = (soffs // 8)[:, None] + ar
        didx = (doffs // 8)[:, None] + ar
        np.minimum(sidx, sw.shape[0] - 1, out=sidx)
        if int(lens.min()) > (nw - 1) * 8:  # every frame needs all nw words
            dw[didx] = sw[sidx]
        else:
            keep = ar[None, :] * 8 < lens[:, None]
            dw[didx[keep]] = sw[sidx[keep]]
        return
    ar = np.arange(w, dtype=np.int64)
    sidx = soffs[:, None] + ar
    didx = doffs[:, None] + ar
    keep = ar[None, :] < lens[:, None]
    dst[didx[keep]] = src[sidx[keep]]
