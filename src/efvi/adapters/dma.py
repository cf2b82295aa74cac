"""Vectorised DMA between byte arrays: the copy engine of the adapters that copy (sim,
packet), shared by them (efvi.adapters.dma, not inside one adapter package).

Registered memory is a sequence of 2 KiB packet buffers, so the common case — every
frame starting at the same offset inside its buffer — is a *row* gather/scatter on
a ``(n_buffers, 2048)`` view: one index per frame, a memcpy per row. Anything else
falls back to 8-byte-word or byte fancy indexing (still no Python loop per frame),
or to slice copies for large frames.

Like a DMA engine writing whole cache lines, a copy may write up to 7 bytes past a
frame's end (contents unspecified), never past the end of the 2 KiB buffer it was
given.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from efvi.constants import PKT_BUF_SIZE

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Layout = tuple[npt.NDArray[np.uint8], I64, int]


def row_layout(mem: U8, offs: I64, width: int) -> Layout | None:
    """(rows view, row of each offset, common column) if every offset sits at the same
    column of its 2 KiB buffer and ``width`` bytes fit; else None. Cost: ~3 numpy calls."""
    if mem.shape[0] % PKT_BUF_SIZE or offs.shape[0] == 0:
        return None
    col = int(offs[0]) % PKT_BUF_SIZE
    if col + width > PKT_BUF_SIZE:
        return None
    rel = offs - col
    if offs.shape[0] > 1 and (rel & (PKT_BUF_SIZE - 1)).any():
        return None
    return mem.reshape(-1, PKT_BUF_SIZE), rel >> 11, col


def _run(ridx: I64) -> int | None:
    """First row if ``ridx`` is r, r+1, ..., r+n-1 (a slice will do), else None."""
    n = ridx.shape[0]
    r0 = int(ridx[0])
    if int(ridx[-1]) - r0 != n - 1:
        return None
    if n > 2 and not (np.diff(ridx) == 1).all():
        return None
    return r0


def _stride(offs: I64) -> int | None:
    """The common difference if ``offs`` is an arithmetic progression, else None."""
    n = offs.shape[0]
    if n < 2:
        return 8
    d = int(offs[1]) - int(offs[0])
    if d <= 0 or int(offs[-1]) - int(offs[0]) != d * (n - 1):
        return None
    if n > 2 and not (np.diff(offs) == d).all():
        return None
    return d


def _cols(rows: U8, col: int, w: int) -> npt.NDArray[np.generic]:
    """Columns [col, col+w) of every row, as 8-byte words when aligned (w rounded up)."""
    if col % 8 == 0:
        w8 = (w + 7) & ~7
        if col + w8 <= PKT_BUF_SIZE and rows.ctypes.data % 8 == 0:
            return rows.view(np.uint64)[:, col // 8:(col + w8) // 8]
    return rows[:, col:col + w]


def _words(mem: U8) -> npt.NDArray[np.uint64] | None:
    if mem.ctypes.data % 8:
        return None
    n = mem.shape[0] // 8
    return mem[:n * 8].view(np.uint64)


def gather_rows(mem: U8, offs: I64, width: int) -> U8:
    """``(len(offs), width)`` bytes starting at each offset (reads past the end are 0)."""
    lay = row_layout(mem, offs, width)
    if lay is not None:
        rows, ridx, col = lay
        r0 = _run(ridx)
        out: U8 = rows[r0:r0 + ridx.shape[0], col:col + width] if r0 is not None \
            else rows[ridx, col:col + width]
        return out
    limit = mem.shape[0]
    if width % 8 == 0 and not (offs % 8).any():
        words = _words(mem)
        if words is not None:
            idx = (offs // 8)[:, None] + np.arange(width // 8, dtype=np.int64)
            np.minimum(idx, words.shape[0] - 1, out=idx)
            return np.ascontiguousarray(words[idx]).view(np.uint8)
    idx = offs[:, None] + np.arange(width, dtype=np.int64)
    np.minimum(idx, limit - 1, out=idx)
    res: U8 = mem[idx]
    return res


def gather_words(mem: U8, offs: I64, nwords: int) -> npt.NDArray[np.uint64] | None:
    """``(len(offs), nwords)`` 8-byte words at each offset — a view where the frames are
    a run of rows — or None unless every offset is 8-aligned in the row layout."""
    lay = row_layout(mem, offs, nwords * 8)
    if lay is None or lay[2] % 8 or mem.ctypes.data % 8:
        return None
    rows, ridx, col = lay
    words = rows.view(np.uint64)[:, col // 8:col // 8 + nwords]
    r0 = _run(ridx)
    out: npt.NDArray[np.uint64] = words[r0:r0 + ridx.shape[0]] if r0 is not None \
        else words[ridx]
    return out


def scatter(dst: U8, doffs: I64, src: U8, soffs: I64, lens: I64) -> None:
    """Copy ``lens[i]`` bytes from ``src[soffs[i]:]`` to ``dst[doffs[i]:]`` for every i.

    Cost: O(1) numpy calls moving ``n × max(lens)`` bytes (row path), or a Python loop
    of slice copies when neither side has the row layout and frames are large.
    """
    n = int(lens.shape[0])
    if n == 0:
        return
    w = int(lens.max())
    uniform = int(lens.min()) == w
    sl = row_layout(src, soffs, w)
    dl = row_layout(dst, doffs, w)
    if sl is not None and dl is not None:
        srows, sidx, sc = sl
        drows, didx, dc = dl
        if uniform:  # whole (word-rounded) rows: slices where the rows are runs
            scols, dcols = _cols(srows, sc, w), _cols(drows, dc, w)
            if scols.dtype == dcols.dtype and scols.shape[1] == dcols.shape[1]:
                s0, d0 = _run(sidx), _run(didx)
                block = scols[s0:s0 + n] if s0 is not None else scols[sidx]
                if d0 is not None:
                    dcols[d0:d0 + n] = block
                else:
                    dcols[didx] = block
                return
        block = srows[sidx, sc:sc + w]
        if not uniform:
            keep = np.arange(w, dtype=np.int64)[None, :] < lens[:, None]
            block = np.where(keep, block, drows[didx, dc:dc + w])
        drows[didx, dc:dc + w] = block
        return
    if dl is not None and dl[2] % 8 == 0 and not (soffs & 7).any():
        # packed 8-aligned source (a TPACKET_V3 block) into buffers: 8-byte words,
        # read through a strided view when the frames are evenly spaced
        swords = _words(src)
        drows, didx, dc = dl
        w8 = (w + 7) >> 3
        if swords is not None and drows.ctypes.data % 8 == 0 and dc + w8 * 8 <= PKT_BUF_SIZE:
            step = _stride(soffs)
            s0 = int(soffs[0]) >> 3
            if step is not None and step % 8 == 0 and s0 + (step >> 3) * (n - 1) + w8 \
                    <= swords.shape[0]:
                wblock = np.ndarray((n, w8), np.uint64, swords, s0 * 8, (step, 8))
            else:
                idx = (soffs >> 3)[:, None] + np.arange(w8, dtype=np.int64)
                np.minimum(idx, swords.shape[0] - 1, out=idx)
                wblock = swords[idx]
            dwords = drows.view(np.uint64)[:, dc >> 3:(dc >> 3) + w8]
            d0 = _run(didx)
            if not uniform:
                keep8 = np.arange(w8, dtype=np.int64)[None, :] < ((lens + 7) >> 3)[:, None]
                wblock = np.where(keep8, wblock, dwords[didx])
            if d0 is not None:
                dwords[d0:d0 + n] = wblock
            else:
                dwords[didx] = wblock
            return
    if n * w > (1 << 19):
        for s, d, ln in zip(soffs.tolist(), doffs.tolist(), lens.tolist()):
            dst[d:d + ln] = src[s:s + ln]
        return
    ar = np.arange(w, dtype=np.int64)
    sidx2 = soffs[:, None] + ar
    didx2 = doffs[:, None] + ar
    keep = ar[None, :] < lens[:, None]
    dst[didx2[keep]] = src[sidx2[keep]]
