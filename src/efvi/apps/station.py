"""A user-space end-station (``efvi station``): ARP, ICMP echo, NDP and UDP echo for
one address the kernel does not own.

Two layers, as everywhere in efvi:

* :class:`Station` is sans-I/O: :meth:`Station.handle` takes one received frame and
  the time in int ns and returns the reply frame (or ``None``), counting what it saw
  by protocol. It parses with :mod:`efvi.wire` codecs and builds replies with correct
  checksums; it never raises for a frame (malformed input is counted). Replies are
  rate limited per protocol class by token buckets (:class:`TokenBucket`), so a peer
  that floods ARP or ICMP gets at most ``rate_pps`` answers a second per class and the
  rest are counted as ``*_rate_drops``.
* :class:`StationRunner` opens a driver URL, refuses an address the kernel already
  owns on that interface (naming it), installs the filters (:func:`station_filters`),
  sends a gratuitous ARP (and an unsolicited neighbour advertisement for IPv6), and
  runs the RX → :meth:`Station.handle` → TX loop until stopped, returning every
  counter.

ARP conflicts — an ARP (or a neighbour advertisement) from another MAC claiming the
station's address — are counted and the claimants listed (``conflicts``); the
station keeps answering, as a host defending its address does (RFC 5227 §2.4 (c)).
"""

from __future__ import annotations

import errno
import ipaddress
import struct
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
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import FormatError, SetupError, UnsupportedError
from efvi.wire._buf import Buffer
from efvi.wire.arp import ARP, ARP_LEN
from efvi.wire.build import ip_frame
from efvi.wire.checksum import l4_checksum, verify
from efvi.wire.constants import (
    ARPOP_REPLY,
    ARPOP_REQUEST,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_ZLEN,
    ICMP_ECHO,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
)
from efvi.wire.ethernet import Ethernet
from efvi.wire.icmp import Echo
from efvi.wire.ipv4 import IPv4
from efvi.wire.ipv6 import IPv6Chain
from efvi.wire.udp import UDP, udp_checksum

__all__ = ["COUNTERS", "Station", "StationConfig", "StationRunner", "StationStats",
           "TokenBucket", "solicited_node", "station_filters"]

ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
BROADCAST = b"\xff" * 6
ALL_NODES6 = ipaddress.IPv6Address("ff02::1").packed

#: Every counter a :class:`Station` keeps, in the order reports list them.
COUNTERS: tuple[str, ...] = (
    "rx_frames", "arp_requests", "arp_replies_sent", "arp_gratuitous_sent", "arp_conflicts",
    "icmp_echo", "icmp6_echo", "ndp_solicits", "ndp_adverts_sent", "ndp_conflicts",
    "udp_echo", "tx_frames",
    "not_ours", "malformed_drops", "checksum_drops", "fragment_drops",
    "arp_rate_drops", "icmp_rate_drops", "udp_rate_drops", "tx_busy_drops", "tx_error_drops",
)

_NA = struct.Struct("!BBHI16s")


def solicited_node(addr6: bytes) -> bytes:
    """The solicited-node multicast address ``ff02::1:ffXX:XXXX`` of ``addr6``."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr6[13:]


def _mcast_mac6(addr6: bytes) -> bytes:
    return b"\x33\x33" + addr6[12:]


class TokenBucket:
    """``rate`` events a second with bursts of ``burst`` (times in int ns)."""

    __slots__ = ("burst", "last_ns", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ns: int | None = None

    def take(self, now_ns: int) -> bool:
        """True if one event may go now (and spend its token). Cost: a few float ops."""
        last = self.last_ns
        self.last_ns = now_ns
        if last is not None and now_ns > last:
            self.tokens = min(self.burst, self.tokens + (now_ns - last) * self.rate / 1e9)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class StationConfig:
    """What the station owns: a MAC, an IPv4 address (and prefix), optionally an IPv6
    address, the UDP ports it echoes, and its reply rate limit per protocol class."""

    mac: bytes
    ipv4: bytes | None = None
    prefix_len: int = 32
    ipv6: bytes | None = None
    udp_echo: tuple[int, ...] = ()
    rate_pps: int = 1000
    burst: int = 100

    @staticmethod
    def parse(mac: str | bytes, ip: str | None = None, ipv6: str | None = None,
              udp_echo: tuple[int, ...] = (), rate_pps: int = 1000) -> StationConfig:
        """Build from text (``--ip 198.18.0.10/24``); SetupError(EINVAL) on bad input."""
        from efvi.filters import parse_mac
        v4: bytes | None = None
        plen = 32
        if ip is not None:
            try:
                itf = ipaddress.ip_interface(ip)
            except ValueError as exc:
                raise SetupError(f"bad --ip {ip!r}: {exc}", errno=errno.EINVAL,
                                 hint="write ADDR or ADDR/LEN, e.g. 198.18.0.10/24") from None
            if itf.version != 4:
                raise SetupError(f"--ip {ip!r} is not IPv4", errno=errno.EINVAL,
                                 hint="give IPv6 addresses with --ipv6")
            v4, plen = itf.ip.packed, itf.network.prefixlen
        v6: bytes | None = None
        if ipv6 is not None:
            try:
                a6 = ipaddress.ip_interface(ipv6).ip
            except ValueError as exc:
                raise SetupError(f"bad --ipv6 {ipv6!r}: {exc}", errno=errno.EINVAL) from None
            if a6.version != 6 or a6.is_multicast:
                raise SetupError(f"--ipv6 {ipv6!r} is not a unicast IPv6 address",
                                 errno=errno.EINVAL)
            v6 = a6.packed
        if v4 is None and v6 is None:
            raise SetupError("a station needs an address", errno=errno.EINVAL,
                             hint="give --ip ADDR[/LEN] and/or --ipv6 ADDR")
        for p in udp_echo:
            if not 1 <= p <= 0xFFFF:
                raise SetupError(f"UDP echo port {p} out of range 1..65535", errno=errno.EINVAL)
        if rate_pps <= 0:
            raise SetupError(f"rate {rate_pps} must be positive", errno=errno.EINVAL)
        return StationConfig(parse_mac(mac), v4, plen, v6, tuple(sorted(set(udp_echo))),
                             rate_pps, max(1, min(rate_pps, 100)))


class Station:
    """The sans-I/O station: frames in, reply frames and counters out (see module doc)."""

    def __init__(self, cfg: StationConfig) -> None:
        self.cfg = cfg
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: (address, claimant MAC) pairs seen claiming the station's addresses
        self.conflicts: list[tuple[str, str]] = []
        self._buckets = {k: TokenBucket(cfg.rate_pps, cfg.burst) for k in ("arp", "icmp", "udp")}
        self._ports = frozenset(cfg.udp_echo)
        self._snm = solicited_node(cfg.ipv6) if cfg.ipv6 else b""

    # ---- frames the station sends on its own ------------------------------------------
    def gratuitous_arp(self) -> bytes:
        """An ARP request announcing the IPv4 address (sender = target = ours)."""
        ip = self.cfg.ipv4
        assert ip is not None
        self.counters["arp_gratuitous_sent"] += 1
        return _pad(Ethernet(BROADCAST, self.cfg.mac, ETH_P_ARP).pack()
                    + ARP.request(self.cfg.mac, ip, ip).pack())

    def unsolicited_na(self) -> bytes:
        """A neighbour advertisement of the IPv6 address to all nodes (RFC 4861 §7.2.6)."""
        ip6 = self.cfg.ipv6
        assert ip6 is not None
        self.counters["ndp_adverts_sent"] += 1
        return self._na(ALL_NODES6, _mcast_mac6(ALL_NODES6), NA_FLAG_OVERRIDE)

    # ---- the receive path -------------------------------------------------------------
    def handle(self, frame: Buffer, now_ns: int) -> bytes | None:
        """One received frame → the reply to send, or None. Never raises.

        Cost: one Ethernet parse and the protocol's parse; a reply costs one frame build
        (two checksums). Counts every frame in exactly one outcome counter.
        """
        c = self.counters
        c["rx_frames"] += 1
        try:
            eth = Ethernet.parse(frame)
            et = eth.ethertype
            off = eth.header_len
            if et == ETH_P_ARP and self.cfg.ipv4 is not None:
                return self._arp(eth, frame, off, now_ns)
            if et == ETH_P_IP and self.cfg.ipv4 is not None:
                return self._ip4(eth, frame, off, now_ns)
            if et == ETH_P_IPV6 and self.cfg.ipv6 is not None:
                return self._ip6(eth, frame, off, now_ns)
        except (FormatError, IndexError, ValueError, struct.error):
            c["malformed_drops"] += 1
            return None
        c["not_ours"] += 1
        return None

    def _allow(self, cls: str, now_ns: int) -> bool:
        if self._buckets[cls].take(now_ns):
            return True
        self.counters[f"{cls}_rate_drops"] += 1
        return False

    def _arp(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        if len(frame) < off + ARP_LEN:
            c["malformed_drops"] += 1
            return None
        arp = ARP.parse(frame, off)
        if arp.spa == cfg.ipv4 and arp.sha != cfg.mac:
            c["arp_conflicts"] += 1
            self._conflict(arp.spa, arp.sha)
        if arp.op != ARPOP_REQUEST or arp.tpa != cfg.ipv4:
            if arp.op not in (ARPOP_REQUEST, ARPOP_REPLY):
                c["malformed_drops"] += 1
            elif arp.spa != cfg.ipv4:
                c["not_ours"] += 1
            return None
        c["arp_requests"] += 1
        if arp.spa == cfg.ipv4 and arp.sha == cfg.mac:
            return None  # our own announcement looped back
        if not self._allow("arp", now_ns):
            return None
        c["arp_replies_sent"] += 1
        return _pad(Ethernet(eth.src, cfg.mac, ETH_P_ARP, eth.vlans).pack()
                    + arp.reply(cfg.mac).pack())

    def _ip4(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        ip = IPv4.parse(frame, off)
        if ip.dst != cfg.ipv4:
            c["not_ours"] += 1
            return None
        if not IPv4.checksum_ok(frame, off):
            c["checksum_drops"] += 1
            return None
        if ip.is_fragment:
            c["fragment_drops"] += 1
            return None
        l4 = off + ip.header_len
        end = min(len(frame), off + ip.total_length)
        if ip.proto == IPPROTO_ICMP:
            if end - l4 < 8 or frame[l4] != ICMP_ECHO:
                c["not_ours"] += 1
                return None
            if not verify(frame[l4:end]):
                c["checksum_drops"] += 1
                return None
            if not self._allow("icmp", now_ns):
                return None
            c["icmp_echo"] += 1
            msg = Echo.parse(frame, l4, end).reply().pack_v4()
            return _pad(ip_frame(eth.src, cfg.mac, cfg.ipv4, ip.src, IPPROTO_ICMP, msg,
                                 vlans=eth.vlans, df=False))
        if ip.proto == IPPROTO_UDP:
            return self._udp(eth, frame, l4, end, ip.src, now_ns)
        c["not_ours"] += 1
        return None

    def _udp(self, eth: Ethernet, frame: Buffer, l4: int, end: int, src: bytes,
             now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        mine = cfg.ipv4 if len(src) == 4 else cfg.ipv6
        assert mine is not None
        u = UDP.parse(frame, l4)
        if u.dport not in self._ports:
            c["not_ours"] += 1
            return None
        if l4 + u.length > end:
            c["malformed_drops"] += 1
            return None
        # the UDP checksum is not verified: a local sender's frame seen through a veth or
        # an AF_PACKET tap may still carry the partial (offload) checksum
        # (TP_STATUS_CSUMNOTREADY); the reply's checksum is computed afresh
        seg = frame[l4:l4 + u.length]
        if not self._allow("udp", now_ns):
            return None
        c["udp_echo"] += 1
        payload = bytes(seg[8:])
        hdr = UDP(u.dport, u.sport, u.length, 0).pack()
        ck = udp_checksum(mine, src, hdr + payload)
        l4b = UDP(u.dport, u.sport, u.length, ck).pack() + payload
        return _pad(ip_frame(eth.src, cfg.mac, mine, src, IPPROTO_UDP, l4b, vlans=eth.vlans,
                             df=False))

    def _ip6(self, eth: Ethernet, frame: Buffer, off: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        assert cfg.ipv6 is not None
        ch = IPv6Chain.walk(frame, off)
        h = ch.header
        if h.dst != cfg.ipv6 and h.dst != self._snm and h.dst != ALL_NODES6:
            c["not_ours"] += 1
            return None
        if ch.fragment is not None:
            c["fragment_drops"] += 1
            return None
        l4, end = ch.l4_offset, ch.end
        if ch.proto == IPPROTO_ICMPV6 and l4 >= 0:
            if end - l4 < 8:
                c["malformed_drops"] += 1
                return None
            if not Echo.checksum_ok_v6(frame, l4, end, h.src, h.dst):
                c["checksum_drops"] += 1
                return None
            t = frame[l4]
            if t == ND_NEIGHBOR_SOLICIT:
                return self._ns(eth, frame, l4, end, h.src, h.hop_limit, now_ns)
            if t == ND_NEIGHBOR_ADVERT:
                if end - l4 >= 24 and bytes(frame[l4 + 8:l4 + 24]) == cfg.ipv6:
                    mac = _ll_option(frame, l4 + 24, end, ND_OPT_TARGET_LL) or eth.src
                    if mac != cfg.mac:
                        c["ndp_conflicts"] += 1
                        self._conflict(cfg.ipv6, mac)
                        return None
                c["not_ours"] += 1
                return None
            if t == ICMPV6_ECHO_REQUEST and h.dst == cfg.ipv6:
                if not self._allow("icmp", now_ns):
                    return None
                c["icmp6_echo"] += 1
                msg = Echo.parse(frame, l4, end).reply().pack_v6(cfg.ipv6, h.src)
                return _pad(ip_frame(eth.src, cfg.mac, cfg.ipv6, h.src, IPPROTO_ICMPV6, msg,
                                     vlans=eth.vlans))
        elif ch.proto == IPPROTO_UDP and l4 >= 0 and h.dst == cfg.ipv6:
            return self._udp(eth, frame, l4, end, h.src, now_ns)
        c["not_ours"] += 1
        return None

    def _ns(self, eth: Ethernet, frame: Buffer, l4: int, end: int, src: bytes,
            hop_limit: int, now_ns: int) -> bytes | None:
        c, cfg = self.counters, self.cfg
        if end - l4 < 24 or hop_limit != 255:
            c["malformed_drops"] += 1  # RFC 4861 §7.1.1: hop limit 255, 24+ bytes
            return None
        if bytes(frame[l4 + 8:l4 + 24]) != cfg.ipv6:
            c["not_ours"] += 1
            return None
        c["ndp_solicits"] += 1
        if not self._allow("icmp", now_ns):
            return None
        c["ndp_adverts_sent"] += 1
        if src == bytes(16):  # duplicate address detection: answer all nodes
            if eth.src != cfg.mac:
                c["ndp_conflicts"] += 1
                self._conflict(cfg.ipv6 or b"", eth.src)
            return self._na(ALL_NODES6, _mcast_mac6(ALL_NODES6), NA_FLAG_OVERRIDE)
        dmac = _ll_option(frame, l4 + 24, end, ND_OPT_SOURCE_LL) or eth.src
        return self._na(src, dmac, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)

    def _na(self, dst: bytes, dmac: bytes, flags: int) -> bytes:
        cfg = self.cfg
        assert cfg.ipv6 is not None
        body = bytearray(_NA.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags, cfg.ipv6))
        body += bytes([ND_OPT_TARGET_LL, 1]) + cfg.mac
        ck = l4_checksum(cfg.ipv6, dst, IPPROTO_ICMPV6, body)
        body[2:4] = ck.to_bytes(2, "big")
        return _pad(ip_frame(dmac, cfg.mac, cfg.ipv6, dst, IPPROTO_ICMPV6, bytes(body),
                             ttl=255))

    def _conflict(self, ip: bytes, mac: bytes) -> None:
        entry = (str(ipaddress.ip_address(bytes(ip))), ":".join(f"{b:02x}" for b in mac))
        if entry not in self.conflicts and len(self.conflicts) < 16:
            self.conflicts.append(entry)


def _pad(frame: bytes) -> bytes:
    return frame + bytes(ETH_ZLEN - len(frame)) if len(frame) < ETH_ZLEN else frame


def _ll_option(frame: Buffer, pos: int, end: int, want: int) -> bytes | None:
    """The link-layer address of the first ND option of type ``want`` in [pos, end)."""
    while pos + 8 <= end:
        t, ln = frame[pos], frame[pos + 1]
        if ln == 0:
            return None
        if t == want:
            return bytes(frame[pos + 2:pos + 8])
        pos += ln * 8
    return None


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
