"""Frames on the software NIC's wires: :class:`FrameBatch` (many frames in one flat
byte array, the batch path's unit) and the flow key the ports route by
(:func:`scalar_key` for one frame; :meth:`~efvi.adapters.sim.port.SimPort._route`
computes the same key over a batch with numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: bytes of each frame the flow key looks at
KEY_BYTES = 40
_AR_KEY = np.arange(KEY_BYTES, dtype=np.int64)
_HASH_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                       0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD], dtype=np.uint64)
# bytes of a plain IPv4 (IHL 5) UDP frame that do not change where it is routed:
# total length and id (16..19; the key keeps a "UDP header present" flag in 16),
# TTL (22), header checksum (24..25), UDP length and checksum (38..39).
_CANON_ZERO = np.array([17, 18, 19, 22, 24, 25, 38, 39], dtype=np.int64)
# _one_flow compares the 40 key bytes as 5 little-endian words, ignoring IP id (18-19),
# TTL (22) and the IP header checksum (24-25) — total length and UDP length must match
_ONE_FLOW_MASK = np.frombuffer(bytes(
    0 if i in (18, 19, 22, 24, 25) else 0xFF for i in range(KEY_BYTES)), dtype="<u8").copy()


@dataclass(slots=True)
class FrameBatch:
    """Frames at ``offs[i]`` (``lens[i]`` bytes) of the flat ``mem``, sent at ``ts[i]``."""

    mem: U8
    offs: I64
    lens: I64
    ts: I64

    def __len__(self) -> int:
        return int(self.offs.shape[0])

    def frame(self, i: int) -> bytes:
        o = int(self.offs[i])
        return self.mem[o:o + int(self.lens[i])].tobytes()

    @staticmethod
    def from_frames(frames: list[bytes], ts: I64) -> "FrameBatch":
        """A batch over copies of ``frames`` (one 2 KiB row each when they fit)."""
        lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
        if lens.shape[0] and int(lens.max()) <= 2048:
            rows = np.zeros((len(frames), 2048), dtype=np.uint8)
            for i, f in enumerate(frames):
                rows[i, :len(f)] = np.frombuffer(f, np.uint8)
            return FrameBatch(rows.reshape(-1), np.arange(len(frames), dtype=np.int64) * 2048,
                              lens, ts)
        offs = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            np.cumsum(lens[:-1], out=offs[1:])
        mem = np.frombuffer(b"".join(frames) + bytes(KEY_BYTES), dtype=np.uint8)
        return FrameBatch(mem, offs, lens, ts)


_ZERO2 = b"\x00\x00"


def scalar_key(frame: bytes) -> bytes | None:
    """The flow key :meth:`SimPort._route` computes, for one frame (None: no key)."""
    if len(frame) < 38 or frame[12:15] != b"\x08\x00\x45" or frame[23] != 17 \
            or frame[20] & 0x3F or frame[21]:
        return None
    tot = (frame[16] << 8) | frame[17]
    ok = b"\x01" if len(frame) >= 42 and tot >= 28 else b"\x00"
    return b"".join((frame[:16], ok, b"\x00\x00\x00", frame[20:22], b"\x00", frame[23:24],
                     _ZERO2, frame[26:38], _ZERO2))
