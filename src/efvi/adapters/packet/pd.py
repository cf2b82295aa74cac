"""The ``packet`` adapter's protection domain: registered memory (DMA address → buffer)
and the filters (one socket filter per VI, fanout groups for VI sets, promiscuous and
allmulti memberships held while a filter needs them)."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import HwProtectionDomain, HwVI
from efvi.adapters.packet import ring
from efvi.adapters.packet._common import _OFF_MASK, _REGION_SHIFT
from efvi.adapters.packet.vi import PacketVI
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterKind, FilterSpec

if TYPE_CHECKING:
    from efvi.adapters.packet.adapter import PacketAdapter
    from efvi.adapters.base import RegisteredRegion

_fanout_ids = itertools.count((os.getpid() * 7919) & 0xFFFF)


def _needs_promisc(spec: FilterSpec, own_mac: bytes) -> int:
    """0, PACKET_MR_PROMISC or PACKET_MR_ALLMULTI for ``spec``."""
    k = spec.kind
    if spec.promisc or k in (FilterKind.UNICAST_ALL, FilterKind.UNICAST_MISMATCH):
        return ring.PACKET_MR_PROMISC
    if k == FilterKind.ETH and not spec.mac[0] & 1 and spec.mac != own_mac:
        return ring.PACKET_MR_PROMISC
    if k in (FilterKind.MULTICAST_ALL, FilterKind.MULTICAST_MISMATCH):
        return ring.PACKET_MR_ALLMULTI
    return 0



class _FilterHandle:
    def __init__(self, spec: FilterSpec, targets: list["PacketVI"], mr_type: int) -> None:
        self.spec = spec
        self.targets = targets
        self.mr_type = mr_type
        self.live = True


class PacketPD(HwProtectionDomain):
    """A PD: registered regions at DMA bases ``(k + 1) << 40``."""

    def __init__(self, adapter: PacketAdapter) -> None:
        self.adapter = adapter
        self._regions: dict[int, "RegisteredRegion"] = {}
        self._next = 0

    def register_memory(self, region: "RegisteredRegion") -> int:
        k = self._next
        self._next += 1
        self._regions[k] = region
        return (k + 1) << _REGION_SHIFT

    def unregister_memory(self, region: "RegisteredRegion") -> None:
        for k, r in list(self._regions.items()):
            if r is region:
                del self._regions[k]

    def resolve(self, addr: int) -> tuple[npt.NDArray[np.uint8], int] | None:
        mr = self._regions.get((addr >> _REGION_SHIFT) - 1)
        return None if mr is None else (mr.buf, addr & _OFF_MASK)

    def alloc_vi(self, rxq: int, txq: int, evq: int, flags: int,
                 queue: int | None) -> "PacketVI":
        a = self.adapter
        with a._ns.enter():
            vi = PacketVI(self, rxq, txq, evq, queue, flags)
        a._vis.add(vi)
        return vi

    def filter_add(self, spec: FilterSpec, targets: Sequence[HwVI]) -> object:
        a = self.adapter
        if not spec.sniff_mode:  # the core checks this too
            raise UnsupportedError("the packet adapter only sniffs; use the xdp adapter "
                                   "to steal frames")
        vis = [t for t in targets if isinstance(t, PacketVI)]
        if len(vis) > 1:
            self._fanout(vis)
        mr_type = _needs_promisc(spec, a.mac)
        a._hold(mr_type, True)
        h = _FilterHandle(spec, vis, mr_type)
        a._handles.append(h)
        for v in vis:
            v.specs.append(spec)
        try:
            a._recompile(vis)
        except BaseException:
            self.filter_del(h)
            raise
        return h

    def filter_del(self, handle: object) -> None:
        assert isinstance(handle, _FilterHandle)
        if not handle.live:
            return
        handle.live = False
        a = self.adapter
        with contextlib.suppress(ValueError):
            a._handles.remove(handle)
        for v in handle.targets:
            with contextlib.suppress(ValueError):
                v.specs.remove(handle.spec)
        a._hold(handle.mr_type, False)
        a._recompile([v for v in handle.targets if not v.closed])

    def _fanout(self, vis: list["PacketVI"]) -> None:
        groups = {v.fanout for v in vis}
        if groups == {None}:
            for _ in range(64):
                gid = next(_fanout_ids) & 0xFFFF
                try:
                    for v in vis:
                        v.join_fanout(gid)
                    return
                except OSError:
                    continue  # id in use (or half-joined): try another one
            raise SetupError("cannot create a PACKET_FANOUT group", errno=errno.EBUSY,
                             hint="close other fanout users or retry")
        if len(groups) != 1 or None in groups:
            raise SetupError("these VIs are not one VI set", errno=errno.EINVAL,
                             hint="add set filters with VISet.filter_add")

    def close(self) -> None:
        self._regions.clear()
