"""UDP ping-pong round-trip latency (ef_vi's ``eflatency``), efvi and kernel sockets.

``ping`` sends a datagram and busy-polls (or blocks) for the reply, ``pong`` answers
each datagram with one of the same size. The efvi side opens a
:class:`~efvi.apps.udp.UdpEndpoint` for its setup (filter, kept kernel socket, MAC,
header template) and then runs the one-packet-in-flight fast path directly on the VI:

* the frame is built once per payload size in a TX buffer (or the VI's PIO area) and
  re-sent as is — one ``transmit`` (one doorbell; a ``sendto`` kick in AF_XDP copy
  mode) per round trip, no payload copy, no checksum work;
* the reply is taken with :meth:`~efvi.vi.VirtualInterface.poll_rx1` (the first RX
  event's id/len/ts, no event object, no numpy) and its buffer is re-posted at once;
* TX completions are reaped every few round trips, off the timed path's critical
  section (after the reply arrived).

The kernel side (``kernel=True``) runs the same exchange over plain UDP sockets,
busy ``recv(MSG_DONTWAIT)`` or blocking ``recv``. Round trips are measured with
``time.perf_counter_ns`` (the adapter's clock on a ``sim`` with the virtual clock) and
summarised like eflatency: ``paylen mean min 50% 95% 99% max`` in µs.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from efvi.apps.udp import UdpEndpoint, UdpStack
from efvi.apps.udp_frames import TxTemplate
from efvi.constants import PIO_ALIGN, PKT_BUF_SIZE
from efvi.errors import SetupError
from efvi.events import EventType

_TX = int(EventType.TX)
_TXERR = int(EventType.TX_ERROR)
_RX = int(EventType.RX)
_U16 = struct.Struct("!H")
DEFAULT_PORT = 8080
KERNEL_PORT_OFFSET = 1  # the kernel exchange uses PORT + 1 (never stolen by a filter)
RETRY_NS = 200_000_000  # a round trip with no reply after this long is re-sent (lost)
MAX_LOST_IN_A_ROW = 25  # × RETRY_NS: the peer is considered gone


@dataclass
class LatencyStats:
    """One size's round trips (ns), summarised in µs as eflatency prints them."""

    impl: str
    paylen: int
    rtt_ns: npt.NDArray[np.int64]
    lost: int = 0

    def summary(self) -> dict[str, float | int | str]:
        r = self.rtt_ns
        if r.size == 0:
            return {"impl": self.impl, "paylen": self.paylen, "n": 0, "lost": self.lost}
        q = np.percentile(r, [50, 95, 99])
        return {"impl": self.impl, "paylen": self.paylen, "n": int(r.size), "lost": self.lost,
                "mean": float(r.mean()) / 1e3, "min": int(r.min()) / 1e3,
                "50%": float(q[0]) / 1e3, "95%": float(q[1]) / 1e3, "99%": float(q[2]) / 1e3,
                "max": int(r.max()) / 1e3}


@dataclass
class LatencyConfig:
    iters: int = 100_000
    sizes: list[int] = field(default_factory=lambda: [0])
    warm: int = 10_000
    block: bool = False
    pio: bool = False
    port: int = DEFAULT_PORT


def parse_sizes(text: str) -> list[int]:
    """eflatency's ``-s``: ``N``, ``a,b,c`` or ``a:b:step``."""
    try:
        if ":" in text:
            parts = [int(x) for x in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0:
                raise ValueError
            out = list(range(parts[0], parts[1] + 1, parts[2]))
        else:
            out = [int(x) for x in text.split(",") if x != ""]
    except ValueError:
        raise SetupError(f"bad payload sizes {text!r}", errno=errno.EINVAL,
                         hint="give N, a,b,c or a:b:step (bytes)") from None
    if not out or min(out) < 0:
        raise SetupError(f"bad payload sizes {text!r}", errno=errno.EINVAL,
                         hint="sizes are ≥ 0 bytes")
    return out


def _frame(t: TxTemplate, paylen: int) -> bytes:
    """A whole frame from a header template (IPv4 and UDP checksums filled in)."""
    from efvi.wire.checksum import ones_sum
    payload = bytes((i * 7) & 0xFF for i in range(paylen))
    b = bytearray(t.hdr + payload)
    tot = 28 + paylen
    s = t.ip_sum + tot
    s = (s & 0xFFFF) + (s >> 16)
    _U16.pack_into(b, 16, tot)
    _U16.pack_into(b, 24, ~s & 0xFFFF)
    ulen = 8 + paylen
    _U16.pack_into(b, 38, ulen)
    _U16.pack_into(b, 40, ~ones_sum(payload, t.udp_sum + ulen + ulen) & 0xFFFF or 0xFFFF)
    if len(b) < 60:
        b += bytes(60 - len(b))
    return bytes(b)


class EfviSide:
    """One end of the efvi exchange (the fast path; see the module doc)."""

    def __init__(self, url: str, cfg: LatencyConfig, peer: tuple[str, int] | None,
                 local_ip: str | None = None) -> None:
        self.cfg = cfg
        self.ep = UdpEndpoint(url, (local_ip, cfg.port), remote=peer)
        self.st: UdpStack = self.ep.stack
        self.vi = self.st.vi
        self.peer = peer
        self.pio = False
        if cfg.pio:
            self.st.driver.require("pio", who_has="sim or xdp")
            self.pio = True
        self._frames: dict[int, tuple[int, int]] = {}  # paylen -> (dma, len)
        self._next_tx = 0
        sim = self.st.caps.adapter == "sim"
        clk = getattr(self.st.adapter, "port", None)
        self.virtual = sim and getattr(getattr(clk, "clock", None), "source", "") == "virtual"
        self.now: Callable[[], int] = (self.st.driver.now_ns if self.virtual
                                       else time.perf_counter_ns)
        self.unsent = 0
        self.lost = 0
        #: RX frames taken by a poll() (reap, or an event poll_rx1 left): (id, ofs, len, ts)
        self._held: deque[tuple[int, int, int, int]] = deque()

    # -- frames --
    def stage(self, t: TxTemplate, paylen: int) -> tuple[int, int]:
        """Build the frame for ``paylen`` once, in a TX buffer or the PIO area."""
        frame = _frame(t, paylen)
        if len(frame) > PKT_BUF_SIZE:
            raise SetupError(f"a {paylen}-byte payload makes a {len(frame)}-byte frame; "
                             f"at most {PKT_BUF_SIZE - 42} bytes here", errno=errno.EMSGSIZE,
                             hint="use smaller -s sizes")
        if self.pio:
            pio = self.vi.pio
            off = self._next_tx
            if off + len(frame) > pio.size:
                off = 0  # only one size is in flight at a time
            pio.copy(off, frame)
            self._next_tx = (off + len(frame) + PIO_ALIGN - 1) // PIO_ALIGN * PIO_ALIGN
            dma = pio.dma_addr + off
        else:
            i = self.st.take_tx()
            if i < 0:
                raise SetupError("no TX buffer for the latency frame", errno=errno.ENOBUFS)
            b = i * PKT_BUF_SIZE
            self.st.mv[b:b + len(frame)] = frame
            dma = self.st.base + b
        return dma, len(frame)

    def frame_for(self, paylen: int) -> tuple[int, int]:
        f = self._frames.get(paylen)
        if f is None:
            assert self.peer is not None
            t = self.ep._tx.get((int.from_bytes(socket.inet_aton(self.peer[0]), "big"),
                                 self.peer[1])) or self.ep._template(*self.peer)
            f = self._frames[paylen] = self.stage(t, paylen)
        return f

    # -- the loop's pieces --
    def reap(self) -> None:
        """Take every waiting event: TX completions give their ring slots back; an RX
        frame found here (the next ping may already be in) is kept for
        :meth:`wait_rx`, never dropped. Off the critical path."""
        vi = self.vi
        b = vi.poll()
        if len(b):
            for t, _s, fl, _q, o, rq, ln, ts in b.records.tolist():
                self._other(t, fl, o, rq, ln, ts)

    def _other(self, t: int, fl: int, o: int, rq: int, ln: int, ts: int) -> None:
        if t == _TX or t == _TXERR:
            self.vi._unbundle_to(rq)
        elif t == _RX and not fl & 2:
            self._held.append((rq, o, ln, ts))
        elif t == _RX or t == 2:  # a chain piece or a discard: not a ping
            self.vi.receive_post(self.st.base + rq * PKT_BUF_SIZE, rq)

    def wait_rx(self, deadline_ns: int, idle: Callable[[], object] | None) -> int:
        """Poll until a whole-frame RX arrives (its id, ``vi.rx1`` set) or the
        deadline passes (-1). Busy by default; ``block`` sleeps in the adapter's wait."""
        vi = self.vi
        held = self._held
        if held:  # frames reap()/_take_other() found first, in arrival order
            i, o, ln, ts = held.popleft()
            rx1 = vi.rx1
            rx1[0], rx1[1], rx1[2] = o, ln, ts
            return i
        poll1 = vi.poll_rx1
        block = self.cfg.block
        spins = 0
        while True:
            i = poll1()
            if i >= 0:
                return i
            if i == -2:
                i = self._take_other()
                if i >= 0:
                    return i
                continue
            if idle is not None:
                idle()
            elif block:
                vi.eventq_wait(1_000_000)
            spins += 1
            if spins & 255 == 0 and self.now() >= deadline_ns:
                return -1

    def _take_other(self) -> int:
        """The next event is not a plain RX (a TX completion on sim, a chain): take one
        event with poll(); return an RX frame's id found there (``vi.rx1`` set), else -1."""
        vi = self.vi
        b = vi.poll(1)
        for t, _s, fl, _q, o, rq, ln, ts in b.records.tolist():
            self._other(t, fl, o, rq, ln, ts)
        if self._held:
            i, o, ln, ts = self._held.popleft()
            rx1 = vi.rx1
            rx1[0], rx1[1], rx1[2] = o, ln, ts
            return i
        return -1

    def close(self) -> None:
        self.ep.close()


def efvi_ping(side: EfviSide, paylen: int, iters: int, warm: int,
              idle: Callable[[], object] | None = None,
              stop: list[bool] | None = None) -> LatencyStats:
    """``warm`` + ``iters`` round trips of ``paylen`` bytes; RTTs of the last ``iters``.

    The timed section: transmit (one doorbell) → poll_rx1 spin → clock read. Reposting
    the reply's buffer and reaping TX completions come after the clock read."""
    vi = side.vi
    dma, ln = side.frame_for(paylen)
    base = side.st.base
    transmit = vi.transmit
    repost = vi.receive_post
    wait = side.wait_rx
    now = side.now
    out = np.zeros(iters, np.int64)
    lost = 0
    total = warm + iters
    k = 0
    row = 0  # round trips lost in a row
    txid = 0
    while k < total:
        t0 = now()
        if transmit(dma, ln, txid):
            side.reap()
            continue
        i = wait(t0 + RETRY_NS, idle)
        t1 = now()
        if i < 0:
            lost += 1
            row += 1
            if (stop is not None and stop[0]) or row >= MAX_LOST_IN_A_ROW:
                break
            continue
        row = 0
        repost(base + i * PKT_BUF_SIZE, i)
        if k >= warm:
            out[k - warm] = t1 - t0
        k += 1
        if not k & 0x3FF and stop is not None and stop[0]:  # a stop between answered trips
            break
        if vi.transmit_space() < 16:
            side.reap()
    done = max(0, k - warm)
    return LatencyStats("efvi", paylen, out[:done], lost)


class EfviPonger:
    """The pong side: each datagram is answered with one of the same size to its sender;
    the reply frame for each size is built once (from the first ping's addresses) and
    re-sent as is."""

    def __init__(self, side: EfviSide) -> None:
        self.side = side
        self.frames: dict[int, tuple[int, int]] = {}
        self.served = 0

    def answer(self, i: int) -> None:
        side = self.side
        vi = side.vi
        st = side.st
        ofs, ln = vi.rx1[0], vi.rx1[1]
        f = self.frames.get(ln)
        if f is None:
            f = self.frames[ln] = _reply_frame(side, st.mv, i * PKT_BUF_SIZE + ofs, ln)
        vi.receive_post(st.base + i * PKT_BUF_SIZE, i)
        if f[1] and vi.transmit(f[0], f[1], 0):
            side.reap()
            vi.transmit(f[0], f[1], 0)
        self.served += 1
        if vi.transmit_space() < 16:
            side.reap()

    def step(self) -> None:
        """Answer what is waiting, without waiting (the in-process sim peer's turn)."""
        side = self.side
        while True:
            if side._held:
                i = side.wait_rx(0, None)
            else:
                i = side.vi.poll_rx1()
            if i == -2:
                i = side._take_other()
            if i < 0:
                return
            self.answer(i)

    def run(self, count: int | None, stop: list[bool] | None = None,
            idle_timeout_ns: int | None = None) -> int:
        """Answer ``count`` datagrams (None: until ``stop`` or ``idle_timeout_ns`` with
        nothing after the first). Returns the number answered."""
        side = self.side
        last = side.now()
        while count is None or self.served < count:
            i = side.wait_rx(side.now() + 100_000_000, None)
            if i < 0:
                if stop is not None and stop[0]:
                    break
                if idle_timeout_ns is not None and self.served and \
                        side.now() - last > idle_timeout_ns:
                    break
                continue
            self.answer(i)
            last = side.now()
            if not self.served & 1023 and stop is not None and stop[0]:
                break
        return self.served


def _reply_frame(side: EfviSide, mv: memoryview, b: int, ln: int) -> tuple[int, int]:
    """The reply to the ping at ``mv[b:b+ln]``: addresses swapped, same payload size."""
    if ln < 42 or mv[b + 12] != 8 or mv[b + 13] != 0:
        return (0, 0)
    ihl = (mv[b + 14] & 0xF) * 4
    src = int.from_bytes(mv[b + 26:b + 30], "big")
    sport = int.from_bytes(mv[b + 14 + ihl:b + 16 + ihl], "big")
    ulen = int.from_bytes(mv[b + 18 + ihl:b + 20 + ihl], "big")
    peer = (socket.inet_ntoa(src.to_bytes(4, "big")), sport)
    t = TxTemplate(bytes(mv[b + 6:b + 12]), side.st.info.mac, side.ep._lip, src,
                    side.cfg.port, sport, 64)
    side.peer = peer
    return side.stage(t, ulen - 8)


# ---- kernel sockets ---------------------------------------------------------------------
class KernelSide:
    """The same exchange over a plain UDP socket (busy ``MSG_DONTWAIT`` or blocking)."""

    def __init__(self, local_ip: str, port: int, block: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, port))
        self.block = block
        self.sock.settimeout(0.2 if block else None)
        if not block:
            self.sock.setblocking(False)

    def ping(self, peer: tuple[str, int], paylen: int, iters: int, warm: int,
             stop: list[bool] | None = None) -> LatencyStats:
        s = self.sock
        msg = bytes(paylen)
        out = np.zeros(iters, np.int64)
        now = time.perf_counter_ns
        recv = s.recv
        send = s.sendto
        block = self.block
        lost = 0
        row = 0
        k = 0
        total = warm + iters
        while k < total:
            t0 = now()
            send(msg, peer)
            got = False
            if block:
                try:
                    recv(65536)
                    got = True
                except (TimeoutError, OSError):
                    pass
            else:
                spins = 0
                while True:
                    try:
                        recv(65536)
                        got = True
                        break
                    except BlockingIOError:
                        spins += 1
                        if spins & 1023 == 0 and now() - t0 > RETRY_NS:
                            break
            t1 = now()
            if not got:
                lost += 1
                row += 1
                if (stop is not None and stop[0]) or row >= MAX_LOST_IN_A_ROW:
                    break
                continue
            row = 0
            if k >= warm:
                out[k - warm] = t1 - t0
            k += 1
            if not k & 0x3FF and stop is not None and stop[0]:
                break
        return LatencyStats("kernel", paylen, out[:max(0, k - warm)], lost)

    def pong(self, count: int | None, stop: list[bool] | None = None,
             idle_timeout_ns: int | None = None) -> int:
        """Echo ``count`` datagrams back to their senders (None: until stopped/idle)."""
        s = self.sock
        served = 0
        last = time.perf_counter_ns()
        recvfrom = s.recvfrom
        sendto = s.sendto
        spins = 0
        while count is None or served < count:
            try:
                data, src = recvfrom(65536)
            except (BlockingIOError, TimeoutError):
                spins += 1
                if self.block or spins & 1023 == 0:
                    if stop is not None and stop[0]:
                        break
                    if idle_timeout_ns is not None and served and \
                            time.perf_counter_ns() - last > idle_timeout_ns:
                        break
                continue
            sendto(data, src)
            served += 1
            last = time.perf_counter_ns()
            if not served & 1023 and stop is not None and stop[0]:
                break
        return served

    def close(self) -> None:
        self.sock.close()


def table(stats: list[LatencyStats]) -> list[str]:
    """eflatency's table: ``paylen mean min 50% 95% 99% max`` (µs)."""
    lines = ["#\tpaylen\tmean\tmin\t50%\t95%\t99%\tmax"]
    for st in stats:
        s = st.summary()
        if not s["n"]:
            lines.append(f"\t{st.paylen}\t(no round trips completed)")
            continue
        lines.append("\t" + "\t".join(
            [str(st.paylen)] + [f"{float(s[k]):.3f}" for k in
                                ("mean", "min", "50%", "95%", "99%", "max")]))
    return lines


@dataclass
class LatencyReport:
    role: str
    url: str
    frame_len: dict[int, int] = field(default_factory=dict)
    tx_mode: str = "dma"
    clock: str = "perf_counter"
    results: list[LatencyStats] = field(default_factory=list)
    served: int = 0
    peer: tuple[str, int] | None = None

    def p50_ratio(self) -> float | None:
        """p50 of efvi / p50 of kernel sockets over the sizes both measured."""
        e = {s.paylen: s for s in self.results if s.impl == "efvi" and s.rtt_ns.size}
        k = {s.paylen: s for s in self.results if s.impl == "kernel" and s.rtt_ns.size}
        common = sorted(set(e) & set(k))
        if not common:
            return None
        return float(np.median([np.median(e[p].rtt_ns) / np.median(k[p].rtt_ns)
                                for p in common]))


def _sim_peer(url: str, peer_ip: str | None) -> tuple[str, str | None, str]:
    """A sim ping URL without a cross-process wire gets an in-process pong on the other
    end of its wire: (ping url, pong url or None, peer ip)."""
    from efvi.adapters import parse_url
    scheme, iface, _q, opts = parse_url(url)
    if scheme != "sim" or opts.get("wire", "").startswith("@"):
        return url, None, peer_ip or ""
    wire = opts.get("wire") or "efvi-latency"
    if "wire" not in opts:
        url += ("&" if "?" in url else "?") + f"wire={wire}"
    if "ip" not in opts:
        url += "&ip=198.18.254.1"
    pip = peer_ip or "198.18.254.2"
    clock = f"&clock={opts['clock']}" if "clock" in opts else ""
    return url, f"sim:{iface or 'sim0'}-pong?wire={wire}&ip={pip}{clock}", pip


def run_ping(url: str, cfg: LatencyConfig, peer_ip: str | None, *, kernel: bool = False,
             stop: list[bool] | None = None,
             progress: Callable[[str], None] | None = None) -> LatencyReport:
    """eflatency's ping: every size, efvi first, then (``kernel``) kernel sockets."""
    url, pong_url, peer_ip = _sim_peer(url, peer_ip)
    if not peer_ip:
        raise SetupError("ping needs the pong side's address", errno=errno.EDESTADDRREQ,
                         hint="pass --peer IP (the address `efvi latency pong` listens on)")
    rep = LatencyReport("ping", url, tx_mode="pio" if cfg.pio else "dma",
                        peer=(peer_ip, cfg.port))
    ponger: EfviPonger | None = None
    pong_side: EfviSide | None = None
    if pong_url is not None:
        if kernel:
            raise SetupError("--kernel needs a real interface (the sim has no kernel side)",
                             errno=errno.EINVAL, hint="use xdp:IF or packet:IF, or drop --kernel")
        pong_side = EfviSide(pong_url, cfg, None)
        ponger = EfviPonger(pong_side)
    side = EfviSide(url, cfg, (peer_ip, cfg.port))
    try:
        if side.virtual:
            rep.clock = "virtual"
        local_ip = side.ep.local_ip
        for paylen in cfg.sizes:
            if progress:
                progress(f"# efvi: {paylen}-byte payloads, {cfg.warm} warm-up + {cfg.iters}")
            st = efvi_ping(side, paylen, cfg.iters, cfg.warm,
                           idle=ponger.step if ponger is not None else None, stop=stop)
            rep.frame_len[paylen] = side.frame_for(paylen)[1]
            rep.results.append(st)
            if st.rtt_ns.size < cfg.iters and not (stop and stop[0]):  # gave up
                raise SetupError(f"no reply from {peer_ip}:{cfg.port} ({st.lost} lost)",
                                 errno=errno.ETIMEDOUT,
                                 hint="start `efvi latency pong` on the peer first, with the "
                                      "same -n/-s/--warm")
            if stop and stop[0]:
                break
    finally:
        side.close()
        if pong_side is not None:
            pong_side.close()
    if kernel and not (stop and stop[0]):
        ks = KernelSide(local_ip, cfg.port + KERNEL_PORT_OFFSET, cfg.block)
        try:
            for paylen in cfg.sizes:
                if progress:
                    progress(f"# kernel sockets: {paylen}-byte payloads")
                st = ks.ping((peer_ip, cfg.port + KERNEL_PORT_OFFSET), paylen, cfg.iters,
                             cfg.warm, stop=stop)
                rep.results.append(st)
                if stop and stop[0]:
                    break
        finally:
            ks.close()
    return rep


def run_pong(url: str, cfg: LatencyConfig, *, kernel: bool = False,
             stop: list[bool] | None = None, local_ip: str | None = None,
             idle_timeout_s: float = 2.0,
             progress: Callable[[str], None] | None = None) -> LatencyReport:
    """eflatency's pong: answer (warm + iters) × sizes pings over efvi, then the same
    over kernel sockets (``kernel``). Stops early on ``stop`` or when the pinger has
    been silent for ``idle_timeout_s`` after its first ping."""
    count = (cfg.warm + cfg.iters) * len(cfg.sizes)
    rep = LatencyReport("pong", url, tx_mode="pio" if cfg.pio else "dma")
    side = EfviSide(url, cfg, None, local_ip)
    try:
        lip = side.ep.local_ip
        if progress:
            progress(f"# efvi pong on {lip}:{cfg.port}: answering {count} pings")
        ponger = EfviPonger(side)
        rep.served = ponger.run(count, stop, int(idle_timeout_s * 1e9))
        rep.peer = side.peer
    finally:
        side.close()
    if kernel and not (stop and stop[0]):
        ks = KernelSide(lip, cfg.port + KERNEL_PORT_OFFSET, cfg.block)
        try:
            if progress:
                progress(f"# kernel pong on {lip}:{cfg.port + KERNEL_PORT_OFFSET}")
            rep.served += ks.pong(count, stop, int(idle_timeout_s * 1e9))
        finally:
            ks.close()
    return rep
