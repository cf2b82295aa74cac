"""The ``xdp`` adapter's protection domain: the UMEM (the registered region plus the
PIO/bounce reserve below it), VI allocation, and filters as entries of the interface
program's BPF hash table (see :mod:`efvi.adapters.xdp.adapter` for the model)."""

from __future__ import annotations

import ctypes
import errno as _errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from efvi.adapters.base import HwProtectionDomain, HwVI
from efvi.adapters.xdp._common import (MAX_RX_FRAME, PIO_RESERVE, RESERVE)
from efvi.adapters.xdp.program import TableKind, presence_bit, spec_key
from efvi.adapters.xdp.vi import XdpVI
from efvi.adapters.xdp.xsk import CHUNK_SIZE, XskSocket
from efvi.errors import FilterExistsError, SetupError, UnsupportedError
from efvi.filters import FilterKind, FilterSpec

if TYPE_CHECKING:
    from efvi.adapters.xdp.adapter import XdpAdapter
    from efvi.adapters.base import RegisteredRegion


class XdpPD(HwProtectionDomain):
    """A PD: one UMEM (the registered region plus the PIO area below it)."""

    def __init__(self, adapter: XdpAdapter) -> None:
        self.adapter = adapter
        self.umem_addr = 0
        self.umem_len = 0
        self.dma_base = 0
        self.umem: np.ndarray | None = None
        self._reserve = 0  # address of the PIO area (0: none)
        self._pio_next = 0
        self._pio_dma = 0
        self._bounce_next = PIO_RESERVE  # next free bounce frame (offset in the reserve)
        self.sockets: list[XskSocket] = []
        self.vis: set[XdpVI] = set()
        self._closed = False
        #: the PDs whose sockets bind one UMEM (this one plus those a region was shared
        #: with, on any interface): a socket joins the UMEM of any of them
        self.umem_group: list[XdpPD] = [self]
        self.umem_id = 0  # the broker's id of this PD's UMEM (efvid mode)

    # ---- memory --------------------------------------------------------------------
    def register_memory(self, region: "RegisteredRegion") -> int:
        origin = region.origin_pd
        if isinstance(origin, XdpPD) and origin.umem_len:
            # the same memory registered in another xdp PD (MemoryRegion.share): this
            # PD's sockets bind the origin's UMEM with XDP_SHARED_UMEM, so UMEM offsets
            # (DMA addresses) are the same in both PDs; the PIO/bounce reserve stays the
            # origin's (this PD has none)
            self.umem_addr, self.umem_len, self.dma_base = (origin.umem_addr, origin.umem_len,
                                                            origin.dma_base)
            self.umem = origin.umem
            self.umem_group = origin.umem_group
            self.umem_group.append(self)
            return self.dma_base
        addr, n = region.address, region.nbytes
        # the PIO and bounce area must be virtually contiguous with the region (one
        # UMEM): the core maps it right below the region (Adapter.region_headroom)
        self.umem_addr, self.umem_len, self.dma_base = addr, n, 0
        if region.headroom >= RESERVE:
            self._reserve = addr - RESERVE
            self.umem_addr, self.dma_base = self._reserve, RESERVE
            self._pio_dma = 0
            self.umem_len = n + RESERVE
        broker = self.adapter.broker
        if broker is not None:
            self.umem_id = broker.register_umem(region, self.umem_addr, self.umem_len)
        buf = (ctypes.c_char * self.umem_len).from_address(self.umem_addr)
        self.umem = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
        return self.dma_base

    def unregister_memory(self, region: "RegisteredRegion") -> None:
        self._unmap()

    def _unmap(self) -> None:
        if self in self.umem_group and len(self.umem_group) > 1:
            self.umem_group.remove(self)
            self.umem_group = [self]
        self.umem = None
        self._reserve = 0  # the region owns (and unmaps) its headroom
        self.umem_len = 0

    def pio_area(self, nbytes: int) -> tuple[memoryview, int] | None:
        """A PIO area of the UMEM's reserved 64 KiB (16 VIs' worth of 4 KiB areas)."""
        if not self.umem_len:
            raise UnsupportedError("xdp PIO areas live in the UMEM: register the PD's "
                                   "memory region before using vi.pio")
        if not self._reserve:
            raise UnsupportedError("xdp: no address space next to the memory region for "
                                   "the PIO area; stage frames in the region and transmit "
                                   "them instead")
        if self._pio_next + nbytes > PIO_RESERVE:
            raise UnsupportedError(f"xdp: the PD's {PIO_RESERVE // 1024} KiB of PIO space "
                                   "is used up; allocate VIs that need PIO in another PD")
        off = self._pio_next
        self._pio_next += (nbytes + 63) & ~63
        arr = (ctypes.c_char * nbytes).from_address(self._reserve + off)
        return memoryview(arr).cast("B"), self._pio_dma + off

    def bounce_frames(self, n: int) -> list[int]:
        """Up to ``n`` bounce frames (UMEM/DMA addresses of 2048 bytes) for one VI's
        gathered TX; fewer (or none) when the reserve is used up or absent."""
        if not self._reserve or self.umem_len == 0:
            return []
        out: list[int] = []
        while len(out) < n and self._bounce_next + CHUNK_SIZE <= RESERVE:
            out.append(self._pio_dma + self._bounce_next)
            self._bounce_next += CHUNK_SIZE
        return out

    def shared_fd(self) -> int | None:
        """A live socket of this PD's UMEM (its own first, then a sharing PD's), whose
        fd a new socket passes with ``XDP_SHARED_UMEM``; None: register the UMEM."""
        for pd in sorted(self.umem_group, key=lambda p: p is not self):
            for s in pd.sockets:
                if s.sock.fileno() >= 0:
                    return s.fd
        return None

    # ---- VIs ---------------------------------------------------------------------------
    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int,
                 queue: int | None) -> HwVI:
        a = self.adapter
        if a.mtu + 22 > MAX_RX_FRAME and not a.sg_ok:
            raise SetupError(
                f"{a.iface} has MTU {a.mtu}: its frames do not fit a {CHUNK_SIZE}-byte "
                f"AF_XDP buffer ({MAX_RX_FRAME} bytes after the kernel's headroom) and its "
                "driver reports no rx-sg (multi-buffer XDP)",
                errno=_errno.EMSGSIZE, hint=f"run: ip link set {a.iface} mtu 1500")
        if queue is None:
            queues = [a.queue] if a.queue is not None else list(range(a.nqueues))
        else:
            if a.queue is not None and queue != a.queue:
                raise SetupError(f"this driver is bound to queue {a.queue} "
                                 f"(xdp:{a.iface}@{a.queue}); cannot use queue {queue}",
                                 errno=_errno.EINVAL, hint=f"open xdp:{a.iface} instead")
            if queue >= a.nqueues:
                raise SetupError(f"{a.iface} has {a.nqueues} RX queue(s); no queue {queue}",
                                 errno=_errno.EINVAL,
                                 hint=f"a VI set on {a.iface} has at most {a.nqueues} VIs")
            queues = [queue]
        vi = XdpVI(self, rxq, txq, evq, queues)
        self.vis.add(vi)
        return vi

    # ---- filters -----------------------------------------------------------------------
    def filter_add(self, spec: FilterSpec, targets: Sequence[HwVI]) -> object:
        prog = self.adapter.program
        vis = [t for t in targets if isinstance(t, XdpVI)]
        if spec.kind == FilterKind.BPF:
            return self._bpf_add(spec, vis)
        kind, key = spec_key(spec)
        existing = prog.filters.get(key)
        if existing is not None:
            if spec.is_multicast and existing[0] not in {v.target for v in vis}:
                raise UnsupportedError(
                    f"the xdp adapter cannot replicate multicast filter {spec} to several "
                    "VIs: XDP redirects each frame to one AF_XDP socket and another VI "
                    "holds it; receive the group on one VI, or use the sim adapter")
            raise FilterExistsError(f"filter {spec} is already installed on "
                                    f"{self.adapter.iface}")
        group = None
        if len(vis) == 1:
            target = vis[0].target
        else:
            group = prog.alloc_target()
            target = group
        try:
            for v in vis:
                if group is not None:
                    v.join_group(group)
                v.ensure_sockets()
            if kind in (TableKind.UCAST_MIS, TableKind.MCAST_MIS):
                prog.refresh_kernel_macs(self.adapter.mac)
            bit = presence_bit(kind, spec.vlan_id is None)
            prog.insert(key, bit, target, spec.is_multicast, spec=spec)
        except BaseException:
            if group is not None:
                for v in vis:
                    v.leave_group(group)
                prog.free_target(group)
            raise
        return (key, bit, group, tuple(vis))

    def _bpf_add(self, spec: FilterSpec, vis: list[XdpVI]) -> object:
        """A classic BPF filter: translated into the interface program (a reload)."""
        prog = self.adapter.program  # (sniff specs never get here: the core refuses them)
        if any(p == spec.program for p, _ in prog.bpf_filters.values()):
            raise FilterExistsError(f"filter {spec} is already installed on "
                                    f"{self.adapter.iface}")
        group = None
        if len(vis) == 1:
            target = vis[0].target
        else:
            group = prog.alloc_target()
            target = group
        try:
            for v in vis:
                if group is not None:
                    v.join_group(group)
                v.ensure_sockets()
            token = prog.add_bpf(spec.program, target)
        except BaseException:
            if group is not None:
                for v in vis:
                    v.leave_group(group)
                prog.free_target(group)
            raise
        return ("bpf", token, group, tuple(vis))

    def filter_del(self, handle: object) -> None:
        prog = self.adapter.program
        if isinstance(handle, tuple) and handle[0] == "bpf":
            _, token, group, vis = cast("tuple[str, int, int | None, tuple[XdpVI, ...]]",
                                        handle)
            prog.remove_bpf(token)
        else:
            key, bit, group, vis = cast("tuple[bytes, int, int | None, tuple[XdpVI, ...]]",
                                        handle)
            prog.remove(key, bit)
        if group is not None:
            for v in vis:
                v.leave_group(group)
            prog.free_target(group)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for vi in list(self.vis):
            vi.close()
        self._unmap()

