"""Constants shared by the ``packet`` adapter's modules (event codes, DMA addresses)."""

from __future__ import annotations

from efvi.events import RX_FLAG_OUTGOING, EventType, RxFlags

_RX = int(EventType.RX)
_RXD = int(EventType.RX_DISCARD)
_NODESC = int(EventType.RX_NO_DESC_TRUNC)
_TX = int(EventType.TX)
_TXERR = int(EventType.TX_ERROR)
_SW = int(EventType.SW)
_SOP = int(RxFlags.SOP)
_CONT = int(RxFlags.CONT)
_MCAST = int(RxFlags.MULTICAST)
_MASK = 0xFFFFFFFF
_REGION_SHIFT = 40
_OFF_MASK = (1 << _REGION_SHIFT) - 1
_OUT = RX_FLAG_OUTGOING
_PKTTYPE_OFF = 32 + 10  # sockaddr_ll.sll_pkttype, after the 32-byte tpacket2_hdr
_PACKET_OUTGOING = 4
_SCAN = 1024  # ring slots examined per step
