"""The software NIC's filter table (sans-I/O: specs in, routing decisions out).

:meth:`FilterTable.decide` applies the hardware's rules to one classified frame
(:class:`efvi.wire.classify.FrameInfo`):

* steal filters are tried most specific first — 5-tuple, 3-tuple, MAC(+VLAN), then
  ethertype / IP protocol, then all-unicast / all-multicast, then the mismatch
  filters; within a level a VLAN-specific filter beats a VLAN-any one. The first level
  that matches takes the frame: one owner for a unicast destination, every holder of
  the identical filter for a multicast one (hardware replication);
* IP filters never match fragments;
* every matching sniff filter gets a copy whatever happened above;
* ``bpf`` filters (classic BPF programs, e.g. tcpdump expressions) are the last
  level: :meth:`FilterTable.bpf_matches` evaluates them over a whole batch
  (:func:`efvi.bpf.vector.run_batch`); a steal takes frames no table filter (nor an
  earlier bpf steal) took, a sniff copies every frame its program accepts;
* the kernel gets the frame if no steal filter took it and the port accepts it
  (our MAC, broadcast, or multicast) — otherwise it is a filter miss.

A decision lists *targets*; a target with several VIs is a VI set, whose member is
picked by :func:`flow_hash` (symmetric: both directions of a flow pick the same VI).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np
import numpy.typing as npt

from efvi.errors import FilterExistsError
from efvi.filters import FilterKind, FilterSpec
from efvi.wire.classify import FrameInfo

_BCAST = 0xFFFFFFFFFFFF
_ids = count(1)


@dataclass(eq=False)
class FilterEntry:
    """One installed filter: its spec and the VIs (one, or a VI set) it feeds."""

    spec: FilterSpec
    targets: tuple[Any, ...]
    entry_id: int = field(default_factory=lambda: next(_ids))


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one frame goes: stealing entries, sniffing entries, and the kernel."""

    steal: tuple[FilterEntry, ...]
    sniff: tuple[FilterEntry, ...]
    to_kernel: bool
    filter_miss: bool
    flow_hash: int


def flow_hash(info: FrameInfo) -> int:
    """A symmetric hash of the frame's flow (addresses and ports, order-free)."""
    if info.ip_version == 4:
        a, b = info.src_ip4.to_bytes(4, "big"), info.dst_ip4.to_bytes(4, "big")
    elif info.ip_version == 6:
        a, b = info.src_ip6, info.dst_ip6
    else:
        a, b = info.src_mac.to_bytes(6, "big"), info.dst_mac.to_bytes(6, "big")
    pa, pb = info.src_port.to_bytes(2, "big"), info.dst_port.to_bytes(2, "big")
    x, y = sorted((a + pa, b + pb))
    return zlib.crc32(x + y + bytes([info.proto]))


def _key(spec: FilterSpec) -> tuple[object, ...]:
    k = spec.kind
    if k == FilterKind.IP_FULL:
        return (k, spec.ip_version, spec.proto, spec.local_ip, spec.local_port,
                spec.remote_ip, spec.remote_port, spec.vlan_id)
    if k == FilterKind.IP_LOCAL:
        return (k, spec.ip_version, spec.proto, spec.local_ip, spec.local_port, spec.vlan_id)
    if k == FilterKind.ETH:
        return (k, int.from_bytes(spec.mac, "big"), spec.vlan_id, spec.ethertype, spec.ipproto)
    if k == FilterKind.ETHERTYPE:
        return (k, spec.ethertype, spec.vlan_id)
    if k == FilterKind.IPPROTO:
        return (k, spec.ipproto, spec.vlan_id)
    return (k, spec.vlan_id)


class FilterTable:
    """Steal and sniff tables of one port. ``version`` changes on every update."""

    def __init__(self) -> None:
        self._steal: dict[tuple[object, ...], list[FilterEntry]] = {}
        self._sniff: dict[tuple[object, ...], list[FilterEntry]] = {}
        self._sniff_all: list[FilterEntry] = []
        self._bpf: list[FilterEntry] = []  # steal and sniff, in insertion order
        self.version = 0

    def __len__(self) -> int:
        return (sum(map(len, self._steal.values())) + sum(map(len, self._sniff.values()))
                + len(self._sniff_all) + len(self._bpf))

    @property
    def has_bpf(self) -> bool:
        """True when bpf filters are installed (the port then routes per frame)."""
        return bool(self._bpf)

    def insert(self, spec: FilterSpec, targets: Sequence[Any]) -> FilterEntry:
        """Install ``spec`` for ``targets``; FilterExistsError for a duplicate unicast steal."""
        entry = FilterEntry(spec, tuple(targets))
        if spec.kind == FilterKind.BPF:
            for h in self._bpf:
                if h.spec.program != spec.program:
                    continue
                if not spec.sniff_mode and not h.spec.sniff_mode:
                    raise FilterExistsError(f"an identical bpf filter ({spec}) is already "
                                            "installed on this port")
                if set(h.targets) & set(entry.targets) and h.spec == spec:
                    raise FilterExistsError(f"this VI already holds filter {spec}")
            self._bpf.append(entry)
        elif spec.kind == FilterKind.ALL:
            self._sniff_all.append(entry)
        else:
            key = _key(spec)
            table = self._sniff if spec.sniff_mode else self._steal
            holders = table.setdefault(key, [])
            if holders and not spec.sniff_mode and not spec.is_multicast:
                raise FilterExistsError(f"an identical filter ({spec}) is already installed "
                                        "on this port")
            if any(set(h.targets) & set(entry.targets) for h in holders):
                raise FilterExistsError(f"this VI already holds filter {spec}")
            holders.append(entry)
        self.version += 1
        return entry

    def remove(self, entry: FilterEntry) -> None:
        if entry.spec.kind == FilterKind.BPF:
            self._bpf.remove(entry)
        elif entry.spec.kind == FilterKind.ALL:
            self._sniff_all.remove(entry)
        else:
            table = self._sniff if entry.spec.sniff_mode else self._steal
            key = _key(entry.spec)
            holders = table.get(key, [])
            holders.remove(entry)
            if not holders:
                del table[key]
        self.version += 1

    # ---- routing ------------------------------------------------------------------
    def _candidates(self, info: FrameInfo, port_wants: bool) -> list[list[tuple[object, ...]]]:
        """Lookup keys per priority level, VLAN-specific before VLAN-any."""
        vlan = info.vlan_outer if info.vlan_outer >= 0 else None
        vids: tuple[int | None, ...] = (vlan, None) if vlan is not None else (None,)
        levels: list[list[tuple[object, ...]]] = []
        is_ip_l4 = (info.ip_version in (4, 6) and info.proto in (6, 17)
                    and not info.is_fragment and info.l4_offset >= 0)
        if is_ip_l4:
            if info.ip_version == 4:
                dst, src = info.dst_ip4.to_bytes(4, "big"), info.src_ip4.to_bytes(4, "big")
            else:
                dst, src = info.dst_ip6, info.src_ip6
            levels.append([(FilterKind.IP_FULL, info.ip_version, info.proto, dst, info.dst_port,
                            src, info.src_port, v) for v in vids])
            levels.append([(FilterKind.IP_LOCAL, info.ip_version, info.proto, dst,
                            info.dst_port, v) for v in vids])
        ipproto = info.proto if info.ip_version in (4, 6) else None
        eth: list[tuple[object, ...]] = []
        for v in vids:
            eth.append((FilterKind.ETH, info.dst_mac, v, info.ethertype, None))
            if ipproto is not None:
                eth.append((FilterKind.ETH, info.dst_mac, v, None, ipproto))
            eth.append((FilterKind.ETH, info.dst_mac, v, None, None))
        levels.append(eth)
        cls: list[tuple[object, ...]] = [(FilterKind.ETHERTYPE, info.ethertype, v) for v in vids]
        if ipproto is not None:
            cls += [(FilterKind.IPPROTO, ipproto, v) for v in vids]
        levels.append(cls)
        multicast = bool(info.dst_mac >> 40 & 1)
        all_kind = FilterKind.MULTICAST_ALL if multicast else FilterKind.UNICAST_ALL
        levels.append([(all_kind, v) for v in vids])
        if not port_wants:
            mis = FilterKind.MULTICAST_MISMATCH if multicast else FilterKind.UNICAST_MISMATCH
            levels.append([(mis, v) for v in vids])
        return levels

    def decide(self, info: FrameInfo, port_mac: int, kernel_groups: frozenset[int] = frozenset()
               ) -> Decision:
        """Route one frame (cost: a handful of dict probes)."""
        dst = info.dst_mac
        multicast = bool(dst >> 40 & 1)
        port_wants = dst == port_mac or dst == _BCAST or (multicast and dst in kernel_groups)
        steal: tuple[FilterEntry, ...] = ()
        sniff: list[FilterEntry] = []
        levels = self._candidates(info, port_wants) if (self._steal or self._sniff) else []
        for keys in levels:
            if not steal:
                for k in keys:
                    holders = self._steal.get(k)
                    if holders:
                        steal = tuple(holders) if multicast else (holders[0],)
                        break
            for k in keys:
                got = self._sniff.get(k)
                if got:
                    sniff.extend(got)
        for e in self._sniff_all:
            if e.spec.promisc or port_wants:
                sniff.append(e)
        return Decision(steal, tuple(sniff), not steal and port_wants,
                        not steal and not port_wants, flow_hash(info))

    def bpf_matches(self, mem: npt.NDArray[np.uint8], offs: npt.NDArray[np.int64],
                    lens: npt.NDArray[np.int64], taken: npt.NDArray[np.bool_]
                    ) -> list[tuple[FilterEntry, npt.NDArray[np.bool_]]]:
        """Which frames of a batch each bpf filter gets (cost: one numpy walk per program).

        ``taken`` marks frames a table steal filter already took; it is updated with
        the frames bpf steal filters take. Returns (entry, frame mask) per filter.
        """
        out: list[tuple[FilterEntry, npt.NDArray[np.bool_]]] = []
        for e in self._bpf:
            from efvi.bpf.vector import run_batch  # only for program filters (start-up)

            hit = run_batch(e.spec.program, mem, offs, lens) != 0
            if not e.spec.sniff_mode:
                hit &= ~taken
                taken |= hit
            out.append((e, hit))
        return out
