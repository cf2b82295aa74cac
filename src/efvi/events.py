"""Events: the one way the data path reports what happened.

Two forms share one layout:

* :class:`EventBatch` — numpy columns over a preallocated record array
  (:data:`EVENT_DTYPE`), produced by ``vi.poll()`` without building any per-packet
  Python object;
* :class:`Event` — one small frozen object per event, produced by
  ``vi.eventq_poll()`` *from* an :class:`EventBatch`.

Per-packet faults (no descriptor, truncation, TX errors) are events and counters,
never exceptions.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from functools import partial
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


class EventType(IntEnum):
    """``EF_EVENT_TYPE_*`` (same numbers as ef_vi)."""

    RX = 0
    TX = 1
    RX_DISCARD = 2
    TX_ERROR = 3
    RX_NO_DESC_TRUNC = 4
    SW = 5
    OFLOW = 6
    TX_WITH_TIMESTAMP = 7


#: RX event flag outside ef_vi's set: a frame this host *sent*, seen by a VI of the
#: ``packet`` adapter opened with ``dir=out|inout`` (``PACKET_OUTGOING``)
RX_FLAG_OUTGOING = 0x200


class RxFlags(IntFlag):
    """``EF_EVENT_FLAG_*`` on RX and RX_DISCARD events."""

    NONE = 0
    SOP = 0x1
    CONT = 0x2
    MULTICAST = 0x8


class DiscardReason(IntEnum):
    """``EF_EVENT_RX_DISCARD_*`` subtypes."""

    CSUM_BAD = 0
    MCAST_MISMATCH = 1
    CRC_BAD = 2
    TRUNC = 3
    RIGHTS = 4
    EV_ERROR = 5
    OTHER = 6
    INNER_CSUM_BAD = 7


class TxErrorType(IntEnum):
    """``EF_EVENT_TX_ERROR_*`` subtypes."""

    RIGHTS = 0
    OFLOW = 1
    TOO_BIG = 2
    BUS = 3
    #: efvi's own: the link could not carry the frame (no carrier, interface down or
    #: gone) and it was not sent; the kernel adapters report it instead of retrying
    LINK_DOWN = 4


class ClockSource:
    """Names of timestamp clock sources reported by adapters."""

    VIRTUAL = "virtual"  # the sim's deterministic clock
    SW = "sw"  # host clock (CLOCK_REALTIME) read by the software NIC / kernel
    XDP_SW = "xdp-sw"  # bpf_ktime_get_ns in the XDP program, converted to realtime
    HW = "hw"  # the adapter's clock


#: One event record. ``ofs`` (RX) is where the frame starts relative to the posted
#: DMA address (0 on the sim and packet adapters, the AF_XDP headroom on xdp).
#: ``rq_id`` is the request id for RX/RX_DISCARD/TX_WITH_TIMESTAMP,
#: and for TX/TX_ERROR the ring index after the last completed descriptor (ef_vi's
#: ``desc_id``). ``len`` is the cumulative frame length on RX (SOP/CONT chains), the
#: SW event's data on SW. ``ts_ns`` is int nanoseconds (0 = none).
EVENT_DTYPE = np.dtype(
    [
        ("type", np.uint8),
        ("subtype", np.uint8),
        ("flags", np.uint16),
        ("q_id", np.uint16),
        ("ofs", np.uint16),
        ("rq_id", np.uint32),
        ("len", np.uint32),
        ("ts_ns", np.int64),
    ]
)


def event_array(n: int) -> npt.NDArray[np.void]:
    """A zeroed record array of ``n`` events (control path: allocates)."""
    return np.zeros(n, dtype=EVENT_DTYPE)


class Event(NamedTuple):
    """One event, as ``eventq_poll`` returns it (fields in :data:`EVENT_DTYPE` order).

    ``type`` is an :class:`EventType`; ``subtype`` a :class:`DiscardReason` or
    :class:`TxErrorType` where relevant; ``rq_id`` the request id (RX) or the TX ring
    position after the completion (TX: hand the event to ``transmit_unbundle``).
    """

    type: EventType
    subtype: int
    flags: int
    q_id: int
    ofs: int
    rq_id: int
    len: int
    ts_ns: int

    @property
    def sop(self) -> bool:
        return bool(self.flags & RxFlags.SOP)

    @property
    def cont(self) -> bool:
        return bool(self.flags & RxFlags.CONT)

    @property
    def discard_reason(self) -> DiscardReason | None:
        return DiscardReason(self.subtype) if self.type == EventType.RX_DISCARD else None


_TYPES = tuple(EventType(i) for i in range(len(EventType)))
_new = tuple.__new__
_mk_event = partial(tuple.__new__, Event)  # Event from one 8-tuple, no Python frame


class EventBatch:
    """Events of one poll as numpy columns (views; valid until the next poll).

    Columns (properties, each a view made on access): ``type``, ``subtype``,
    ``flags``, ``q_id``, ``ofs``, ``rq_id``, ``len``, ``ts_ns``. ``records`` is the
    underlying structured array. ``batch.events()`` builds :class:`Event` objects
    (one Python object per event: the per-packet path).
    """

    __slots__ = ("records",)

    def __init__(self, records: npt.NDArray[np.void]) -> None:
        self.records = records

    def __len__(self) -> int:
        return int(self.records.shape[0])

    type = property(lambda self: self.records["type"])
    subtype = property(lambda self: self.records["subtype"])
    flags = property(lambda self: self.records["flags"])
    q_id = property(lambda self: self.records["q_id"])
    ofs = property(lambda self: self.records["ofs"])
    rq_id = property(lambda self: self.records["rq_id"])
    len = property(lambda self: self.records["len"])
    ts_ns = property(lambda self: self.records["ts_ns"])

    def mask(self, etype: EventType) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = self.records["type"] == int(etype)
        return out

    def rx_mask(self) -> npt.NDArray[np.bool_]:
        return self.mask(EventType.RX)

    def tx_mask(self) -> npt.NDArray[np.bool_]:
        return self.mask(EventType.TX)

    def events(self) -> list[Event]:
        """Per-event objects (cost: one small tuple per event).

        A few events: one record-to-tuple conversion each. More: each column becomes a
        list of ints in one call and ``zip`` assembles the tuples in C (~30 % less per
        event than converting records one by one).
        """
        r = self.records
        if r.shape[0] <= 4:
            types = _TYPES
            return [_new(Event, (types[t], st, fl, q, of, rq, ln, ts))
                    for t, st, fl, q, of, rq, ln, ts in r.tolist()]
        return list(map(_mk_event, zip(map(_TYPES.__getitem__, r["type"].tolist()),
                                       r["subtype"].tolist(), r["flags"].tolist(),
                                       r["q_id"].tolist(), r["ofs"].tolist(),
                                       r["rq_id"].tolist(), r["len"].tolist(),
                                       r["ts_ns"].tolist())))
