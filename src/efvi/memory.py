"""Registered packet memory (``ef_memreg``).

A :class:`MemoryRegion` is a page-aligned anonymous mapping, a multiple of the
2048-byte packet buffer, backed by huge pages where the kernel allows
(``MADV_HUGEPAGE``), locked in RAM (``mlock``; required by adapters that DMA into
it, best effort on ``sim``), excluded from fork copies (``MADV_DONTFORK``) and
registered with one protection domain. Every VI of that PD can post its buffers.

As in ef_vi, where the same memory may be given to ``ef_memreg_alloc`` once per PD,
:meth:`MemoryRegion.share` registers a region's memory with another PD (of another
interface of the same adapter kind) and returns that PD's ``ef_memreg``: a second
:class:`MemoryRegion` over the *same bytes* with its own DMA addresses. A frame
received into buffer ``k`` by a VI of the first PD can be transmitted from buffer
``k`` by a VI of the second without a copy (``efvi forward``). Translate with
``other.dma_base + (addr - self.dma_base)``. The mapping stays alive until every
region sharing it is closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.constants import PKT_BUF_SIZE
from efvi.errors import ClosedError, SetupError, UnsupportedError

if TYPE_CHECKING:
    from efvi.adapters.base import HwProtectionDomain
    from efvi.driver import ProtectionDomain

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_MAX_REGION = 1 << 36  # 64 GiB: anything larger is a typo


def _lock(buf: mmap.mmap, nbytes: int) -> int:
    """mlock the mapping; return 0 or errno."""
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if _libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes)) != 0:
        return ctypes.get_errno()
    return 0


def _sealed_memfd(nbytes: int) -> int:
    """A memfd of ``nbytes`` that can no longer shrink or grow (so a process it is
    shared with never finds pages gone from under its mapping)."""
    fd = os.memfd_create("efvi-region", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, nbytes)
        import fcntl
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except OSError as exc:
        os.close(fd)
        raise SetupError(f"cannot create {nbytes} bytes of shareable packet memory",
                         errno=exc.errno or errno.ENOMEM,
                         hint="check free memory and the memfd limits") from None
    return fd


class MemoryRegion:
    """``nbytes`` of registered memory in ``pd`` (control path: allocates, may raise).

    ``buf`` is a numpy ``uint8`` view of the whole region and ``mv`` a memoryview;
    ``dma_addr(offset)`` gives the address to post. ``dma_addrs()`` returns the DMA
    address of every 2 KiB buffer (for batch posting).
    """

    def __init__(self, pd: "ProtectionDomain", nbytes: int) -> None:
        if not isinstance(nbytes, int) or nbytes <= 0 or nbytes % PKT_BUF_SIZE:
            raise SetupError(
                f"memory region size {nbytes!r} is not a positive multiple of {PKT_BUF_SIZE}",
                errno=errno.EINVAL, hint=f"round up to n * {PKT_BUF_SIZE} bytes")
        if nbytes > _MAX_REGION:
            raise SetupError(f"memory region of {nbytes} bytes is absurdly large",
                             errno=errno.ENOMEM, hint="register at most 64 GiB")
        pd._check_open()
        self.pd = pd
        self.nbytes = nbytes
        headroom = pd.driver.adapter.region_headroom
        if headroom % 4096:
            raise SetupError(f"adapter headroom {headroom} is not page aligned",
                             errno=errno.EINVAL)
        self.headroom = headroom
        # private anonymous memory can be backed by transparent huge pages (far fewer
        # TLB misses when frames are spread over thousands of buffers); DONTFORK keeps a
        # child's copy-on-write from moving pages under the NIC (ef_vi's advice)
        #: a sealed memfd backing the mapping when the adapter shares the memory with
        #: another process (efvid); None for private anonymous memory
        self.memfd: int | None = None
        if pd.driver.adapter.shared_memory:
            self.memfd = _sealed_memfd(headroom + nbytes)
            self._map = mmap.mmap(self.memfd, headroom + nbytes, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            self._map = mmap.mmap(-1, headroom + nbytes,
                                  flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        for advice in ("MADV_HUGEPAGE", "MADV_DONTFORK"):
            if hasattr(mmap, advice):
                try:
                    self._map.madvise(getattr(mmap, advice))
                except OSError:
                    pass
        err = _lock(self._map, headroom + nbytes)
        self.locked = err == 0
        if err and pd.driver.adapter.requires_locked_memory:
            self._map.close()
            raise SetupError(
                f"cannot lock {nbytes} bytes of packet memory", errno=err,
                hint="needs CAP_IPC_LOCK (run as root) or a larger RLIMIT_MEMLOCK (ulimit -l)")
        #: the region whose memory this one shares (None: it owns its mapping)
        self.origin: MemoryRegion | None = None
        self._users = [1]  # regions alive over the mapping (shared by every sharer)
        self._attach(pd)

    def _attach(self, pd: "ProtectionDomain") -> None:
        self.buf: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8,
                                                        offset=self.headroom)
        self._whole = memoryview(self._map)
        self.mv = self._whole[self.headroom:]
        self.dma_base = 0
        self._closed = False
        try:
            self.dma_base = pd._register(self)
        except BaseException:
            self._release()
            raise

    def share(self, pd: "ProtectionDomain") -> "MemoryRegion":
        """Register this region's memory with ``pd`` too (ef_vi: ``ef_memreg_alloc`` of
        the same memory in a second PD); return ``pd``'s region over the same bytes.

        Control path. ``pd`` must belong to a driver of the same adapter kind (the
        memory is DMA-mapped for both: on ``xdp`` the two PDs' sockets bind one UMEM
        with ``XDP_SHARED_UMEM``, across interfaces; on ``sim`` and ``packet`` both PDs
        address the same bytes). Raises UnsupportedError for another adapter kind.
        """
        self._check_open()
        pd._check_open()
        if pd is self.pd or any(r._map is self._map for r in pd.regions):
            raise SetupError("this memory is already registered with that protection domain",
                             errno=errno.EEXIST, hint="use the region you already have")
        mine, theirs = self.pd.driver.adapter, pd.driver.adapter
        if mine.name != theirs.name:
            raise UnsupportedError(
                f"cannot register {mine.name} memory with a {theirs.name} protection domain: "
                "both must be opened with the same adapter (two xdp: or two sim: URLs)")
        if theirs.region_headroom > self.headroom:
            raise UnsupportedError(f"the {theirs.name} adapter needs {theirs.region_headroom} "
                                   f"bytes below the region; this one has {self.headroom}")
        mr = object.__new__(MemoryRegion)
        mr.pd, mr.nbytes, mr.headroom = pd, self.nbytes, self.headroom
        mr._map, mr.locked = self._map, self.locked
        mr.memfd = None  # the origin owns the descriptor
        mr.origin = self.origin or self
        mr._users = self._users
        self._users[0] += 1
        mr._attach(pd)
        return mr

    @property
    def n_buffers(self) -> int:
        return self.nbytes // PKT_BUF_SIZE

    @property
    def address(self) -> int:
        """Virtual address of the first byte (for kernel interfaces)."""
        return ctypes.addressof(ctypes.c_char.from_buffer(self._map)) + self.headroom

    @property
    def origin_pd(self) -> "HwProtectionDomain | None":
        """The adapter PD of the region this one shares memory with (None: it owns its
        mapping); adapters see it through :class:`efvi.adapters.base.RegisteredRegion`."""
        return self.origin.pd._hw if self.origin is not None else None

    @property
    def headroom_address(self) -> int:
        """Address of the adapter's headroom just below the region (0 if none)."""
        if not self.headroom:
            return 0
        return ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    def dma_addr(self, offset: int) -> int:
        """DMA address of ``offset`` (cost: one add; raises only for out-of-range)."""
        if not 0 <= offset < self.nbytes:
            raise SetupError(f"offset {offset} outside the {self.nbytes}-byte region",
                             errno=errno.EINVAL)
        return self.dma_base + offset

    def dma_addrs(self, offset: int = 0) -> npt.NDArray[np.uint64]:
        """DMA address of every 2 KiB buffer, plus ``offset`` (uint64 array)."""
        return (np.arange(self.n_buffers, dtype=np.uint64) * PKT_BUF_SIZE
                + np.uint64(self.dma_base + offset))

    def offset_of(self, dma_addr: int) -> int:
        """Inverse of :meth:`dma_addr`."""
        off = dma_addr - self.dma_base
        if not 0 <= off < self.nbytes:
            raise SetupError(f"DMA address {dma_addr:#x} is not in this region",
                             errno=errno.EFAULT)
        return off

    def buffer(self, index: int) -> memoryview:
        """The ``index``-th 2 KiB packet buffer."""
        return self.mv[index * PKT_BUF_SIZE:(index + 1) * PKT_BUF_SIZE]

    def read(self, dma_addr: int, length: int) -> bytes:
        """Copy ``length`` bytes at ``dma_addr`` out (convenience; cost: one copy)."""
        off = dma_addr - self.dma_base
        return bytes(self.mv[off:off + length])

    def _release(self) -> None:
        self.mv.release()
        self._whole.release()
        del self.buf
        self._users[0] -= 1
        if self._users[0] > 0:
            return  # another PD's region still uses the mapping
        try:
            self._map.close()
        except BufferError:  # a view is still exported; the GC will unmap it
            pass
        fd = getattr(self, "memfd", None)
        if fd is not None:
            os.close(fd)
            self.memfd = None

    def close(self) -> None:
        """Unregister and unmap (idempotent). No VI may still own its buffers."""
        if self._closed:
            return
        self._closed = True
        self.pd._unregister(self)
        self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("memory region is closed")

    def __enter__(self) -> "MemoryRegion":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MemoryRegion({self.nbytes} bytes, dma {self.dma_base:#x}, "
                f"{'locked' if self.locked else 'unlocked'})")


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")
