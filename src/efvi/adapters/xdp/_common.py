"""Constants shared by the ``xdp`` adapter's modules (UMEM layout, ring arithmetic,
event codes)."""

from __future__ import annotations

import errno as _errno

from efvi.adapters.xdp.xsk import CHUNK_SIZE, XDP_PACKET_HEADROOM
from efvi.events import EventType

M32 = 0xFFFFFFFF
_REQ_NONE = 0xFFFFFFFF
PIO_RESERVE = 64 * 1024  # UMEM bytes below the region for PIO areas
BOUNCE_RESERVE = 64 * 1024  # and after those, for TX bounce frames
RESERVE = PIO_RESERVE + BOUNCE_RESERVE
BOUNCE_PER_VI = 8  # bounce frames a VI takes (on its first gathered packet)
MAX_RX_FRAME = CHUNK_SIZE - XDP_PACKET_HEADROOM
_RETRY = (_errno.EAGAIN, _errno.ENOBUFS, _errno.EBUSY)
_KICK_LIMIT = 64
_TX = int(EventType.TX)
_TXERR = int(EventType.TX_ERROR)
_SW = int(EventType.SW)
_OPTIONS = {"mode", "zerocopy", "force", "ts", "broker", "busy_poll", "busy_budget"}
#: RX event flag (xdp adapter): ``ts_ns`` is a hardware stamp from the NIC's clock
RX_FLAG_HW_TS = 0x100
_HW_TS_MASK = (1 << 63) - 1
_SCALAR_RX = 8  # at most this many RX frames per queue: scalar path (no numpy overhead)
