"""The ``sim`` adapter: a software NIC in the process (the embedded default).

URL: ``sim[:PORT][?wire=NAME&loopback=1&clock=virtual|real&mac=MAC&ip=ADDR&mtu=N]``,
plus ``pcap=FILE&speed=1|0&loop=N&eof_event=DATA`` to play a capture into the port
(:mod:`efvi.adapters.sim.feed`).
``PORT`` defaults to ``sim0``. Ports on the same ``wire`` receive each other's
frames; ``loopback=1`` makes a port receive its own. The virtual clock (default) is
deterministic; ``clock=real`` stamps frames with CLOCK_REALTIME.

Like hardware, the NIC works asynchronously to the doorbells: a TX doorbell queues
its descriptors, and the NIC runs every queued doorbell (DMA read, wire, filters, DMA
write, events) the next time any VI of the process polls or waits — so an application
that rings one doorbell per frame still gets batch-speed processing.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import (Adapter, Capabilities, HwProtectionDomain, HwVI,
                                InterfaceInfo, U64Array)
from efvi.adapters.options import canonical, parse_options
from efvi.adapters.sim.filter_table import FilterEntry
from efvi.adapters.sim.port import FABRIC, SimPort
from efvi.adapters.sim.vi import SimVI
from efvi.errors import SetupError
from efvi.filters import FilterKind, FilterSpec

if TYPE_CHECKING:
    from efvi.adapters.base import RegisteredRegion

_REGION_ALIGN = 1 << 32


class SimPD(HwProtectionDomain):
    """DMA address space: region k lives at a 4 GiB-aligned base."""

    def __init__(self, port: SimPort) -> None:
        self.port = port
        self._bases: list[int] = []
        self._regions: list["RegisteredRegion"] = []
        self._next = _REGION_ALIGN
        self._entries: set[FilterEntry] = set()

    def register_memory(self, region: "RegisteredRegion") -> int:
        base = self._next
        self._next += ((region.nbytes + _REGION_ALIGN - 1) // _REGION_ALIGN + 1) * _REGION_ALIGN
        i = bisect.bisect(self._bases, base)
        self._bases.insert(i, base)
        self._regions.insert(i, region)
        return base

    def unregister_memory(self, region: "RegisteredRegion") -> None:
        for i, r in enumerate(self._regions):
            if r is region:
                del self._regions[i]
                del self._bases[i]
                return

    def resolve(self,
                addrs: U64Array) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]] | None:
        """(memory, offsets) when every address lies in one region, else None."""
        if not self._regions:
            return None
        if len(self._regions) == 1:
            r = self._regions[0]
            return r.buf, addrs.astype(np.int64) - self._bases[0]
        lo = int(addrs.min())
        i = bisect.bisect(self._bases, lo) - 1
        if i < 0:
            return None
        base, r = self._bases[i], self._regions[i]
        if int(addrs.max()) >= base + r.nbytes:
            return None
        return r.buf, addrs.astype(np.int64) - base

    def resolve_one(self, addr: int) -> tuple[npt.NDArray[np.uint8], int]:
        i = bisect.bisect(self._bases, addr) - 1
        return self._regions[i].buf, addr - self._bases[i]

    def resolve_mv(self, addr: int) -> tuple[memoryview, int]:
        """(memoryview of the region, offset) of one DMA address (cost: one bisect)."""
        if len(self._regions) == 1:
            return self._regions[0].mv, addr - self._bases[0]
        i = bisect.bisect(self._bases, addr) - 1
        return self._regions[i].mv, addr - self._bases[i]

    def read(self, addr: int, length: int) -> bytes:
        mem, off = self.resolve_one(addr)
        return mem[off:off + length].tobytes()

    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int, queue: int | None) -> HwVI:
        if queue is not None and queue < 0:
            raise SetupError(f"queue {queue} out of range", errno=errno.EINVAL)
        return SimVI(self, rxq, txq, evq, flags)

    def filter_add(self, spec: FilterSpec, targets: Sequence[HwVI]) -> object:
        entry = self.port.table.insert(spec, targets)
        self._entries.add(entry)
        return entry

    def filter_del(self, handle: object) -> None:
        assert isinstance(handle, FilterEntry)
        if handle in self._entries:
            self._entries.discard(handle)
            self.port.table.remove(handle)

    def close(self) -> None:
        for e in list(self._entries):
            self.filter_del(e)


class SimAdapter(Adapter):
    """See the module doc."""

    name = "sim"

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        super().__init__(iface or "sim0", queue, options)
        options = canonical("sim", parse_options("sim", options))  # SetupError naming the option
        self.port = FABRIC.port(self.iface, options)
        if "pcap" in options and self.port.feed is None:
            try:
                from efvi.adapters.sim.feed import CaptureFeed  # only for ?pcap= (start-up)

                self.port.feed = CaptureFeed(
                    self.port, options["pcap"], speed=int(options.get("speed", "1")),
                    loops=int(options.get("loop", "1")),
                    eof_event=int(options["eof_event"]) if "eof_event" in options else None)
            except BaseException:
                FABRIC.release(self.port)
                raise
        self.port.users += 1
        self._closed = False

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            adapter="sim", steal=True, sniff=True, zero_copy=True, rx_timestamps=True,
            tx_timestamps=True, hw_timestamps=False, pio=True, vi_sets=True,
            multi_region=True, rx_queues=1,
            filter_kinds=frozenset(k.name.lower() for k in FilterKind if k != FilterKind.NONE))

    def interface_info(self) -> InterfaceInfo:
        p = self.port
        return InterfaceInfo(name=p.name, ifindex=p.ifindex, mac=p.mac, ipv4=p.ipv4,
                             mtu=p.mtu, driver="efvi-sim")

    def resolve_neighbour(self, ip: str) -> bytes | None:
        for peer in self.port.peers():
            if ip in peer.ipv4:
                return peer.mac
        return None

    def alloc_pd(self) -> HwProtectionDomain:
        return SimPD(self.port)

    def now_ns(self) -> int:
        return self.port.clock.now_ns()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.port.users -= 1
        FABRIC.release(self.port)
