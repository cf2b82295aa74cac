"""Driver handle and protection domain (``ef_driver_open``, ``ef_pd_alloc``).

Control path only: everything here may allocate and raise.
"""

from __future__ import annotations

import bisect
import errno
import weakref
from typing import TYPE_CHECKING

from efvi.adapters import open_adapter
from efvi.adapters.base import Adapter, Capabilities, HwProtectionDomain, InterfaceInfo
from efvi.errors import ClosedError, SetupError, UnsupportedError

if TYPE_CHECKING:
    from efvi.memory import MemoryRegion
    from efvi.vi import VirtualInterface


class Driver:
    """An opened adapter: ``Driver.open("sim")``, ``"xdp:eth0"``, ``"packet:lo"``.

    URL forms: ``sim[:PORT][?wire=NAME|@NAME&loopback=1&clock=virtual|real&mac=..&ip=..&mtu=..]``,
    ``xdp:IFNAME[@QUEUE][?mode=auto|drv|skb&zerocopy=0|1&force=1&ts=auto|sw|hw]``,
    ``packet:IFNAME[?ring=N&snaplen=N&ts=auto|sw|hw&qdisc=0|1]`` (see each adapter's
    module doc).
    """

    def __init__(self, adapter: Adapter, url: str) -> None:
        self.adapter = adapter
        self.url = url
        self._closed = False
        self._pds: "weakref.WeakSet[ProtectionDomain]" = weakref.WeakSet()

    @classmethod
    def open(cls, url: str = "sim") -> "Driver":
        return cls(open_adapter(url), url)

    @property
    def capabilities(self) -> Capabilities:
        return self.adapter.capabilities

    @property
    def interface(self) -> InterfaceInfo:
        return self.adapter.interface_info()

    def now_ns(self) -> int:
        """The adapter's clock, int ns (the clock RX timestamps use)."""
        return self.adapter.now_ns()

    def link_state(self) -> str:
        """``up`` | ``no-carrier`` | ``down`` | ``gone``: whether the interface can still
        carry frames (control path, a few µs: for a periodic check, not per packet)."""
        self._check_open()
        return self.adapter.link_state()

    def require(self, capability: str, *, who_has: str) -> None:
        """Raise UnsupportedError unless the adapter has ``capability``."""
        if not getattr(self.capabilities, capability):
            raise UnsupportedError(
                f"the {self.adapter.name} adapter has no {capability.replace('_', ' ')}; "
                f"use the {who_has} adapter")

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"driver {self.url!r} is closed")

    def close(self) -> None:
        """Close every PD (and so every VI and region) and the adapter. Idempotent."""
        if self._closed:
            return
        for pd in list(self._pds):
            pd.close()
        self._closed = True
        self.adapter.close()

    def __enter__(self) -> "Driver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Driver({self.url!r}, {'closed' if self._closed else 'open'})"


class ProtectionDomain:
    """A DMA address space on ``driver``; VIs and memory regions live in one."""

    def __init__(self, driver: Driver) -> None:
        driver._check_open()
        self.driver = driver
        self._hw: HwProtectionDomain = driver.adapter.alloc_pd()
        self._closed = False
        self._regions: list[tuple[int, int, "MemoryRegion"]] = []  # (base, end, mr) sorted
        self._bases: list[int] = []
        self._vis: "weakref.WeakSet[VirtualInterface]" = weakref.WeakSet()
        driver._pds.add(self)
        # the one-region fast path used by per-packet address checks
        self._lo = 0
        self._hi = 0

    # ---- memory --------------------------------------------------------------------
    def _register(self, mr: "MemoryRegion") -> int:
        self._check_open()
        if self._regions and not self.driver.capabilities.multi_region:
            raise UnsupportedError(
                f"the {self.driver.adapter.name} adapter takes one memory region per "
                "protection domain; register one larger region (or use the sim adapter)")
        base = self._hw.register_memory(mr)
        i = bisect.bisect(self._bases, base)
        self._bases.insert(i, base)
        self._regions.insert(i, (base, base + mr.nbytes, mr))
        self._refresh_fast()
        return base

    def _unregister(self, mr: "MemoryRegion") -> None:
        for i, (_, _, r) in enumerate(self._regions):
            if r is mr:
                del self._regions[i]
                del self._bases[i]
                break
        self._refresh_fast()
        if not self._closed:
            self._hw.unregister_memory(mr)

    def _refresh_fast(self) -> None:
        if len(self._regions) == 1:
            self._lo, self._hi = self._regions[0][0], self._regions[0][1]
        else:
            self._lo = self._hi = 0

    def _add_range(self, base: int, nbytes: int) -> None:
        """Register an adapter-owned DMA range (a PIO area) for address checks."""
        i = bisect.bisect(self._bases, base)
        self._bases.insert(i, base)
        self._regions.insert(i, (base, base + nbytes, None))  # type: ignore[arg-type]
        self._refresh_fast()

    def region_of(self, dma_addr: int) -> "MemoryRegion | None":
        """The region holding ``dma_addr`` (cost: a bisect)."""
        i = bisect.bisect(self._bases, dma_addr) - 1
        if i >= 0:
            base, end, mr = self._regions[i]
            if dma_addr < end:
                return mr
        return None

    def dma_ok(self, dma_addr: int, length: int) -> bool:
        """True if ``[dma_addr, dma_addr+length)`` lies in one registered region."""
        if self._lo <= dma_addr and dma_addr + length <= self._hi:
            return True
        i = bisect.bisect(self._bases, dma_addr) - 1
        return i >= 0 and dma_addr + length <= self._regions[i][1]

    @property
    def regions(self) -> list["MemoryRegion"]:
        return [r for _, _, r in self._regions if r is not None]

    # ---- lifecycle ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("protection domain is closed")
        self.driver._check_open()

    def close(self) -> None:
        """Close every VI, then every region, then the PD (ef_vi's free order)."""
        if self._closed:
            return
        for vi in list(self._vis):
            vi.close()
        for _, _, mr in list(self._regions):
            if mr is not None:
                mr.close()
        self._closed = True
        self._hw.close()

    def __enter__(self) -> "ProtectionDomain":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def round_ring(size: int, default: int, what: str, maximum: int) -> int:
    """ef_vi ring sizing: -1 = default, 0 = none, else round up to a power of two."""
    if size == -1:
        size = default
    if not isinstance(size, int) or size < 0:
        raise SetupError(f"{what} size {size!r} is invalid", errno=errno.EINVAL,
                         hint="pass -1 for the default, 0 for none, or a positive size")
    if size == 0:
        return 0
    if size > maximum:
        raise SetupError(f"{what} size {size} is larger than the maximum {maximum}",
                         errno=errno.EINVAL, hint=f"ask for at most {maximum}")
    n = 2
    while n < size:
        n <<= 1
    return n
