"""TPACKET_V3 block parsing (:meth:`BlockRing.frames`) on synthetic blocks laid out as
the kernel lays them out: one stride, mixed strides, a run then irregular frames."""

from __future__ import annotations

import numpy as np
import pytest

from efvi.adapters.packet.ring import V3_MAC_OFFSET, BlockRing
from efvi.adapters.dma import scatter

BS = 64 * 1024


def _block(mem: np.ndarray, b: int, lens: list[int]) -> list[int]:
    """Write frames of ``lens`` into block ``b`` as the kernel does; their data offsets."""
    w32, w16 = mem.view(np.uint32), mem.view(np.uint16)
    base = b * BS
    w32[(base >> 2) + 2] = 1  # TP_STATUS_USER
    w32[(base >> 2) + 3] = len(lens)
    w32[(base >> 2) + 4] = 48
    h = base + 48
    starts = []
    for i, ln in enumerate(lens):
        step = (V3_MAC_OFFSET + ln + 15) & ~15
        w32[h >> 2] = step if i < len(lens) - 1 else 0
        w32[(h >> 2) + 1] = 1000 + i  # sec
        w32[(h >> 2) + 2] = i  # nsec
        w32[(h >> 2) + 3] = ln
        w32[(h >> 2) + 4] = ln
        w16[(h >> 1) + 12] = V3_MAC_OFFSET
        mem[h + V3_MAC_OFFSET:h + V3_MAC_OFFSET + ln] = (np.arange(ln) + i) & 0xFF
        starts.append(h + V3_MAC_OFFSET)
        h += step
    return starts


@pytest.mark.parametrize("lens", [
    [60] * 300,  # one stride: strided views
    [60, 1514, 61, 100, 60, 60] * 20,  # every stride differs: the Python walk
    [60] * 50 + [200, 64, 1000] + [60] * 40,  # a run, irregular frames, a run
    [60],
])
def test_frames_finds_every_frame(lens: list[int]) -> None:
    mem = np.zeros(2 * BS, np.uint8)
    starts = _block(mem, 1, lens)
    br = BlockRing(mem, 2, BS, 10)
    assert br.ready(1) and not br.ready(0)
    fr = br.frames(1)
    assert fr.soff.tolist() == starts
    assert fr.length.tolist() == lens and fr.snaplen.tolist() == lens
    assert fr.sec.tolist() == [1000 + i for i in range(len(lens))]
    assert fr.nsec.tolist() == list(range(len(lens)))
    # the copy engine moves each frame intact into 2 KiB buffers
    dst = np.zeros(len(lens) * 2048, np.uint8)
    scatter(dst, np.arange(len(lens), dtype=np.int64) * 2048, mem, fr.soff,
            fr.length.astype(np.int64))
    rows = dst.reshape(-1, 2048)
    for i, ln in enumerate(lens):
        assert (rows[i, :ln] == ((np.arange(ln) + i) & 0xFF)).all()
    br.release(1)
    assert not br.ready(1)
