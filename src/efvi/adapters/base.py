"""The adapter contract: what every adapter (``sim``, ``xdp``, ``packet``) implements.

The core API (:mod:`efvi.vi` and friends) keeps ef_vi's software state — ring
counters, request ids, fill levels, stats of misuse — and validates every argument.
An adapter only moves descriptors, bytes and events. Its objects:

* :class:`Adapter` — one per :class:`~efvi.driver.Driver`: an interface (or sim port),
  its capabilities, its clock; creates PDs.
* :class:`HwProtectionDomain` — a DMA address space: registers memory regions (seen
  through :class:`RegisteredRegion`, which :class:`efvi.memory.MemoryRegion`
  satisfies), allocates VIs, installs filters.
* :class:`HwVI` — one VI's queues: RX doorbell, TX doorbell, event harvest.

Rules every implementation follows (the conformance suite in
:mod:`efvi.testing.conformance` checks them):

* ``rx_post``/``tx_post`` receive descriptors that the core already validated
  (addresses inside registered memory, lengths in range, ids not ``0xffffffff``);
  they never raise for per-packet conditions.
* An RX descriptor produces exactly one RX, RX_DISCARD or RX_NO_DESC_TRUNC-covered
  completion; frames arriving with no descriptor are dropped and counted
  (``rx_nodesc_drops``), never queued without bound.
* TX completes in submission order. A TX event's ``rq_id`` is the cumulative count
  (mod 2**32) of TX descriptors completed, and one event covers at most
  ``EF_VI_TRANSMIT_BATCH`` (64) packets.
* Timestamps are int nanoseconds; ``clock_source`` names their clock.
* ``close`` releases every kernel object and is idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from efvi._types import InterfaceInfo as InterfaceInfo

if TYPE_CHECKING:
    from efvi.events import Event
    from efvi.filters import FilterSpec

U64Array = npt.NDArray[np.uint64]
U32Array = npt.NDArray[np.uint32]
EventArray = npt.NDArray[np.void]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do. Asking for a missing one raises UnsupportedError."""

    adapter: str
    steal: bool  # filters take frames away from the kernel
    sniff: bool  # filters copy frames; the kernel keeps its copy
    zero_copy: bool  # frames are DMA'd straight into registered memory
    rx_timestamps: bool
    tx_timestamps: bool
    hw_timestamps: bool
    pio: bool
    vi_sets: bool
    multi_region: bool  # a PD may register several memory regions
    rx_queues: int  # hardware RX queues of the interface
    filter_kinds: frozenset[str] = field(default_factory=frozenset)
    sw_events: bool = True  # eventq_put queues a software event (ef_eventq_put)
    mcast_replicate: bool = True  # one multicast filter on several VIs feeds each of them

    def as_dict(self) -> dict[str, object]:
        return {
            "adapter": self.adapter, "steal": self.steal, "sniff": self.sniff,
            "zero_copy": self.zero_copy, "rx_timestamps": self.rx_timestamps,
            "tx_timestamps": self.tx_timestamps, "hw_timestamps": self.hw_timestamps,
            "pio": self.pio, "vi_sets": self.vi_sets, "multi_region": self.multi_region,
            "rx_queues": self.rx_queues, "filter_kinds": sorted(self.filter_kinds),
            "sw_events": self.sw_events, "mcast_replicate": self.mcast_replicate,
        }


class HwVI(ABC):
    """One VI's queues on the adapter. Data-path methods must not raise."""

    #: bytes the adapter may write per RX descriptor (prefix included)
    rx_buffer_len: int = 2048
    #: bytes of adapter metadata before the frame in the first RX buffer
    rx_prefix_len: int = 0
    #: clock of ``ts_ns`` in RX events (see :class:`efvi.events.ClockSource`)
    clock_source: str = "sw"

    @abstractmethod
    def rx_post(self, addrs: U64Array, ids: U32Array) -> None:
        """RX doorbell: hand ``len(addrs)`` buffers (DMA addresses) to the NIC, in order."""

    @abstractmethod
    def tx_post(self, addrs: U64Array, lens: U32Array, ids: U32Array) -> None:
        """TX doorbell: descriptors in order; a packet ends at the first id != 0xffffffff."""

    @abstractmethod
    def harvest(self, out: EventArray, max_events: int) -> int:
        """Write up to ``max_events`` events into ``out[0:n]``; return n. Never blocks."""

    def wait(self, timeout_ns: int | None) -> None:
        """Block until an event may be ready or ``timeout_ns`` passes (None = forever)."""
        import time
        time.sleep(min(timeout_ns or 1_000_000, 1_000_000) / 1e9)

    def activate(self) -> None:
        """Create now what the adapter would create lazily on first use (sockets,
        rings), so the first post or transmit does not stall. Control path."""

    def sw_event(self, data: int) -> bool:
        """Queue a SW event carrying ``data`` (16 bits); False if the queue is full."""
        return False

    def stats(self) -> dict[str, int]:
        """Drop and fault counters the adapter keeps (names ending in ``_drops`` etc.)."""
        return {}

    def set_rx_buffer_len(self, nbytes: int) -> None:
        self.rx_buffer_len = nbytes

    # ---- the one-packet-in-flight path (latency) ------------------------------------
    #: what :meth:`rx_one` took last: ``[ofs, len, ts_ns]``, updated in place (one list
    #: per VI, made once: the latency loop reads it without any object being built)
    rx1: list[int]

    def rx_one(self) -> int:
        """Take the next event if it is a whole-frame RX: return its request id and set
        :attr:`rx1`; -1 when no event waits; -2 when the next event is anything else
        (or the adapter has no such path): harvest it. Never blocks or raises.

        Default: -2 (use :meth:`harvest`)."""
        return -2

    def harvest_events(self, max_events: int) -> tuple[list[Event], int] | None:
        """:meth:`harvest` as :class:`~efvi.events.Event` tuples built straight from the
        adapter's rings (the per-packet poll, ``eventq_poll``): up to ``max_events``
        events — the same events, in the same order, as :meth:`harvest` would write —
        and how many RX descriptors they consumed (RX and RX_DISCARD events); ``([], 0)``
        when nothing waits. None when this path does not apply now (the adapter says
        when) or at all: the caller uses :meth:`harvest`. Never blocks or raises.

        Default: None."""
        return None

    def rx_post_list(self, addrs: list[int], ids: list[int]) -> None:
        """:meth:`rx_post` of a few buffers from plain ints (the per-packet loop's
        refill; adapters override it with a scalar path, the default builds arrays)."""
        self.rx_post(np.array(addrs, np.uint64), np.array(ids, np.uint32))

    def rx_post_one(self, addr: int, rq_id: int) -> None:
        """:meth:`rx_post` of one buffer from plain ints (adapters override it with a
        scalar path; the default builds two one-element arrays)."""
        self.rx_post(np.array([addr], np.uint64), np.array([rq_id], np.uint32))

    def tx_post_one(self, addr: int, length: int, rq_id: int) -> None:
        """:meth:`tx_post` of one whole-frame descriptor from plain ints."""
        self.tx_post(np.array([addr], np.uint64), np.array([length], np.uint32),
                     np.array([rq_id], np.uint32))

    @abstractmethod
    def close(self) -> None:
        """Release the queues (idempotent). Posted buffers are returned to the caller."""


class RegisteredRegion(Protocol):
    """What an adapter may use of a memory region registered with one of its PDs (the
    core's :class:`efvi.memory.MemoryRegion` is one): its bytes, where they are, the
    headroom mapped below them for the adapter, and the PD it was first registered in."""

    #: bytes in the region (a multiple of the 2048-byte packet buffer)
    nbytes: int
    #: bytes mapped right below :attr:`address` for the adapter (``region_headroom``)
    headroom: int
    #: the region's bytes, as numpy and as a memoryview
    buf: npt.NDArray[np.uint8]
    mv: memoryview
    #: a sealed memfd backing the bytes when the adapter asked for ``shared_memory``
    #: (efvid registers it for an unprivileged process), else None
    memfd: int | None

    @property
    def address(self) -> int:
        """Virtual address of the first byte."""
        ...

    @property
    def headroom_address(self) -> int:
        """Virtual address of the headroom below the region (0 if none)."""
        ...

    @property
    def origin_pd(self) -> HwProtectionDomain | None:
        """The adapter PD these bytes were first registered with when this region
        shares them (``MemoryRegion.share``), else None."""
        ...


class HwProtectionDomain(ABC):
    """A DMA address space on the adapter."""

    @abstractmethod
    def register_memory(self, region: RegisteredRegion) -> int:
        """Make ``region`` DMA-able; return its DMA base address (page aligned)."""

    def unregister_memory(self, region: RegisteredRegion) -> None:
        """Forget ``region`` (no VI may still have its buffers posted)."""

    @abstractmethod
    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int,
                 queue: int | None) -> HwVI:
        """Create a VI with rings of these (power of two) sizes."""

    @abstractmethod
    def filter_add(self, spec: "FilterSpec", targets: Sequence[HwVI]) -> object:
        """Install ``spec``; with several targets, spread by symmetric flow hash (VI set).

        Return a handle for :meth:`filter_del`. Raise FilterExistsError for an identical
        unicast steal filter, UnsupportedError for a kind or mode the adapter lacks.
        """

    @abstractmethod
    def filter_del(self, handle: object) -> None:
        """Remove a filter installed by :meth:`filter_add`."""

    def pio_area(self, nbytes: int) -> tuple[memoryview, int] | None:
        """PIO backing store: (writable bytes, DMA address), or None if unsupported."""
        return None

    def close(self) -> None:
        """Release the PD (idempotent)."""


class Adapter(ABC):
    """One opened interface (the ``Driver``'s back end)."""

    name: str = "?"
    #: True if registered memory must be mlock'ed (the kernel pins it for DMA)
    requires_locked_memory: bool = False
    #: memory regions are backed by a sealed memfd (``MemoryRegion.memfd``) that the
    #: adapter can hand to another process (efvid registers it for an unprivileged one)
    shared_memory: bool = False
    #: bytes the adapter wants mapped right below every memory region, in the same
    #: mapping (``MemoryRegion.headroom_address``): e.g. AF_XDP PIO and bounce frames,
    #: which must be contiguous with the region to live in the same UMEM
    region_headroom: int = 0
    #: copies the adapter itself makes in user space per received / sent frame (0 when
    #: the NIC, the kernel or the sim's DMA writes registered memory directly)
    rx_user_copies: int = 0
    tx_user_copies: int = 0

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        self.iface = iface
        self.queue = queue
        self.options = options

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def interface_info(self) -> InterfaceInfo: ...

    def resolve_neighbour(self, ip: str) -> bytes | None:
        """MAC of ``ip`` from the neighbour table reachable through this interface."""
        return None

    @abstractmethod
    def alloc_pd(self) -> HwProtectionDomain: ...

    @abstractmethod
    def now_ns(self) -> int:
        """The adapter clock (the one RX timestamps use), int ns."""

    def link_state(self) -> str:
        """Whether the interface can carry frames: ``up``, ``no-carrier``, ``down`` or
        ``gone`` (deleted, or moved to another namespace) — see
        :class:`efvi.linkstate.LinkProbe`.

        Control path, cheap (two ioctls on the kernel adapters): meant for an
        application's once-a-second check, never per packet. An adapter without a
        link to lose (sim) is always ``up``.
        """
        return "up"

    def close(self) -> None:
        """Release everything the adapter opened (idempotent)."""
