"""Accelerated UDP endpoints: a socket-like API over a VI (Onload's idea, ef_vi's parts).

An :class:`UdpEndpoint` is opened on any adapter URL with a local ``(ip, port)``,
optional multicast groups and an optional remote. Only its flows are steered to the
VI (``ip4_local``/``ip4_full`` filters); everything else stays with the kernel.

Underneath, every endpoint of one process on one adapter URL (interface and queue)
shares one :class:`UdpStack`: one driver, PD, memory region and VI. Arriving datagrams
are demultiplexed by the filter they matched — their destination ``(ip, port)`` — and
a multicast group joined by several endpoints is delivered to each (the one buffer is
shared, by reference count: user-space replication, because an AF_XDP queue has one
socket). Endpoints that share a stack must be used from one thread (ef_vi's rule for
a VI); endpoints on different URLs share nothing.

Receive:

* :meth:`UdpEndpoint.recv` → ``(payload, ts_ns, (src_ip, src_port))`` or ``None`` when
  nothing is waiting (``timeout`` 0, the default) — ``payload`` is a memoryview into
  the packet buffer, valid until the next ``recv`` on that endpoint (then the buffer
  goes back to the NIC);
* :meth:`UdpEndpoint.recv_batch` → a :class:`UdpBatch` of numpy columns (payload
  offset/length into a preallocated array, ``ts_ns``, source address and port);
* iteration (``for payload, ts, src in ep``) blocks for each datagram;
* :meth:`UdpEndpoint.fileno` is readable when events are waiting (the AF_XDP or packet
  socket; on ``sim`` an eventfd written by the sim's delivery), so ``selectors``,
  ``select.poll`` and ``asyncio`` work; :meth:`UdpEndpoint.arecv` and ``async for`` use
  ``loop.add_reader``. As with edge-triggered readiness, drain with ``recv()`` until
  it returns None before waiting again: one wake-up may cover several datagrams.

Send: :meth:`UdpEndpoint.sendto` / :meth:`UdpEndpoint.send` write the datagram after a
pre-built Ethernet/IPv4/UDP header template (destination MAC from the neighbour table,
resolved by asking the kernel to ARP — netlink ``NTF_USE`` — when missing); the IPv4
checksum is the template's precomputed sum plus the length, the UDP checksum the
pseudo-header sum plus one ``int.from_bytes`` over the payload.

PIO: a connected endpoint opened with ``pio=True`` on an adapter with PIO (sim, xdp)
keeps its header template in two slots of the VI's PIO area and :meth:`UdpEndpoint.send`
writes only the payload, lengths and checksums there, then one ``transmit_pio`` (one
doorbell); a slot is reused only after its TX completion (else the send takes the
DMA-buffer path, counted in ``tx_pio_fallbacks``). ``sendto`` another address,
``send_batch`` and payloads over 1472 bytes use TX buffers as usual.

TX timestamps: open with ``tx_timestamps=True`` (adapters declaring
``capabilities.tx_timestamps``: sim, packet — not xdp, whose veth and generic drivers
have no AF_XDP TX metadata) and each datagram's transmit time comes back with its TX
completion; :attr:`UdpEndpoint.last_tx_ts_ns` holds the newest one and
:meth:`UdpEndpoint.wait_sent` pumps until this endpoint's sends have completed.

Multicast: each endpoint keeps a kernel UDP socket bound to its port (so the kernel
answers nothing with ICMP port-unreachable and no other program takes the port) that
joins its groups (IGMP) with ``IP_MULTICAST_ALL`` off and a drop-everything socket
filter (on ``packet``, which only sniffs, the kernel's copies die there).

Drops are counted by cause in :meth:`UdpEndpoint.stats` (the VI's ``*_drops`` plus the
stack's ``rx_not_udp_drops``, ``rx_no_endpoint_drops``, ``rx_short_drops``,
``rx_discard_drops``, ``rx_chain_drops``, ``tx_error_drops``).

The modules, one concern each: this one is the endpoint (setup, receive, asyncio,
lifecycle); :mod:`efvi.apps.udp_send` its send half (templates, TX buffers, PIO, TX
timestamps); :mod:`efvi.apps.udp_stack` the shared VI and its dispatcher;
:mod:`efvi.apps.udp_kernel` the kernel's side (kept sockets, IGMP joins, ARP);
:mod:`efvi.apps.udp_frames` addresses and header templates.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import select
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from efvi.apps.udp_frames import check_port, ip_int, multicast_mac
from efvi.apps.udp_kernel import check_multicast_on, hold_ports
from efvi.apps.udp_send import UdpSender
from efvi.apps.udp_stack import UdpStack
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import ClosedError, EfviError, SetupError
from efvi.filters import FilterSpec

__all__ = ["UdpBatch", "UdpEndpoint", "UdpStack", "multicast_mac", "open_endpoint"]


@dataclass
class UdpBatch:
    """Datagrams of one :meth:`UdpEndpoint.recv_batch` as numpy columns (no per-datagram
    object). Payload *i* is ``data[offset[i]:offset[i] + length[i]]``; the arrays are
    the endpoint's, valid until its next ``recv_batch``."""

    data: npt.NDArray[np.uint8]
    offset: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    src_ip: npt.NDArray[np.uint32]
    src_port: npt.NDArray[np.uint16]

    def __len__(self) -> int:
        return int(self.length.shape[0])

    def payload(self, i: int) -> memoryview:
        """Datagram ``i``'s payload (a view; convenience, not for the fast path)."""
        o = int(self.offset[i])
        return memoryview(self.data)[o:o + int(self.length[i])]  # type: ignore[arg-type]


class UdpEndpoint(UdpSender):
    """A UDP endpoint whose datagrams bypass the kernel (see the module doc).

    ``local``: ``(ip, port)``, or a port (the interface's first IPv4 address), or
    ``(None, port)`` with ``groups`` (receive only the groups). ``groups``: IPv4
    multicast groups to join. ``remote``: ``(ip, port)`` to connect to (then
    :meth:`send` works and only that peer's datagrams are received). ``dst_mac``:
    the next hop's MAC when the neighbour table cannot give it. ``tx_timestamps``:
    stamp every send (see :attr:`last_tx_ts_ns`; the adapter must declare
    ``capabilities.tx_timestamps``, else UnsupportedError). ``pio``: :meth:`send` to
    the connected remote from PIO-staged frames (see the module doc; the adapter
    must declare ``capabilities.pio``, else UnsupportedError).
    """

    def __init__(self, url: str, local: tuple[str | None, int] | int,
                 *, groups: Iterable[str] = (), remote: tuple[str, int] | None = None,
                 dst_mac: bytes | str | None = None, ttl: int = 64,
                 rx_buffers: int = 1024, tx_buffers: int = 256,
                 tx_timestamps: bool = False, pio: bool = False) -> None:
        if isinstance(local, int):
            local = (None, local)
        lip, lport = local
        self.port = check_port(lport, "local port")
        self.groups = [ip_int(g, "multicast group") for g in groups]
        for g, text in zip(self.groups, groups):
            if not ipaddress.IPv4Address(g).is_multicast:
                raise SetupError(f"{text} is not a multicast group (224.0.0.0/4)",
                                 errno=errno.EINVAL,
                                 hint="groups are 224.0.0.0 .. 239.255.255.255")
        self.remote = None
        if remote is not None:
            ip_int(remote[0], "remote address")
            check_port(remote[1], "remote port")
            self.remote = (remote[0], remote[1])
        self._closed = True
        self._dst_mac = dst_mac
        self._ttl = ttl
        self.last_tx_ts_ns = 0
        self._tx_inflight = 0
        self._pio = pio
        self._pio_slots = []
        self._pio_t = None
        self._pio_k = 0
        self.stack = UdpStack.get(url, rx_buffers=rx_buffers, tx_buffers=tx_buffers,
                                  tx_timestamps=tx_timestamps)
        st = self.stack
        st.users += 1
        self._ksocks: list[socket.socket] = []
        self._specs: list[FilterSpec] = []
        self._keys: list[tuple[int, int]] = []
        self._q: deque[tuple[int, int | memoryview, int, int, int, int]] = deque()
        self._held = -1
        self._tx = {}
        self._src_cache: tuple[int, int, tuple[str, int]] = (-1, -1, ("", 0))
        self._batch_data = np.zeros(0, np.uint8)
        try:
            self._setup(lip)
            if pio:
                self._pio_setup()
        except BaseException:
            self._teardown()
            raise
        self._closed = False


    # ---- control path -----------------------------------------------------------------
    def _setup(self, lip: str | None) -> None:
        st = self.stack
        info = st.info
        ifaddr = info.ipv4[0] if info.ipv4 else None
        if lip is None or lip in ("", "0.0.0.0"):
            if self.groups:
                lip = None  # the groups only
            elif ifaddr is None:
                raise SetupError(f"interface {info.name} has no IPv4 address",
                                 errno=errno.EADDRNOTAVAIL,
                                 hint=f"add one (ip addr add ADDR/LEN dev {info.name}) "
                                      "or pass local=(ip, port)")
            else:
                lip = ifaddr
        self.local_ip = lip if lip is not None else (ifaddr or "0.0.0.0")
        self._lip = ip_int(self.local_ip, "local address")
        if lip is not None and ipaddress.IPv4Address(lip).is_multicast:
            raise SetupError(f"local address {lip} is a multicast group",
                             errno=errno.EINVAL, hint="pass it in groups=[...] instead")
        if lip is not None and info.ipv4 and lip not in info.ipv4:
            raise SetupError(f"{lip} is not an address of {info.name} "
                             f"(it has {', '.join(info.ipv4)})", errno=errno.EADDRNOTAVAIL,
                             hint=f"bind one of {', '.join(info.ipv4)}, or add it: "
                                  f"ip addr add {lip}/24 dev {info.name}")
        if self.groups:
            check_multicast_on(st)
        keys: list[tuple[int, int]] = []
        if lip is not None:
            keys.append((self._lip, self.port))
        keys += [(g, self.port) for g in self.groups]
        for k in keys:
            if k[0] not in self.groups and st.endpoints.get(k):
                raise SetupError(
                    f"{ipaddress.IPv4Address(k[0])}:{k[1]} already has an endpoint on "
                    f"{st.url} in this process", errno=errno.EADDRINUSE,
                    hint="close it first, or use another port")
        hold_ports(st, self.port, lip, self.groups, self._ksocks)
        for k in keys:
            if self.remote is not None and k[0] == self._lip:
                spec = FilterSpec.ip4_full("udp", ipaddress.IPv4Address(k[0]).exploded, k[1],
                                           self.remote[0], self.remote[1])
            else:
                spec = FilterSpec.ip4_local("udp", ipaddress.IPv4Address(k[0]).exploded, k[1])
            if st.caps.adapter == "packet":
                spec = spec.sniff()
            st.add_filter(spec)
            self._specs.append(spec)
            st.endpoints.setdefault(k, []).append(self)
            self._keys.append(k)
        if self.remote is not None:
            self._template(self.remote[0], self.remote[1])


    # ---- receive ----------------------------------------------------------------------
    def _release_held(self) -> None:
        h = self._held
        if h >= 0:
            self._held = -1
            self.stack.release(h)

    def recv(self, timeout: float | None = 0.0
             ) -> tuple[memoryview, int, tuple[str, int]] | None:
        """The next datagram: ``(payload, ts_ns, (src_ip, src_port))``, or None.

        ``timeout``: 0 polls once (the default), None busy-polls until one arrives,
        else seconds to busy-poll. ``payload`` is valid until the next ``recv``.
        Cost (one datagram waiting): one pump of the VI and ~3 µs of Python.
        """
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        if self._held >= 0:
            self._release_held()
        q = self._q
        if not q:
            st = self.stack
            st.pump()
            if not q:
                if timeout == 0:
                    return None
                end = None if timeout is None else time.perf_counter() + timeout
                pump = st.pump
                while not q:
                    pump()
                    if end is not None and not q and time.perf_counter() >= end:
                        return None
                if self._closed:
                    raise ClosedError("UDP endpoint is closed")
        i, at, n, ts, src, sport = q.popleft()
        c = self._src_cache
        if c[0] == src and c[1] == sport:
            addr = c[2]
        else:
            addr = (socket.inet_ntoa(src.to_bytes(4, "big")), sport)
            self._src_cache = (src, sport, addr)
        if isinstance(at, memoryview):
            return at, ts, addr
        self._held = i
        return self.stack.mv[at:at + n], ts, addr

    def recv_batch(self, max_datagrams: int = 256) -> UdpBatch:
        """Up to ``max_datagrams`` waiting datagrams as numpy columns (:class:`UdpBatch`),
        without waiting. Payloads are copied into the endpoint's preallocated array
        (``max_datagrams`` × 2 KiB), so the buffers go straight back to the NIC.
        Cost: one pump plus ~1 µs per datagram (a slice copy each)."""
        if self._closed:
            raise ClosedError("UDP endpoint is closed")
        self._release_held()
        st = self.stack
        q = self._q
        if len(q) < max_datagrams:
            st.pump(max(64, max_datagrams))
        k = min(len(q), max_datagrams)
        stride = PKT_BUF_SIZE
        need = max(max_datagrams, 1) * stride
        if self._batch_data.shape[0] < need:
            self._batch_data = np.zeros(need, np.uint8)
        data = self._batch_data
        length = np.zeros(k, np.int64)
        ts = np.zeros(k, np.int64)
        sip = np.zeros(k, np.uint32)
        sport = np.zeros(k, np.uint16)
        if k:
            items = [q.popleft() for _ in range(k)]
            buf = st.buf
            dmv = memoryview(data)  # type: ignore[arg-type]
            for j, (i, at, n, _t, _s, _p) in enumerate(items):
                o = j * stride
                m = min(n, stride)
                if isinstance(at, memoryview):
                    dmv[o:o + m] = at[:m]
                else:
                    data[o:o + m] = buf[at:at + m]
                    st.release(i)
            cols = list(zip(*[(n, t, s, p) for (_, _, n, t, s, p) in items]))
            length[:] = cols[0]
            ts[:] = cols[1]
            sip[:] = cols[2]
            sport[:] = cols[3]
        return UdpBatch(data, np.arange(k, dtype=np.int64) * stride, length, ts, sip, sport)

    def __iter__(self) -> Iterator[tuple[memoryview, int, tuple[str, int]]]:
        """Blocking iteration (busy-polls); stops when the endpoint is closed."""
        while not self._closed:
            r = self.recv(timeout=None)
            if r is not None:
                yield r

    def fileno(self) -> int:
        """An fd that becomes readable when datagrams (events) are waiting."""
        self._check()
        return self.stack.fileno()

    def pending(self) -> int:
        """Datagrams already taken from the VI and queued for this endpoint."""
        return len(self._q)

    async def arecv(self) -> tuple[memoryview, int, tuple[str, int]]:
        """Await the next datagram (``loop.add_reader`` on :meth:`fileno`)."""
        r = self.recv()
        if r is not None:
            return r
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        while True:
            fut: asyncio.Future[None] = loop.create_future()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(fd, ready)
            try:
                # re-check after registering: a datagram may have come in between
                r = self.recv()
                if r is not None:
                    return r
                await fut
            finally:
                loop.remove_reader(fd)
            self.stack._sim_clear()
            r = self.recv()
            if r is not None:
                return r

    def __aiter__(self) -> AsyncIterator[tuple[memoryview, int, tuple[str, int]]]:
        return self._agen()

    async def _agen(self) -> AsyncIterator[tuple[memoryview, int, tuple[str, int]]]:
        while not self._closed:
            yield await self.arecv()

    # ---- stats and lifecycle ------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """The shared VI's counters and drops by cause, plus this endpoint's queue."""
        self._check()
        s = self.stack.stats()
        s["queued"] = len(self._q)
        return s

    @property
    def closed(self) -> bool:
        return self._closed

    def _teardown(self) -> None:
        st = self.stack
        for k in self._keys:
            lst = st.endpoints.get(k, [])
            if self in lst:
                lst.remove(self)
            if not lst:
                st.endpoints.pop(k, None)
        self._keys.clear()
        while self._q:
            i = self._q.popleft()[0]
            if i >= 0:
                st.release(i)
        self._release_held()
        for spec in self._specs:
            try:
                st.del_filter(spec)
            except EfviError:
                pass
        self._specs.clear()
        st.pio_free.extend(self._pio_slots)
        self._pio_slots.clear()
        self._pio_t = None
        for s in self._ksocks:
            s.close()
        self._ksocks.clear()
        st.close_endpoint()

    def close(self) -> None:
        """Remove the filters, leave the groups, free the buffers (idempotent); the VI
        closes with the last endpoint of the stack."""
        if self._closed:
            return
        self._closed = True
        self._teardown()

    def __enter__(self) -> "UdpEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"UdpEndpoint({self.stack.url!r}, {self.local_ip}:{self.port}, "
                f"groups={[str(ipaddress.IPv4Address(g)) for g in self.groups]}, {state})")


def open_endpoint(url: str, local: tuple[str | None, int] | int, **kw: object
                  ) -> UdpEndpoint:
    """``UdpEndpoint(url, local, **kw)`` (the facade's ``efvi.udp.open``)."""
    return UdpEndpoint(url, local, **kw)  # type: ignore[arg-type]


def wait_readable(fds: list[int], timeout: float) -> bool:
    """select() helper for tools: True when one of ``fds`` is readable."""
    r, _, _ = select.select(fds, [], [], timeout)
    return bool(r)
