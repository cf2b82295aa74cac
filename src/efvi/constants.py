"""Constants mirrored from the ef_vi headers (``etherfabric/ef_vi.h``, §8.4 of the notes)."""

from __future__ import annotations

#: Size and alignment of one packet buffer; memory regions are multiples of it.
PKT_BUF_SIZE = 2048
#: DMA alignment for the start of packet data inside a buffer.
EF_VI_DMA_ALIGN = 64
#: The NIC's page: DMA addresses are contiguous only within one.
EF_VI_NIC_PAGE_SIZE = 4096
#: At most this many queues may share one event queue.
EF_VI_MAX_QS = 32
#: ``eventq_poll`` must be given room for at least this many events.
EF_VI_EVENT_POLL_MIN_EVS = 2
#: Most ids an RX_MULTI unbundle returns.
EF_VI_RECEIVE_BATCH = 15
#: Most ids one TX event completes (``transmit_unbundle``).
EF_VI_TRANSMIT_BATCH = 64
#: The reserved request id meaning "no id"; must never be posted.
EF_REQUEST_ID_MASK = 0xFFFFFFFF
#: "Any VLAN" in filter specs.
EF_FILTER_VLAN_ID_ANY = -1
#: Default ring sizes when the caller passes -1.
DEFAULT_RXQ_SIZE = 512
DEFAULT_TXQ_SIZE = 512
#: Largest ring a VI may ask for (EF10 RXQ max is 4096; we allow more in software).
MAX_RING_SIZE = 1 << 16
#: PIO region size per VI (the EF10 figure) and its rules.
PIO_SIZE = 4096
PIO_ALIGN = 64
PIO_MIN_LEN = 16
#: Shortest frame a TX descriptor chain may carry (an Ethernet header).
MIN_TX_FRAME = 14
#: Largest frame the model transmits (jumbo 9216 + VLAN tags).
MAX_TX_FRAME = 9216 + 8
#: VI flag (``enum ef_vi_flags``): the VI accepts RX events delivered late and in
#: batches for throughput. On ``packet`` it selects a TPACKET_V3 block ring (one
#: wake-up per block); elsewhere it changes nothing. Events stay one per frame.
EF_VI_RX_EVENT_MERGE = 0x200000
#: VI flag (``EF_VI_TX_TIMESTAMPS``): TX completions carry the frame's transmit
#: time (``ts_ns``), one TX event per frame (ef_vi's ``TX_WITH_TIMESTAMP``).
EF_VI_TX_TIMESTAMPS = 0x20000
