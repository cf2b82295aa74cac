"""A ``packet`` VI's state and control path: its AF_PACKET socket and rings, the posted
RX descriptor FIFO, the pending-event queue, the TX completion FIFO, and the socket
filter. The RX path (:mod:`.rx`) and TX path (:mod:`.tx`) build on it;
:class:`~efvi.adapters.packet.vi.PacketVI` puts them together."""

from __future__ import annotations

import errno
import select
import socket
import struct
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from efvi.adapters.base import HwVI
from efvi.adapters.packet.filter_prog import MISMATCH_KINDS, compile_filters
from efvi.adapters.packet.ring import V3_MIN_STRIDE, Frames, PacketSocket
from efvi.constants import EF_VI_RX_EVENT_MERGE, EF_VI_TX_TIMESTAMPS, PKT_BUF_SIZE
from efvi.errors import SetupError
from efvi.events import event_array
from efvi.filters import FilterKind, FilterSpec

if TYPE_CHECKING:
    from efvi.adapters.packet.pd import PacketPD

# SO_TIMESTAMPING (linux/net_tstamp.h, asm-generic/socket.h, linux/errqueue.h)
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_TX_HARDWARE = 1 << 0
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
_TS3 = struct.Struct("=qqqqqq")  # struct scm_timestamping: sw, (legacy), hw


class PacketVIBase(HwVI):
    """A VI's state and control path; see :class:`~efvi.adapters.packet.vi.PacketVI`."""

    rx_buffer_len = PKT_BUF_SIZE
    rx_prefix_len = 0

    def __init__(self, pd: PacketPD, rxq: int, txq: int, evq: int, queue: int | None,
                 flags: int = 0) -> None:
        a = pd.adapter
        self.pd = pd
        self.adapter = a
        self.q_id = queue or 0
        self.clock_source = a.clock_source
        self.specs: list[FilterSpec] = []
        self.fanout: int | None = None
        self.closed = False
        # the kernel ring holds at least as many frames as the VI can have buffers
        # posted (a burst the VI could take must not overflow the ring first)
        slots = a.ring_slots or max(256, (4 << 20) // max(2048, _pow2(a.snaplen + 72)),
                                    _pow2(rxq))
        v3 = bool(rxq) and (a.rx_ring == "v3" or (a.rx_ring == "auto"
                                                   and bool(flags & EF_VI_RX_EVENT_MERGE)))
        blocks = _block_geometry(rxq, slots * 2048 if a.ring_slots else 4 << 20,
                                 a.retire_ms) if v3 else None
        self._geo = dict(rx_slots=slots if rxq else 0, rx_frame=a.snaplen, tx_slots=txq,
                         tx_frame=a.max_frame + 4, blocks=blocks)
        if a.broker is not None:
            self._s = a.broker.socket([], **self._geo)  # type: ignore[arg-type]
        else:
            self._s = PacketSocket(a.iface, slots if rxq else 0, a.snaplen, txq,
                                   a.max_frame + 4, qdisc_bypass=a.qdisc_bypass,
                                   hw_timestamps=a.hw_ts, reject_all=compile_filters([]),
                                   blocks=blocks)
        self._rx = self._s.rx
        self._blocks = self._s.rx_blocks
        self._tx = self._s.tx
        self._cur = 0  # V2: the next slot to look at; V3: the block being read
        self._bfr: Frames | None = None  # V3: the frames of block _cur, once opened
        self._bpos = 0  # V3: how many of them have been taken
        # posted RX descriptors (FIFO)
        rs = max(rxq, 2)
        self._d_addr = np.zeros(rs, np.uint64)
        self._d_id = np.zeros(rs, np.uint32)
        self._d_mask = rs - 1
        #: 0, 2 KiB, 4 KiB, ...: a run of buffers posted in address order, from its first
        self._iota2k = np.arange(rs, dtype=np.uint64) * np.uint64(PKT_BUF_SIZE)
        self._d_head = self._d_tail = 0
        # events made while taking frames, handed out by harvest
        self._pend = event_array(2 * rs + 64)
        self._pend_words = self._pend.view(np.uint64).reshape(-1, 3)
        self._pend_u32 = self._pend.view(np.uint32).reshape(-1, 6)
        self._pend_i64 = self._pend.view(np.int64).reshape(-1, 3)
        self._np = 0  # pending events are self._pend[self._ph:self._np]
        self._ph = 0
        # TX completion FIFO: one entry per frame
        ts_ = max(txq, 2)
        self._c_slot = np.zeros(ts_, np.int64)
        self._c_ndesc = np.zeros(ts_, np.uint32)
        self._c_len = np.zeros(ts_, np.uint32)
        self._c_mask = ts_ - 1
        self._c_head = self._c_tail = 0
        self._slot_next = 0
        self._desc_done = 0
        self._kick_err = 0
        self.c: dict[str, int] = dict.fromkeys(
            ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_nodesc_drops",
             "rx_trunc_drops", "rx_nodesc_trunc_drops", "rx_ring_drops", "tx_too_big_drops",
             "tx_link_down_drops",
             "rx_kernel_packets", "tx_kick_errors"), 0)
        # TX timestamps (EF_VI_TX_TIMESTAMPS): SO_TIMESTAMPING stamps from the error
        # queue, keyed by OPT_ID (the socket's count of frames sent); the TX ring's own
        # tp_sec/tp_nsec stay empty on veth/lo (skb->tstamp is unset when the slot
        # comes back), so the error queue is the path that works on every driver
        self._tx_ts = bool(flags & EF_VI_TX_TIMESTAMPS) and txq > 0
        self._ts_next = 0  # OPT_ID key of the next frame the ring completes
        self._ts_key = np.full(ts_, -1, np.int64)  # key whose stamps the slot holds
        self._ts_sw = np.zeros(ts_, np.int64)
        self._ts_hw = np.zeros(ts_, np.int64)
        if self._tx_ts:
            self.c["tx_timestamp_missing"] = 0
            self._enable_tx_ts(self._s)
        self._poller = select.poll()
        self._poller.register(self._s.fileno(), select.POLLIN)

    def _enable_tx_ts(self, s: PacketSocket) -> None:
        """Ask the kernel for a software (and, with ``hw_ts``, hardware) TX stamp of
        every frame this socket sends, payload-less, keyed by OPT_ID."""
        assert s.sock is not None
        want = (SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
                | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY)
        if self.adapter.hw_ts:
            want |= SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE
        try:
            s.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, want)
        except OSError as exc:
            raise SetupError(f"cannot enable TX timestamps on {self.adapter.iface!r}: "
                             f"{exc.strerror}", errno=exc.errno or errno.EINVAL,
                             hint="open the VI without ViFlags.TX_TIMESTAMPS") from None
        self._ts_next = 0
        self._ts_key[:] = -1

    def _drain_tx_stamps(self) -> None:
        """Move every stamp waiting in the socket's error queue into the per-frame
        table. Cost: one ``recvmsg`` per stamp plus one that finds the queue empty;
        never raises."""
        sock = self._s.sock
        if sock is None:
            return
        mask = self._c_mask
        while True:
            try:
                _, anc, _, _ = sock.recvmsg(0, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except OSError:
                return
            sw = hw = 0
            key = -1
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPING \
                        and len(data) >= _TS3.size:
                    s0, n0, _, _, s2, n2 = _TS3.unpack_from(data)
                    sw = s0 * 1_000_000_000 + n0
                    hw = s2 * 1_000_000_000 + n2
                elif len(data) >= _EE.size:
                    _, origin, _, _, _, info, k = _EE.unpack_from(data)
                    if origin == SO_EE_ORIGIN_TIMESTAMPING and info == SCM_TSTAMP_SND:
                        key = k
            if key < 0:
                continue
            # keys are u32; frames in flight span less than the ring, so the low bits
            # of the running count find the entry
            full = self._ts_next + ((key - self._ts_next) & 0xFFFFFFFF)
            i = full & mask
            if self._ts_key[i] != full:
                self._ts_key[i] = full
                self._ts_sw[i] = self._ts_hw[i] = 0
            if sw:
                self._ts_sw[i] = sw
            if hw:
                self._ts_hw[i] = hw

    def _tx_stamps(self, sent: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        """The stamp of each completed frame (``sent``: it went to the ring, in order),
        hardware first, then software, else 0 (counted in ``tx_timestamp_missing``)."""
        self._drain_tx_stamps()
        out = np.zeros(sent.shape[0], np.int64)
        n = int(np.count_nonzero(sent))
        if n:
            full = self._ts_next + np.arange(n, dtype=np.int64)
            i = full & self._c_mask
            ok = self._ts_key[i] == full
            st = np.where(self._ts_hw[i] != 0, self._ts_hw[i], self._ts_sw[i])
            st = np.where(ok, st, 0)
            out[sent] = st
            self._ts_key[i] = -1
            self._ts_next += n
            self.c["tx_timestamp_missing"] += int(np.count_nonzero(st == 0))
        return out

    # ---- control -------------------------------------------------------------------------
    def _apply_filter(self) -> None:
        if self.closed or (self._rx is None and self._blocks is None):
            return
        a = self.adapter
        if a.broker is not None:
            if any(s.kind in MISMATCH_KINDS for s in self.specs):
                from efvi.errors import UnsupportedError
                raise UnsupportedError("mismatch filters need every VI's filters on the "
                                       "interface: not available through efvid; run as root")
            self._swap_socket(a.broker.socket(self.specs, replaces=self._s,
                                              **self._geo))  # type: ignore[arg-type]
            return
        others = a._others_for(self) if any(s.kind in MISMATCH_KINDS
                                            for s in self.specs) else []
        prog = compile_filters(self.specs, others=others, snaplen=a.snaplen,
                               direction=a.direction,
                                    kernel_mcast=a.kernel_mcast() if others or any(
                                        s.kind == FilterKind.MULTICAST_MISMATCH
                                        for s in self.specs) else ())
        self._s.set_filter(prog)

    def _swap_socket(self, new: PacketSocket) -> None:
        """Switch to a socket with a new (locked) filter from efvid. Frames waiting in
        the old ring are counted in ``rx_swap_drops``; TX in flight must have completed
        (SetupError otherwise: poll until the TX events came back)."""
        if self._c_head != self._c_tail:
            new.close()
            raise SetupError("cannot change this VI's filters through efvid while it has "
                             "TX in flight", errno=errno.EBUSY,
                             hint="poll until its TX events came back, then retry")
        old = self._s
        self.c["rx_swap_drops"] = self.c.get("rx_swap_drops", 0) + old.ready_frames()
        if self.fanout is not None:
            new.join_fanout(self.fanout)
        self._poller.unregister(old.fileno())
        self._s, self._rx, self._blocks, self._tx = new, new.rx, new.rx_blocks, new.tx
        self._cur, self._bfr, self._bpos = 0, None, 0
        self._slot_next = 0
        if self._tx_ts:
            self._enable_tx_ts(new)
        self._poller.register(new.fileno(), select.POLLIN)
        old.close()

    def join_fanout(self, gid: int) -> None:
        if self.fanout is not None:
            raise OSError(errno.EALREADY, "already in a fanout group")
        self._s.join_fanout(gid)
        self.fanout = gid


    # ---- the pending-event queue (RX events and SW events wait here for harvest) ---------
    def _room(self) -> int:
        """Free pending-event slots (compacting the queue to its front if that helps)."""
        free = self._pend.shape[0] - self._np
        if self._ph and free < self._pend.shape[0] // 2:
            n = self._np - self._ph
            self._pend[:n] = self._pend[self._ph:self._np].copy()
            self._ph, self._np = 0, n
            free = self._pend.shape[0] - n
        return int(free)

    def _event(self, etype: int, flags: int, rq_id: int, length: int, ts: int,
               subtype: int = 0) -> None:
        e = self._pend[self._np]
        e["type"], e["subtype"], e["flags"], e["q_id"] = etype, subtype, flags, self.q_id
        e["ofs"], e["rq_id"], e["len"], e["ts_ns"] = 0, rq_id, length, ts
        self._np += 1


def _block_geometry(rxq: int, total: int, retire_ms: int) -> tuple[int, int, int]:
    """(block size, blocks, retire ms) of a V3 ring: a block holds at most half the VI's
    RX ring in minimum-size frames (so a whole block finds buffers when the VI reposts
    as it goes), 8 KiB .. 4 MiB; at least 4 blocks, ``total`` bytes in all."""
    bs = 8192
    while bs * 2 <= min(4 << 20, max(rxq, 64) // 2 * V3_MIN_STRIDE):
        bs *= 2
    return bs, max(4, total // bs), retire_ms


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p
