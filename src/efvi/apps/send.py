"""Transmit a UDP stream (ef_vi's ``efsend``): source addresses from the interface,
destination MAC from the neighbour table (or given), batched transmits, completions
checked in order.

Each datagram carries a 64-bit big-endian sequence number first in its payload; the
UDP checksum is updated per packet (vectorised) so kernel sockets accept every one.
"""

from __future__ import annotations

import errno
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from efvi import Driver, MemoryRegion, ProtectionDomain, SetupError, VirtualInterface
from efvi.apps._link import link_lost
from efvi.apps.common import StopFlag
from efvi.constants import PKT_BUF_SIZE
from efvi.filters import parse_mac
from efvi.wire.address import multicast_mac
from efvi.wire.build import udp_frame
from efvi.wire.checksum import ones_sum


@dataclass
class SendStats:
    tx_packets: int = 0
    tx_bytes: int = 0
    completed: int = 0
    out_of_order: int = 0
    elapsed_s: float = 0.0
    frame_len: int = 0
    rejected: int = 0
    not_sent: int = 0  # frames completed as TX errors because the link was down
    error: str = ""  # why it stopped or what failed (link gone / no carrier), else empty


def _fold(x: np.ndarray) -> np.ndarray:
    x = (x & 0xFFFF) + (x >> 16)
    x = (x & 0xFFFF) + (x >> 16)
    return x


def _ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        pass
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise SetupError(f"{what} address {text!r} is not an IPv4 address", errno=errno.EINVAL,
                         hint="give a dotted quad such as 198.18.0.2 (names are not resolved)"
                         ) from None
    raise SetupError(f"{what} address {text} is IPv6; efvi send builds IPv4 frames only",
                     errno=errno.EAFNOSUPPORT, hint="give an IPv4 address")


class Sender:
    """A TX-only VI on ``url`` sending to ``dst_ip:dport``."""

    def __init__(self, url: str, dst_ip: str, dport: int, *, sport: int = 12345,
                 payload: int = 28, dmac: str | None = None, src_ip: str | None = None,
                 nbuf: int = 4096, txq: int = 4096) -> None:
        if payload < 8 or payload > 1472:
            raise SetupError(f"payload size {payload} outside 8..1472", errno=errno.EINVAL,
                             hint="use -m between 8 and 1472 bytes")
        for what, p in (("destination port", dport), ("source port", sport)):
            if not 1 <= p <= 0xFFFF:
                raise SetupError(f"{what} {p} outside 1..65535", errno=errno.EINVAL,
                                 hint="give a UDP port 1..65535")
        dst = _ipv4(dst_ip, "destination")
        if src_ip is not None:
            src_ip = str(_ipv4(src_ip, "source"))
        self.driver = Driver.open(url)
        try:
            info = self.driver.interface
            src = src_ip or (info.ipv4[0] if info.ipv4 else None)
            if src is None:
                raise SetupError(f"interface {info.name} has no IPv4 address",
                                 errno=errno.EADDRNOTAVAIL,
                                 hint="add one (ip addr add ...) or pass --src-ip")
            if dst.is_multicast:
                mac = multicast_mac(str(dst))
            elif dmac:
                mac = parse_mac(dmac)
            else:
                found = self.driver.adapter.resolve_neighbour(str(dst))
                if found is None:
                    raise SetupError(
                        f"no neighbour entry for {dst} on {info.name}", errno=errno.EHOSTUNREACH,
                        hint=f"pass --dmac MAC, or fill the table (ping {dst}, or "
                             f"ip neigh replace {dst} lladdr MAC dev {info.name})")
                mac = found
            frame = udp_frame(mac, info.mac, src, str(dst), sport, dport, bytes(payload))
            self.pd = ProtectionDomain(self.driver)
            self.mr = MemoryRegion(self.pd, nbuf * PKT_BUF_SIZE)
            self.vi = VirtualInterface(self.pd, rxq=0, txq=txq)
        except BaseException:
            self.driver.close()
            raise
        self.frame = frame
        self.nbuf = nbuf
        self.rows = self.mr.buf.reshape(nbuf, PKT_BUF_SIZE)
        self.rows[:, :len(frame)] = np.frombuffer(frame, np.uint8)
        self.addrs = self.mr.dma_addrs()
        # checksum of the frame with a zero sequence number: sum without the csum field
        l4 = 14 + (frame[14] & 0x0F) * 4
        self._csum_at = l4 + 6
        self._seq_at = l4 + 8
        seg = bytearray(frame[l4:])
        seg[6:8] = b"\0\0"
        pseudo = frame[26:34] + bytes([0, 17]) + len(seg).to_bytes(2, "big")
        self._base_sum = ones_sum(bytes(pseudo) + bytes(seg))

    def _stage(self, slots: np.ndarray, seq: np.ndarray) -> None:
        rows = self.rows
        words = seq.astype(">u8").view(np.uint8).reshape(-1, 8)
        rows[slots, self._seq_at:self._seq_at + 8] = words
        w = words.astype(np.int64)
        s = self._base_sum + (w[:, 0::2] << 8).sum(1) + w[:, 1::2].sum(1)
        c = (~_fold(s)) & 0xFFFF
        c[c == 0] = 0xFFFF
        rows[slots, self._csum_at] = (c >> 8).astype(np.uint8)
        rows[slots, self._csum_at + 1] = (c & 0xFF).astype(np.uint8)

    def auto_batch(self) -> int:
        """The default batch: a quarter of the TX ring (1024 with the default 4096-slot
        ring), so three quarters stay in flight while a batch is staged — measured, a
        Python loop's per-doorbell cost is then spread thinly enough to match trafgen."""
        return max(1, min((self.vi.transmit_capacity() + 1) // 4, self.nbuf))

    def run(self, count: int, *, batch: int | None = None, sleep_us: int = 0,
            on_second: Callable[[SendStats], None] | None = None,
            stop: StopFlag | None = None) -> SendStats:
        """Send ``count`` datagrams (negative: until ``stop``), ``batch`` per doorbell.

        ``batch`` None (or 0): :meth:`auto_batch`. ``batch`` 1 is efsend's per-packet
        mode: ``transmit`` (init + push) per frame, completions through
        ``eventq_poll`` + ``transmit_unbundle``.
        """
        if (batch is not None and batch < 0) or sleep_us < 0:
            raise SetupError(f"batch {batch} / sleep {sleep_us} µs out of range",
                             errno=errno.EINVAL,
                             hint="use batch >= 1 (0 or None: auto) and sleep_us >= 0")
        down0 = self.vi.stats().get("tx_link_down_drops", 0)
        if batch == 1:
            return self._finish(self._run_per_packet(count, sleep_us, on_second, stop), down0)
        st = SendStats(frame_len=len(self.frame))
        vi = self.vi
        batch = self.auto_batch() if not batch else batch
        batch = max(1, min(batch, vi.transmit_capacity(), self.nbuf))
        flen = len(self.frame)
        lens = np.full(batch, flen, dtype=np.uint32)
        seq0 = 0
        expect = 0
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        unlimited = count < 0
        while unlimited or st.tx_packets < count:
            if stop is not None and stop.is_set():
                break
            n = batch if unlimited else min(batch, count - st.tx_packets)
            n = min(n, vi.transmit_space())
            if n > 0:
                seq = np.arange(seq0, seq0 + n, dtype=np.uint64)
                slots = (seq % self.nbuf).astype(np.int64)
                self._stage(slots, seq)
                sent = vi.transmit_batch(self.addrs[slots], lens[:n], slots.astype(np.uint32))
                if sent < 0:
                    st.rejected += 1
                    break
                seq0 += sent
                st.tx_packets += sent
                st.tx_bytes += sent * flen
            done = vi.transmit_completed(vi.poll())
            if done.size:
                exp = (np.arange(expect, expect + done.size) % self.nbuf).astype(np.uint32)
                st.out_of_order += int(np.count_nonzero(done != exp))
                expect += int(done.size)
                st.completed += int(done.size)
            if sleep_us:
                time.sleep(sleep_us / 1e6)
            now = time.perf_counter()
            if now >= next_tick:
                next_tick += 1.0
                st.elapsed_s = now - t0
                st.error = link_lost(self.driver, carrier=True)  # once a second
                if st.error:
                    break
                if on_second is not None:
                    on_second(st)
        deadline = time.perf_counter() + (0.0 if st.error else 2.0)
        while st.completed < st.tx_packets and time.perf_counter() < deadline:
            done = vi.transmit_completed(vi.poll())
            st.completed += int(done.size)
            if done.size == 0:
                time.sleep(0.0005)
        st.elapsed_s = time.perf_counter() - t0
        return self._finish(st, down0)

    def _finish(self, st: SendStats, down0: int) -> SendStats:
        """Say what the link did to the frames: ``not_sent`` and ``error``."""
        st.not_sent = self.vi.stats().get("tx_link_down_drops", 0) - down0
        if st.not_sent:
            why = (st.error or link_lost(self.driver, carrier=True)
                   or "the link was down when they were sent")
            st.error = f"{st.not_sent} frames not sent: {why}"
        elif not st.error and st.tx_packets:
            # adapters whose kernel completes frames it drops (xdp): the link now
            why = link_lost(self.driver, carrier=True)
            if why:
                st.error = f"{st.tx_packets} frames handed to the kernel may be lost: {why}"
        return st

    def _run_per_packet(self, count: int, sleep_us: int,
                        on_second: Callable[[SendStats], None] | None,
                        stop: StopFlag | None) -> SendStats:
        """efsend's loop: one ``transmit`` per frame, per-event completions."""
        st = SendStats(frame_len=len(self.frame))
        vi = self.vi
        flen = len(self.frame)
        base = int(self.addrs[0])
        one = np.zeros(1, np.int64)
        seqv = np.zeros(1, np.uint64)
        t0 = time.perf_counter()
        next_tick = t0 + 1.0
        unlimited = count < 0
        expect = 0
        while unlimited or st.tx_packets < count:
            if stop is not None and stop.is_set():
                break
            if vi.transmit_space() > 0:
                slot = st.tx_packets % self.nbuf
                one[0] = slot
                seqv[0] = st.tx_packets
                self._stage(one, seqv)
                rc = vi.transmit(base + slot * PKT_BUF_SIZE, flen, slot)
                if rc < 0 and rc != -errno.EAGAIN:
                    st.rejected += 1
                    break
                if rc == 0:
                    st.tx_packets += 1
                    st.tx_bytes += flen
            for ev in vi.eventq_poll():
                for rid in vi.transmit_unbundle(ev):
                    st.out_of_order += rid != expect % self.nbuf
                    expect += 1
                    st.completed += 1
            if sleep_us:
                time.sleep(sleep_us / 1e6)
            now = time.perf_counter()
            if now >= next_tick:
                next_tick += 1.0
                st.elapsed_s = now - t0
                st.error = link_lost(self.driver, carrier=True)  # once a second
                if st.error:
                    break
                if on_second is not None:
                    on_second(st)
        deadline = time.perf_counter() + (0.0 if st.error else 2.0)
        while st.completed < st.tx_packets and time.perf_counter() < deadline:
            evs = vi.eventq_poll()
            for ev in evs:
                st.completed += len(vi.transmit_unbundle(ev))
            if not evs:
                time.sleep(0.0005)
        st.elapsed_s = time.perf_counter() - t0
        return st

    def close(self) -> None:
        self.driver.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
