"""The send half of :class:`efvi.apps.udp.UdpEndpoint`: header templates per
destination, the TX-buffer and PIO send paths, TX timestamps.

:meth:`UdpSender.sendto` / :meth:`UdpSender.send` write the datagram after a pre-built
Ethernet/IPv4/UDP header template (:class:`~efvi.apps.udp_frames.TxTemplate`;
destination MAC from the neighbour table, resolved by asking the kernel to ARP when
missing); the IPv4 checksum is the template's precomputed sum plus the length, the
UDP checksum the pseudo-header sum plus one ``int.from_bytes`` over the payload.

PIO: a connected endpoint opened with ``pio=True`` keeps its header template in two
slots of the shared VI's PIO area and :meth:`UdpSender.send` writes only the payload,
lengths and checksums there, then one ``transmit_pio`` (one doorbell); a slot is
reused only after its TX completion (else the send takes the DMA-buffer path, counted
in ``tx_pio_fallbacks``).

The endpoint's state is declared here and set by ``UdpEndpoint.__init__``.
"""

from __future__ import annotations

import errno
import ipaddress
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from efvi.apps.udp_frames import HDR, PIO_SLOT, U16, TxTemplate, check_port, ip_int, multicast_mac
from efvi.apps.udp_kernel import resolve_mac
from efvi.apps.udp_stack import MAX_STALL
from efvi.constants import PIO_SIZE, PKT_BUF_SIZE
from efvi.errors import ClosedError, SetupError
from efvi.wire.checksum import ones_sum

if TYPE_CHECKING:
    from efvi.apps.udp_stack import UdpStack

__all__ = ["UdpSender"]


class UdpSender:
    """Templates, ``sendto``/``send``/``send_batch``, PIO and ``wait_sent`` of an
    endpoint (a base of :class:`efvi.apps.udp.UdpEndpoint`; not used alone)."""

    stack: UdpStack
    port: int
    remote: tuple[str, int] | None
    #: transmit time (int ns, the adapter's clock) of this endpoint's newest send
    #: whose TX completion has been seen; 0 until then or without tx_timestamps
    last_tx_ts_ns: int
    _closed: bool
    _lip: int
    _dst_mac: bytes | str | None
    _ttl: int
    _tx: dict[tuple[int, int], TxTemplate]
    _tx_inflight: int  # sends whose completion is not seen yet (with tx_timestamps)
    _pio_slots: list[int]  # this endpoint's PIO slots
    _pio_t: TxTemplate | None  # the template staged in them
    _pio_k: int  # the slot the next PIO send uses

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("UDP endpoint is closed",)

    # ---- control path -----------------------------------------------------------------
    def _pio_setup(self) -> None:
        """Take two PIO slots of the shared VI (one if only one is left) and stage the
        remote's headers in them (control path)."""
        st = self.stack
        _ = st.vi.pio  # allocates the area; UnsupportedError without PIO
        if not st.pio_free:
            raise SetupError(f"the PIO area of {st.url} is taken by other endpoints "
                             f"({PIO_SIZE} bytes per VI, {PIO_SLOT} per slot)",
                             errno=errno.ENOSPC, hint="open this endpoint with pio=False")
        for _ in range(2):
            if st.pio_free:
                self._pio_slots.append(st.pio_free.pop())
        if self.remote is not None:
            self._pio_stage(self._template(*self.remote))

    def _pio_stage(self, t: TxTemplate) -> None:
        pio = self.stack.vi.pio
        for k in self._pio_slots:
            pio.copy(k * PIO_SLOT, t.hdr)
        self._pio_t = t

    def _template(self, ip: str, port: int) -> TxTemplate:
        """The header template for ``ip:port``, made and cached (control path)."""
        dst = ip_int(ip, "destination address")
        check_port(port, "destination port")
        st = self.stack
        if ipaddress.IPv4Address(dst).is_multicast:
            mac = multicast_mac(dst)
        elif self._dst_mac is not None:
            from efvi.filters import parse_mac
            mac = parse_mac(self._dst_mac)
        else:
            mac = resolve_mac(st, ip)
        src = self._lip if self._lip and not ipaddress.IPv4Address(self._lip).is_multicast \
            else ip_int(st.info.ipv4[0], "source") if st.info.ipv4 else 0
        t = TxTemplate(mac, st.info.mac, src, dst, self.port, port, self._ttl)
        self._tx[(dst, port)] = t
        return t

    def connect(self, remote: tuple[str, int]) -> None:
        """Set the default destination for :meth:`send` (control path; receive filters
        stay as they are)."""
        self._check()
        t = self._template(remote[0], remote[1])
        self.remote = (remote[0], remote[1])
        if self._pio_slots:
            self._pio_stage(t)

    # ---- send -------------------------------------------------------------------------
    def sendto(self, payload: bytes | bytearray | memoryview, addr: tuple[str, int]) -> int:
        """Send one datagram to ``addr``; returns its length, or 0 if no TX buffer came
        free in time (counted: ``tx_no_buffer_drops``). Raises only for misuse: a
        closed endpoint, a payload larger than the MTU allows, a bad address.
        Cost: a header copy, a payload copy, one checksum sum, one doorbell."""
        t = self._tx.get((ip_int(addr[0], "destination address")
                          if addr[0].__class__ is str else addr[0], addr[1]))  # type: ignore[arg-type]
        if t is None:
            self._check()
            t = self._template(addr[0], addr[1])
        return self._send(t, payload)

    def send(self, payload: bytes | bytearray | memoryview) -> int:
        """Send to the connected remote (see :meth:`sendto`)."""
        if self.remote is None:
            self._check()
            raise SetupError("send() on an endpoint with no remote", errno=errno.EDESTADDRREQ,
                             hint="pass remote=(ip, port) when opening, call connect(), "
                                  "or use sendto()")
        return self.sendto(payload, self.remote)

    def send_batch(self, payloads: Iterable[bytes | bytearray | memoryview],
                   addr: tuple[str, int] | None = None) -> int:
        """Send several datagrams (to ``addr`` or the remote); one doorbell for all.
        Returns how many were queued."""
        dest = addr or self.remote
        if dest is None:
            raise SetupError("send_batch() needs addr= or a connected remote",
                             errno=errno.EDESTADDRREQ, hint="pass addr=(ip, port)")
        key = (ip_int(dest[0], "destination address"), dest[1])
        t = self._tx.get(key) or self._template(dest[0], dest[1])
        n = 0
        for p in payloads:
            if self._send(t, p, push=False) == 0:
                break
            n += 1
        self.stack.vi.transmit_push()
        return n

    def _send(self, t: TxTemplate, payload: bytes | bytearray | memoryview,
              push: bool = True) -> int:
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        st = self.stack
        n = len(payload)
        if n > st.max_payload:
            raise SetupError(
                f"a {n}-byte payload does not fit the {st.mtu}-byte MTU of {st.info.name} "
                f"(at most {st.max_payload} bytes)", errno=errno.EMSGSIZE,
                hint="send smaller datagrams, or raise the MTU (ip link set dev "
                     f"{st.info.name} mtu N) on both ends")
        if t is self._pio_t and push and n <= PIO_SLOT - HDR:
            r = self._send_pio(t, payload, n)
            if r >= 0:
                return r
        i = st.take_tx(HDR + n)
        if i < 0:
            return 0
        mv = st.mv
        b = i * PKT_BUF_SIZE
        mv[b:b + HDR] = t.hdr
        mv[b + HDR:b + HDR + n] = memoryview(payload).cast("B")
        tot = 28 + n
        s = t.ip_sum + tot
        s = (s & 0xFFFF) + (s >> 16)
        U16.pack_into(mv, b + 16, tot)
        U16.pack_into(mv, b + 24, ~s & 0xFFFF)
        ulen = 8 + n
        s = ones_sum(payload, t.udp_sum + ulen + ulen)
        U16.pack_into(mv, b + 38, ulen)
        U16.pack_into(mv, b + 40, ~s & 0xFFFF or 0xFFFF)
        vi = st.vi
        ln = HDR + n if n >= 18 else 60  # pad to the Ethernet minimum
        if n < 18:
            mv[b + HDR + n:b + 60] = bytes(18 - n)
        rc = vi.transmit_init(st.base + b, ln, i)
        if rc:
            if i == st.jumbo_id:
                st._jumbo_free = True
            else:
                st._tx_free.append(i)
            st.counters["tx_no_buffer_drops"] += 1
            return 0
        if st.tx_timestamps:
            st.tx_owner[i] = self
            self._tx_inflight += 1
        if push:
            vi.transmit_push()
        st.counters["tx_datagrams"] += 1
        return n

    def _send_pio(self, t: TxTemplate, payload: bytes | bytearray | memoryview,
                  n: int) -> int:
        """The PIO send: payload, two lengths and two checksums written into the staged
        frame, one ``transmit_pio`` (one doorbell). Returns ``n``, 0 when the TX ring
        is full (counted), or -1 when both slots are still in flight after a bounded
        wait (the caller then uses a TX buffer; counted in ``tx_pio_fallbacks``)."""
        st = self.stack
        busy = st.pio_busy
        slots = self._pio_slots
        k = slots[self._pio_k]
        if busy[k]:
            self._pio_k = (self._pio_k + 1) % len(slots)
            k = slots[self._pio_k]
            if busy[k]:
                for _ in range(MAX_STALL):
                    st.pump()
                    if not busy[k]:
                        break
                else:
                    st.counters["tx_pio_fallbacks"] += 1
                    return -1
        pio = st.vi.pio
        mv = pio.mv
        b = k * PIO_SLOT
        mv[b + HDR:b + HDR + n] = memoryview(payload).cast("B")
        tot = 28 + n
        s = t.ip_sum + tot
        s = (s & 0xFFFF) + (s >> 16)
        U16.pack_into(mv, b + 16, tot)
        U16.pack_into(mv, b + 24, ~s & 0xFFFF)
        ulen = 8 + n
        s = ones_sum(payload, t.udp_sum + ulen + ulen)
        U16.pack_into(mv, b + 38, ulen)
        U16.pack_into(mv, b + 40, ~s & 0xFFFF or 0xFFFF)
        ln = HDR + n if n >= 18 else 60
        if n < 18:
            mv[b + HDR + n:b + 60] = bytes(18 - n)
        rid = st.pio_id_base + k
        if st.vi.transmit_pio(b, ln, rid):
            st.counters["tx_no_buffer_drops"] += 1
            return 0
        busy[k] = True
        self._pio_k = (self._pio_k + 1) % len(slots)
        if st.tx_timestamps:
            st.tx_owner[rid] = self
            self._tx_inflight += 1
        st.counters["tx_datagrams"] += 1
        st.counters["tx_pio"] += 1
        return n

    def wait_sent(self, timeout: float = 1.0) -> int:
        """Pump the shared VI until every datagram this endpoint sent has completed (or
        ``timeout`` s passed); return :attr:`last_tx_ts_ns`. With ``tx_timestamps`` that
        is the newest send's transmit time; 0 without them or when the kernel gave
        none. Cost: one pump per round, busy; RX that arrives meanwhile is queued for
        ``recv`` as usual. Never raises on an open endpoint."""
        self._check()
        st = self.stack
        deadline = time.monotonic() + timeout
        while True:
            st.pump()
            # without timestamps completions are not tracked per endpoint: the whole VI
            busy = (self._tx_inflight > 0 if st.tx_timestamps
                    else st.vi.transmit_fill_level() > 0)
            if not busy or time.monotonic() >= deadline:
                break
        return self.last_tx_ts_ns

