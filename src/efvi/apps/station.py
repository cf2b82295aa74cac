"""A user-space end-station (``efvi station``): ARP, ICMP echo, NDP and UDP echo for
one address the kernel does not own.

Two layers, as everywhere in efvi:

* :class:`Station` (:mod:`efvi.apps.station_responder`) is sans-I/O:
  :meth:`Station.handle` takes one received frame and the time in int ns and returns
  the reply frame (or ``None``), counting what it saw by protocol. It parses with
  :mod:`efvi.wire` codecs and builds replies with correct checksums; it never raises
  for a frame (malformed input is counted). Replies are rate limited per protocol
  class by token buckets (:class:`TokenBucket`), so a peer that floods ARP or ICMP
  gets at most ``rate_pps`` answers a second per class and the rest are counted as
  ``*_rate_drops``.
* :class:`StationRunner` (this module) opens a driver URL, refuses an address the
  kernel already owns on that interface (naming it), installs the filters
  (:func:`station_filters`), sends a gratuitous ARP (and an unsolicited neighbour
  advertisement for IPv6), and runs the RX → :meth:`Station.handle` → TX loop until
  stopped, returning every counter.

ARP conflicts — an ARP (or a neighbour advertisement) from another MAC claiming the
station's address — are counted and the claimants listed (``conflicts``); the
station keeps answering, as a host defending its address does (RFC 5227 §2.4 (c)).
"""

from __future__ import annotations

import errno
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from efvi import (
    Driver,
    Event,
    EventType,
    FilterSpec,
    MemoryRegion,
    ProtectionDomain,
    VirtualInterface,
)
from efvi.apps.station_responder import (
    COUNTERS,
    Station,
    StationConfig,
    TokenBucket,
    solicited_node,
)
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.wire.constants import ETH_P_ARP, IPPROTO_ICMP, IPPROTO_ICMPV6

__all__ = ["COUNTERS", "Station", "StationConfig", "StationRunner", "StationStats",
           "TokenBucket", "solicited_node", "station_filters"]


# ---- filters ------------------------------------------------------------------------------
def station_filters(cfg: StationConfig, adapter: str, sniff: bool, steal: bool,
                    kinds: frozenset[str] = frozenset()) -> list[FilterSpec]:
    """The filters a station on an adapter needs.

    With the ``bpf`` filter kind (every adapter today) the station asks for exactly its
    address's control frames (:meth:`FilterSpec.arp`, :meth:`FilterSpec.icmp_echo`,
    :meth:`FilterSpec.icmp6_echo_nd`) plus its UDP echo ports: it steals them where the
    adapter steals (``xdp``, ``sim``) and the kernel keeps every other ARP, ICMP and ND
    frame, so it still answers for its own addresses; on ``packet`` they are sniffed.
    Without it, a sniffing adapter falls back to class filters (every ARP, ICMP and
    ICMPv6 frame, copied: the kernel keeps its copy), and a stealing adapter on a real
    interface is refused (it would take the kernel's ARP and ICMP too).
    """
    mode: Callable[[FilterSpec], FilterSpec]
    if not steal and sniff:
        def mode(s: FilterSpec) -> FilterSpec:
            return s.sniff()
    else:
        def mode(s: FilterSpec) -> FilterSpec:
            return s
    specs: list[FilterSpec] = []
    if "bpf" in kinds:
        if cfg.ipv4 is not None:
            specs += [FilterSpec.arp(cfg.ipv4), FilterSpec.icmp_echo(cfg.ipv4)]
        if cfg.ipv6 is not None:
            specs.append(FilterSpec.icmp6_echo_nd(cfg.ipv6))
    elif sniff or adapter == "sim":
        if sniff:
            def mode(s: FilterSpec) -> FilterSpec:
                return s.sniff()
        if cfg.ipv4 is not None:
            specs += [FilterSpec.eth_type(ETH_P_ARP), FilterSpec.ip_proto(IPPROTO_ICMP)]
        if cfg.ipv6 is not None:
            specs.append(FilterSpec.ip_proto(IPPROTO_ICMPV6))
    else:
        raise UnsupportedError(
            f"a station on the {adapter} adapter would steal every ARP and ICMP frame of "
            "the interface (the kernel would stop answering for its own addresses), and "
            "this adapter has no bpf filters for precise ones; use packet:IFNAME")
    for p in cfg.udp_echo:
        if cfg.ipv4 is not None:
            specs.append(FilterSpec.ip4_local("udp", cfg.ipv4, p))
        if cfg.ipv6 is not None:
            specs.append(FilterSpec.ip6_local("udp", cfg.ipv6, p))
    return [mode(s) for s in specs]


# ---- the I/O loop ---------------------------------------------------------------------------
@dataclass
class StationStats:
    """What a run did: the station's counters plus the VI's and the run's."""

    counters: dict[str, int]
    conflicts: list[tuple[str, str]]
    elapsed_s: float = 0.0
    vi_drops: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "signal"

    @property
    def drops(self) -> int:
        return sum(v for k, v in self.counters.items() if k.endswith("_drops")) + sum(
            self.vi_drops.values())


_RX = int(EventType.RX)
_TX = int(EventType.TX)


def _tx_event(rq_id: int) -> Event:
    """A TX event carrying ``rq_id`` (all ``transmit_unbundle`` reads)."""
    return Event(EventType.TX, 0, 0, 0, 0, rq_id, 0, 0)


_TXERR = int(EventType.TX_ERROR)
_CONT = 0x2


class StationRunner:
    """A station on ``url`` (control path in ``__init__``; :meth:`run` is the loop)."""

    def __init__(self, url: str, *, ip: str | None = None, ipv6: str | None = None,
                 mac: str | None = None, udp_echo: tuple[int, ...] = (),
                 rate_pps: int = 1000, nrx: int = 512, ntx: int = 256) -> None:
        self.driver = Driver.open(url)
        try:
            info = self.driver.interface
            self.cfg = StationConfig.parse(mac or info.mac, ip, ipv6, udp_echo, rate_pps)
            self._refuse_kernel_addresses(info.name, info.ipv4, info.ipv6)
            caps = self.driver.capabilities
            self.filters = station_filters(self.cfg, caps.adapter, caps.sniff, caps.steal,
                                           caps.filter_kinds)
            if self.cfg.mac != info.mac and caps.adapter == "packet":
                # frames to a MAC the interface does not own need promiscuous mode
                self.filters = [f.sniff(promiscuous=True) for f in self.filters]
            self.station = Station(self.cfg)
            self.pd = ProtectionDomain(self.driver)
            self.nrx, self.ntx = nrx, ntx
            self.mr = MemoryRegion(self.pd, (nrx + ntx) * PKT_BUF_SIZE)
            self.vi = VirtualInterface(self.pd, rxq=nrx, txq=ntx)
            for f in self.filters:
                self.vi.filter_add(f)
        except BaseException:
            self.driver.close()
            raise
        self._addrs = self.mr.dma_addrs()
        fill = self.vi.receive_capacity()
        self.vi.receive_post_batch(self._addrs[:fill], np.arange(fill, dtype=np.uint32))
        self._tx_free = list(range(nrx, nrx + ntx))

    def _refuse_kernel_addresses(self, name: str, v4: tuple[str, ...],
                                 v6: tuple[str, ...]) -> None:
        cfg = self.cfg
        owned = {ipaddress.ip_address(a.split("/")[0]) for a in (*v4, *v6)}
        for mine in (cfg.ipv4, cfg.ipv6):
            if mine is None:
                continue
            a = ipaddress.ip_address(mine)
            if a in owned:
                raise SetupError(
                    f"{a} is already the kernel's address on {name}: the kernel answers "
                    "ARP/NDP and ping for it", errno=errno.EADDRINUSE,
                    hint=f"pick an address the kernel does not own, or remove it first "
                         f"(ip addr del {a} dev {name})")

    def send(self, frame: bytes) -> bool:
        """Copy ``frame`` into a free TX buffer and transmit it; False if none is free."""
        if not self._tx_free:
            self.station.counters["tx_busy_drops"] += 1
            return False
        k = self._tx_free.pop()
        off = k * PKT_BUF_SIZE
        self.mr.mv[off:off + len(frame)] = frame
        if self.vi.transmit(int(self._addrs[k]), len(frame), k) != 0:
            self._tx_free.append(k)
            self.station.counters["tx_busy_drops"] += 1
            return False
        self.station.counters["tx_frames"] += 1
        return True

    def announce(self) -> None:
        """Gratuitous ARP and unsolicited NA for the configured addresses."""
        if self.cfg.ipv4 is not None:
            self.send(self.station.gratuitous_arp())
        if self.cfg.ipv6 is not None:
            self.send(self.station.unsolicited_na())

    def run(self, duration_s: float | None = None,
            on_second: Callable[[StationStats], None] | None = None,
            stop: list[bool] | None = None,
            link_up: Callable[[], bool] | None = None) -> StationStats:
        """Answer until ``stop[0]``, ``duration_s`` or the link goes down."""
        st = StationStats(self.station.counters, self.station.conflicts)
        vi, station, rows = self.vi, self.station, self.mr.buf
        addrs = self._addrs
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        deadline = t0 + duration_s if duration_s else None
        self.announce()
        while True:
            b = vi.poll()
            if len(b):
                now_ns = self.driver.now_ns()
                repost: list[int] = []
                for t, fl, rid, ofs, ln in zip(b.type.tolist(), b.flags.tolist(),
                                               b.rq_id.tolist(), b.ofs.tolist(),
                                               b.len.tolist()):
                    if t == _RX:
                        if not fl & _CONT:
                            o = rid * PKT_BUF_SIZE + ofs
                            n = min(ln, PKT_BUF_SIZE - ofs)
                            reply = station.handle(rows[o:o + n].data, now_ns)
                            if reply is not None:
                                self.send(reply)
                        repost.append(rid)
                    elif t == 2:  # RX_DISCARD
                        repost.append(rid)
                    elif t == _TX or t == _TXERR:
                        done = vi.transmit_unbundle(_tx_event(rid))
                        if t == _TXERR:
                            station.counters["tx_error_drops"] += len(done)
                        self._tx_free.extend(done)
                if repost:
                    rids = np.asarray(repost, dtype=np.uint32)
                    vi.receive_post_batch(addrs[rids], rids)
            else:
                vi.eventq_wait(5_000_000)
            now = time.perf_counter()
            if stop is not None and stop[0]:
                break
            if deadline is not None and now >= deadline:
                st.stopped_by = "duration"
                break
            if now >= next_tick:
                next_tick = now + 1.0
                st.elapsed_s = now - t0
                if link_up is not None and not link_up():
                    st.stopped_by = "link-down"
                    break
                if on_second is not None:
                    on_second(st)
        st.elapsed_s = time.perf_counter() - t0
        s = vi.stats()
        st.vi_drops = {k: v for k, v in s.items() if k.endswith("_drops")}
        return st

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
