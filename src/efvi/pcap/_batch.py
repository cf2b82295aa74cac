"""Vectorised helpers shared by the pcap and pcapng batch paths (private)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

#: Records per numpy chunk on the write path (bounds temporary memory).
WRITE_CHUNK = 1 << 15


def as_batch_inputs(frames: npt.ArrayLike, lengths: npt.ArrayLike, ts_ns: npt.ArrayLike,
                    orig_lens: npt.ArrayLike | None) -> tuple[U8, I64, I64, I64]:
    """Validate and normalise the batch-write arguments (control-path checks: raises
    ValueError for misuse)."""
    fr = np.asarray(frames)
    if fr.ndim != 2 or fr.dtype != np.uint8:
        raise ValueError(f"frames must be a 2-D uint8 array, got {fr.dtype} {fr.shape}")
    n = fr.shape[0]
    ln = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
    ts = np.asarray(ts_ns)
    if ts.dtype.kind == "f":
        raise ValueError("ts_ns must be integer nanoseconds, not float")
    ts = ts.astype(np.int64, copy=False).reshape(-1)
    ol = ln if orig_lens is None else np.asarray(orig_lens).astype(np.int64,
                                                                    copy=False).reshape(-1)
    if not (ln.shape[0] == ts.shape[0] == ol.shape[0] == n):
        raise ValueError("frames, lengths, ts_ns and orig_lens must have N entries each")
    if n and (ln.min() < 0 or ts.min() < 0):
        raise ValueError("lengths and timestamps must be non-negative")
    return fr, ln, ts, ol


def pack_rows(header: U8, frames: U8, caplen: I64, data_cols: int,
              trailer: npt.NDArray[np.uint32] | None = None) -> U8:
    """Concatenate per-record ``header`` rows (c, H), the first ``caplen[i]`` bytes of
    each frame (zero padded to ``data_cols`` columns' worth of 4-byte alignment when a
    ``trailer`` is given), and the optional 4-byte trailer, into one bytes object.

    Cost: one (c, H + W + 4) uint8 array, plus a boolean gather when lengths differ.
    """
    c, h = header.shape
    w = frames.shape[1]
    uniform = bool(c == 0 or (caplen.min() == caplen.max() == w))
    if trailer is None:
        out = np.empty((c, h + w), np.uint8)
        out[:, :h] = header
        out[:, h:] = frames
        if uniform:
            return out
        rec_len = h + caplen
    else:
        padded = caplen + (-caplen % 4)
        cols = h + data_cols + 4
        dense = uniform and data_cols == w  # no pad bytes anywhere: nothing to zero
        out = np.empty((c, cols), np.uint8) if dense else np.zeros((c, cols), np.uint8)
        out[:, :h] = header
        out[:, h:h + w] = frames
        if not uniform:
            dcols = np.arange(w)
            out[:, h:h + w][dcols >= caplen[:, None]] = 0
        tb = trailer.astype("=u4").view(np.uint8).reshape(c, 4)
        tpos = h + padded
        if uniform or bool(c and padded.min() == padded.max()):
            t0 = int(tpos[0]) if c else h
            out[:, t0:t0 + 4] = tb
        else:
            rows = np.arange(c)
            for k in range(4):
                out[rows, tpos + k] = tb[:, k]
        rec_len = tpos + 4
        if bool(c == 0 or rec_len.min() == rec_len.max() == cols):
            return out
    mask = np.arange(out.shape[1]) < rec_len[:, None]
    packed: U8 = out[mask]
    return packed


def gather_u32(arr: U8, offs: I64, little: bool) -> I64:
    """The u32 at each offset of ``arr`` (vectorised, either byte order).

    When every offset is 4-aligned (always so for pcapng blocks) this is one gather
    from a u32 view; otherwise four byte gathers and shifts.
    """
    if offs.size and not (offs & 3).any():
        words = arr[:arr.shape[0] // 4 * 4].view("<u4" if little else ">u4")
        got: I64 = words[offs >> 2].astype(np.int64)
        return got
    b0 = arr[offs].astype(np.int64)
    b1 = arr[offs + 1].astype(np.int64)
    b2 = arr[offs + 2].astype(np.int64)
    b3 = arr[offs + 3].astype(np.int64)
    if little:
        return b0 | b1 << 8 | b2 << 16 | b3 << 24
    return b3 | b2 << 8 | b1 << 16 | b0 << 24


def runs_to_offsets(runs: list[tuple[int, int, int]]) -> I64:
    """``(start, stride, count)`` runs -> the flat array of record start offsets."""
    if not runs:
        return np.zeros(0, np.int64)
    r = np.array(runs, np.int64)
    counts = r[:, 2]
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(total, dtype=np.int64) - first
    return np.repeat(r[:, 0], counts) + within * np.repeat(r[:, 1], counts)


def run_length(buf: bytes, pos: int, stride: int, count: int, field: int,
               value: bytes) -> int:
    """How many of ``count`` records of size ``stride`` from ``pos`` carry ``value``
    (4 bytes) at offset ``field``: the length of a uniform run (at least 1 when the
    first one does). One vectorised comparison instead of ``count`` Python steps."""
    a = np.frombuffer(buf, np.uint8, count=count * stride, offset=pos).reshape(count, stride)
    col = a[:, field:field + 4]
    want = np.frombuffer(value, np.uint8)
    bad = np.flatnonzero((col != want).any(axis=1))
    return int(bad[0]) if bad.size else count
