"""AF_PACKET sockets with mmap'ed ``TPACKET_V2`` RX and TX rings, as numpy columns.

Why V2 and not V3: V3 packs frames of any length densely into blocks and chains
them with ``tp_next_offset``, so finding frame *k* needs the *k−1* before it (a
per-frame Python walk), and a block is handed over only when full or after
``retire_blk_tov`` ms (latency). V2 puts frame *i* at ``i * frame_size`` with its own
status word, so every header field of every slot is one strided numpy view
(``ring[:, word]``): "which slots are ready", their lengths, MAC offsets, timestamps
and VLAN tags are each one vector operation, and a slot is ours the moment its status
says so. The cost is memory (a slot holds a full frame) — the right trade for a
batch-first consumer. V2 also keeps ``tp_vlan_tci``/``tp_vlan_tpid`` (the tag the
kernel stripped) per frame. (V2 has no block "freeze" counter; PACKET_STATISTICS
gives packets and drops.)

Layout facts (``linux/if_packet.h``):

``tpacket2_hdr`` (32 bytes): u32 status@0, len@4, snaplen@8; u16 mac@12, net@14;
u32 sec@16, nsec@20; u16 vlan_tci@24, vlan_tpid@26. ``TPACKET2_HDRLEN`` = 32 +
``sizeof(sockaddr_ll)`` 20 = 52. On RX the kernel puts the frame at
``TPACKET_ALIGN(52 + 16) + reserve − 14`` = 66 + reserve; we ask for a reserve of 6 so
frames start 8-byte aligned (72), which lets the copy engine move 8-byte words. On TX
the frame goes at ``52 − 20`` = 32 (no ``PACKET_TX_HAS_OFF``).

``TPACKET_V3`` (:class:`BlockRing`) is the other choice, for VIs that ask for merged
RX events (``EF_VI_RX_EVENT_MERGE``): the kernel packs frames into blocks and wakes
the socket once per block (full, or ``retire_ms`` after its first frame), so a
steady-rate receiver wakes a few dozen times a second instead of per frame. The
chain walk is vectorised for the common case — equal strides, as a stream of
same-sized frames gives — by predicting every offset and checking the predicted
``tp_next_offset`` words in one gather (:meth:`BlockRing.frames`); irregular runs are
walked frame by frame. ``tpacket3_hdr`` (48 bytes): u32 next_offset@0, sec@4,
nsec@8, snaplen@12, len@16, status@20; u16 mac@24, net@26; u32 rxhash@28,
vlan_tci@32; u16 vlan_tpid@36. Block header: u32 block_status@8, num_pkts@12,
offset_to_first_pkt@16. With a reserve of 6 the frame starts at
``TPACKET_ALIGN(68 + 16) + 6 − 14`` = 88 past its (16-aligned) header: 8-byte
aligned. A V3 socket's TX ring is V3 too: fixed slots with status@20, len@16 and the
frame at ``68 − 20`` = 48 (:attr:`Ring.data_off`).

Control path (socket set-up) raises :class:`SetupError` with the fix; the data-path
helpers here never raise.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from efvi.bpf.cbpf import Insn, pack_program
from efvi.errors import SetupError
from efvi.hwts import SOF_TIMESTAMPING_RAW_HARDWARE

# ---- constants ---------------------------------------------------------------------
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_RESERVE = 12
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_TIMESTAMP = 17
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_MR_PROMISC = 1
PACKET_MR_ALLMULTI = 2
TPACKET_V2 = 1
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0

SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_LOSING = 1 << 2
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
TP_STATUS_TS_SOFTWARE = 1 << 29
TP_STATUS_TS_RAW_HARDWARE = 1 << 31
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4

TPACKET2_HDRLEN = 52
RX_RESERVE = 6
RX_MAC_OFFSET = 72  # TPACKET_ALIGN(52 + 16) + RX_RESERVE - 14, for Ethernet links
TX_DATA_OFFSET = 32  # TPACKET2_HDRLEN - sizeof(sockaddr_ll)
TPACKET3_HDRLEN = 68
V3_MAC_OFFSET = 88  # TPACKET_ALIGN(68 + 16) + RX_RESERVE - 14
V3_TX_DATA_OFFSET = 48  # TPACKET3_HDRLEN - sizeof(sockaddr_ll)
V3_PKTTYPE_AT = 48 + 10  # sockaddr_ll (after the 48-byte tpacket3_hdr) .sll_pkttype
V3_MIN_STRIDE = 160  # a minimum-size (60-byte) frame's share of a block: ALIGN(88 + 60, 16)

_U32 = npt.NDArray[np.uint32]
_U16 = npt.NDArray[np.uint16]


def mem_available() -> int:
    """``MemAvailable`` from /proc/meminfo in bytes (a large number if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


SO_LOCK_FILTER = 44


def attach_filter(sock: socket.socket, prog: list[Insn]) -> None:
    """``SO_ATTACH_FILTER``: atomically replace the socket's classic BPF program."""
    raw = pack_program(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("<HxxxxxxQ", len(prog), ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise SetupError(
                f"the {len(prog)}-instruction socket filter needs more socket memory than "
                f"net.core.optmem_max ({_optmem_max()} bytes) allows", errno=errno.ENOMEM,
                hint="raise it (sysctl -w net.core.optmem_max=1048576), spread the filters "
                     "over several VIs, or use the xdp adapter") from None
        raise SetupError(f"the kernel refused a {len(prog)}-instruction socket filter: "
                         f"{exc.strerror}", errno=exc.errno or errno.EINVAL,
                         hint="fewer filters per VI, or use the xdp adapter") from None


def _optmem_max() -> int | str:
    try:
        with open("/proc/sys/net/core/optmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return "?"


def ring_geometry(frame_min: int, nframes: int) -> tuple[int, int, int, int]:
    """(block_size, block_nr, frame_size, frame_nr) for ``nframes`` slots of ≥ ``frame_min``.

    ``frame_size`` is a power of two ≥ 2048; a block is one page or one frame, so slots
    are contiguous (slot *i* at ``i * frame_size``).
    """
    fs = 2048
    while fs < frame_min:
        fs <<= 1
    page = mmap.PAGESIZE
    bs = max(fs, page)
    per = bs // fs
    nframes = max(nframes, per)
    nframes = (nframes + per - 1) // per * per
    return bs, nframes // per, fs, nframes


@dataclass
class Ring:
    """One mapped ring: ``mem`` bytes, ``nslots`` slots of ``fs`` bytes, header columns."""

    mem: npt.NDArray[np.uint8]
    nslots: int
    fs: int
    status: _U32
    length: _U32
    snaplen: _U32
    mac: _U16
    sec: _U32
    nsec: _U32
    vlan_tci: _U16
    vlan_tpid: _U16
    data_off: int = TX_DATA_OFFSET  # where a TX frame goes in its slot

    @classmethod
    def over(cls, mem: npt.NDArray[np.uint8], nslots: int, fs: int) -> "Ring":
        w32 = mem.view(np.uint32).reshape(nslots, fs // 4)
        w16 = mem.view(np.uint16).reshape(nslots, fs // 2)
        return cls(mem, nslots, fs, w32[:, 0], w32[:, 1], w32[:, 2], w16[:, 6], w32[:, 4],
                   w32[:, 5], w16[:, 12], w16[:, 13])

    @classmethod
    def over_v3_tx(cls, mem: npt.NDArray[np.uint8], nslots: int, fs: int) -> "Ring":
        """A V3 socket's TX ring: the same slots, ``tpacket3_hdr`` columns."""
        w32 = mem.view(np.uint32).reshape(nslots, fs // 4)
        w16 = mem.view(np.uint16).reshape(nslots, fs // 2)
        return cls(mem, nslots, fs, w32[:, 5], w32[:, 4], w32[:, 3], w16[:, 12], w32[:, 1],
                   w32[:, 2], w16[:, 16], w16[:, 18], V3_TX_DATA_OFFSET)


@dataclass(slots=True)
class Frames:
    """Header columns of ready RX frames (views or gathers); frame *i* is
    ``mem[soff[i]:soff[i] + snaplen[i]]``. V2 slots and V3 blocks both read as this."""

    mem: npt.NDArray[np.uint8]
    soff: npt.NDArray[np.int64]
    length: _U32
    snaplen: _U32
    status: _U32
    sec: _U32
    nsec: _U32
    vlan_tci: npt.NDArray[np.unsignedinteger]
    vlan_tpid: _U16
    hdr: npt.NDArray[np.int64]  # where each frame's tpacket header starts
    pkttype_at: int  # sockaddr_ll.sll_pkttype's offset from the header
    #: TPACKET_V3 frames of one stride: the bytes from one header to the next (0: the
    #: frames are not evenly spaced, or V2 slots), the first header and the frame's
    #: offset from its header — what :meth:`~efvi.adapters.packet.rx.RxPath._take_stride`
    #: reads the frames with, as strided views, without the columns above
    stride: int = 0
    h0: int = 0
    mac: int = 0

    def __len__(self) -> int:
        return int(self.soff.shape[0])

    def part(self, lo: int, hi: int) -> "Frames":
        return Frames(self.mem, self.soff[lo:hi], self.length[lo:hi], self.snaplen[lo:hi],
                      self.status[lo:hi], self.sec[lo:hi], self.nsec[lo:hi],
                      self.vlan_tci[lo:hi], self.vlan_tpid[lo:hi], self.hdr[lo:hi],
                      self.pkttype_at, self.stride, self.h0 + lo * self.stride, self.mac)


#: a run of predicted equal strides shorter than this is walked frame by frame
_MIN_RUN = 8
_V24 = np.dtype((np.void, 24))


@dataclass
class BlockRing:
    """A mapped ``TPACKET_V3`` RX ring: ``nblocks`` blocks of ``bsize`` bytes."""

    mem: npt.NDArray[np.uint8]
    nblocks: int
    bsize: int
    retire_ms: int

    def __post_init__(self) -> None:
        self.w32 = self.mem.view(np.uint32)
        self.w16 = self.mem.view(np.uint16)
        self.words = memoryview(self.mem).cast("I")  # type: ignore[arg-type]
        blocks = self.w32.reshape(self.nblocks, self.bsize // 4)
        self.status = blocks[:, 2]
        self.num_pkts = blocks[:, 3]
        self.first = blocks[:, 4]
        # the first 24 bytes of every header of the block being read (next_offset, sec,
        # nsec, snaplen, len, status), gathered in one strided pass: the checks and
        # columns then read this small contiguous copy, not one cache line per frame
        self._hc = np.empty((self.bsize // 96 + 1, 6), np.uint32)
        self._hcv = self._hc.view(_V24).reshape(-1)

    def ready(self, b: int) -> bool:
        return bool(self.status[b] & TP_STATUS_USER)

    def release(self, b: int) -> None:
        self.status[b] = TP_STATUS_KERNEL

    def frames(self, b: int) -> Frames:
        """The frames of ready block ``b`` as columns (no frame bytes are copied).

        Cost: ~6 numpy calls when the frames have one stride (a stream of equal-sized
        frames: one strided pass copies their headers' first 24 bytes, the columns are
        views of that copy), more per change of stride; then 8 gathers of k elements.
        """
        k = int(self.num_pkts[b])
        base = b * self.bsize
        w32, words = self.w32, self.words
        h = base + int(self.first[b])
        nx = words[h >> 2]
        if k > 1 and nx and h + nx * (k - 1) + 48 <= base + self.bsize:
            # one stride for the whole block (equal-sized frames)? then every column is
            # a strided view of the block: no gathers at all
            hdr: npt.NDArray[np.uint32] = np.ndarray((k, 12), np.uint32, self.mem, h,
                                                     (nx, 4))
            hc = self._hc[:k] if k <= self._hc.shape[0] else hdr
            if hc is not hdr:
                self._hcv[:k] = np.ndarray((k,), _V24, self.mem, h, (nx,))
            if bool((hc[:-1, 0] == nx).all()):
                mac = int(self.w16[(h >> 1) + 12])
                hdrs = np.arange(h, h + nx * k, nx, dtype=np.int64)
                h16: npt.NDArray[np.uint16] = np.ndarray((k, 24), np.uint16, self.mem, h,
                                                         (nx, 2))
                return Frames(self.mem, hdrs + mac, hc[:, 4], hc[:, 3], hc[:, 5],
                              hc[:, 1], hc[:, 2], hdr[:, 8], h16[:, 18], hdrs,
                              V3_PKTTYPE_AT, nx, h, mac)
        offs = np.empty(k, np.int64)
        pos = 0
        while pos < k:
            nx = words[h >> 2]
            m = k - pos
            if m == 1 or nx == 0:  # the last frame (or a chain cut short: stop there)
                offs[pos] = h
                pos += 1
                offs = offs[:pos]
                break
            cand = h + nx * np.arange(m, dtype=np.int64)
            lim = base + self.bsize - 48
            ok = w32[np.minimum(cand[:-1], lim) >> 2] == nx
            run = m if ok.all() else int(ok.argmin()) + 1
            offs[pos:pos + run] = cand[:run]
            pos += run
            h = int(cand[run - 1])
            h += words[h >> 2]
            if run < _MIN_RUN:  # irregular sizes: walk the next frames in Python
                for _ in range(min(64, k - pos)):
                    offs[pos] = h
                    pos += 1
                    step = words[h >> 2]
                    if step == 0:  # a chain cut short: stop there
                        k = pos
                        offs = offs[:pos]
                        break
                    h += step
        i32 = offs >> 2
        return Frames(self.mem, offs + self.w16[(offs >> 1) + 12], w32[i32 + 4], w32[i32 + 3],
                      w32[i32 + 5], w32[i32 + 1], w32[i32 + 2], w32[i32 + 8],
                      self.w16[(offs >> 1) + 18], offs, V3_PKTTYPE_AT)


class PacketSocket:
    """An AF_PACKET socket with a V2 RX ring and/or TX ring, bound to one interface.

    Created receiving nothing (filter ``ret #0``) until :meth:`set_filter`; the
    caller owns it and must :meth:`close` it (unmaps, closes: the kernel then drops
    fanout membership and promiscuous/allmulti references the socket held).
    """

    def __init__(self, ifname: str, rx_slots: int, rx_frame: int, tx_slots: int,
                 tx_frame: int, *, qdisc_bypass: bool = True, hw_timestamps: bool = False,
                 reject_all: list[Insn] | None = None,
                 blocks: tuple[int, int, int] | None = None,
                 configured: socket.socket | None = None, unmapped: bool = False,
                 locked_filter: list[Insn] | None = None) -> None:
        """``blocks`` = (block_size, block_nr, retire_ms) asks for a TPACKET_V3 RX ring
        (:attr:`rx_blocks`; ``rx`` stays None) instead of ``rx_slots`` V2 slots.

        Broker split (``efvid``): the privileged side passes ``unmapped=True`` and
        ``locked_filter`` (attached and locked with ``SO_LOCK_FILTER`` before bind, so
        the socket's owner cannot widen it); the client adopts the descriptor with
        ``configured=`` and the same geometry arguments, and maps the rings."""
        self.sock: socket.socket | None = None
        self._map: mmap.mmap | None = None
        self.rx: Ring | None = None
        self.tx: Ring | None = None
        self.rx_blocks: BlockRing | None = None
        #: the broker's id of this socket when efvid made it (else None)
        self.broker_id: int | None = None
        rx_geo, tx_geo = self._geometry(rx_slots, rx_frame, tx_slots, tx_frame, blocks)
        if configured is not None:
            self.sock = configured
            try:
                self._map_rings(rx_geo, tx_geo, blocks)
            except BaseException:
                self.close()
                raise
            return
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise SetupError("cannot open an AF_PACKET socket", errno=errno.EPERM,
                             hint="needs CAP_NET_RAW: run as root, grant it (`setcap "
                                  "cap_net_raw,cap_net_admin+ep` on the python binary), or "
                                  "start the broker: systemctl enable --now efvid") from None
        s = self.sock
        try:
            if reject_all is not None:
                attach_filter(s, reject_all)
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3 if blocks else TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_RESERVE, RX_RESERVE)
            if tx_slots:
                if qdisc_bypass:
                    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                # a frame the kernel refuses is skipped (we pre-validate sizes and
                # report TX_ERROR ourselves) rather than stalling the ring
                s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
            if hw_timestamps:
                s.setsockopt(SOL_PACKET, PACKET_TIMESTAMP, SOF_TIMESTAMPING_RAW_HARDWARE)
            if rx_geo is not None:
                self._set_ring(PACKET_RX_RING, rx_geo, blocks[2] if blocks else None)
            if tx_geo is not None:
                self._set_ring(PACKET_TX_RING, tx_geo, 0 if blocks else None)
            if not unmapped:
                self._map_rings(rx_geo, tx_geo, blocks)
            if locked_filter is not None:
                attach_filter(s, locked_filter)
                s.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
            try:
                s.bind((ifname, ETH_P_ALL if rx_slots or blocks else 0))
            except OSError as exc:
                raise SetupError(f"cannot bind an AF_PACKET socket to {ifname!r}: "
                                 f"{exc.strerror}", errno=exc.errno or errno.ENODEV,
                                 hint="check the name with `ip link`") from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _geometry(rx_slots: int, rx_frame: int, tx_slots: int, tx_frame: int,
                  blocks: tuple[int, int, int] | None
                  ) -> tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int] | None]:
        """(RX, TX) ring geometry (block size, blocks, frame size, frames) or None."""
        rx_geo = tx_geo = None
        if blocks:
            bs, bn, _ = blocks
            fs = 2048
            while fs < V3_MAC_OFFSET + rx_frame:
                fs <<= 1
            bs = max(bs, fs)
            rx_geo = (bs, bn, fs, bs // fs * bn)
        elif rx_slots:
            rx_geo = ring_geometry(RX_MAC_OFFSET + rx_frame, rx_slots)
        if tx_slots:
            tx_geo = ring_geometry((V3_TX_DATA_OFFSET if blocks else TX_DATA_OFFSET)
                                   + tx_frame, tx_slots)
        return rx_geo, tx_geo

    def _map_rings(self, rx_geo: tuple[int, int, int, int] | None,
                   tx_geo: tuple[int, int, int, int] | None,
                   blocks: tuple[int, int, int] | None) -> None:
        """mmap the RX and TX rings set on the socket (needs no privilege)."""
        assert self.sock is not None
        total = sum(g[0] * g[1] for g in (rx_geo, tx_geo) if g is not None)
        if not total:
            return
        try:
            self._map = mmap.mmap(self.sock.fileno(), total, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise SetupError(f"cannot map a {total}-byte packet ring: {exc.strerror}",
                             errno=exc.errno or errno.ENOMEM,
                             hint="ask for a smaller ring (packet:IF?ring=N)") from None
        mem = np.frombuffer(self._map, dtype=np.uint8)
        off = 0
        if blocks and rx_geo is not None:
            n = rx_geo[0] * rx_geo[1]
            self.rx_blocks = BlockRing(mem[:n], rx_geo[1], rx_geo[0], blocks[2])
            off = n
        elif rx_geo is not None:
            n = rx_geo[2] * rx_geo[3]
            self.rx = Ring.over(mem[:n], rx_geo[3], rx_geo[2])
            off = n
        if tx_geo is not None:
            n = tx_geo[2] * tx_geo[3]
            over = Ring.over_v3_tx if blocks else Ring.over
            self.tx = over(mem[off:off + n], tx_geo[3], tx_geo[2])

    def _set_ring(self, opt: int, geo: tuple[int, int, int, int],
                  v3_tov: int | None = None) -> int:
        bs, bn, fs, fn = geo
        total = bs * bn
        if total >= 1 << 32:
            raise SetupError(f"a {total}-byte packet ring exceeds the kernel's 4 GiB limit",
                             errno=errno.EINVAL, hint="ask for fewer slots (packet:IF?ring=N)")
        avail = mem_available()
        if total > avail // 2:
            raise SetupError(f"a {total}-byte packet ring ({fn} slots of {fs} bytes) does not "
                             f"fit in memory ({avail} bytes available; a ring may take half)",
                             errno=errno.ENOMEM,
                             hint="ask for fewer slots (packet:IF?ring=N) or a smaller "
                                  "snaplen (packet:IF?snaplen=N)")
        try:
            assert self.sock is not None
            req = struct.pack("=4I", bs, bn, fs, fn) if v3_tov is None else \
                struct.pack("=7I", bs, bn, fs, fn, v3_tov, 0, 0)  # tpacket_req3
            self.sock.setsockopt(SOL_PACKET, opt, req)
        except OSError as exc:
            what = "RX" if opt == PACKET_RX_RING else "TX"
            raise SetupError(f"cannot allocate a {total}-byte {what} packet ring "
                             f"({fn} slots of {fs} bytes): {exc.strerror}",
                             errno=exc.errno or errno.ENOMEM,
                             hint="ask for a smaller ring (packet:IF?ring=N) or free "
                                  "memory") from None
        return total

    # ---- control ---------------------------------------------------------------------
    def set_filter(self, prog: list[Insn]) -> None:
        assert self.sock is not None
        attach_filter(self.sock, prog)

    def join_fanout(self, group: int) -> None:
        """Join hash fanout group ``group`` (raises OSError for the caller to retry)."""
        assert self.sock is not None
        self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT,
                             (group & 0xFFFF) | (PACKET_FANOUT_HASH << 16))

    def statistics(self) -> tuple[int, int]:
        """(packets, drops) since the last call: reading resets the kernel's counters."""
        assert self.sock is not None
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops = struct.unpack_from("=II", raw)
        return packets, drops

    def kick(self) -> int:
        """Ask the kernel to send every SEND_REQUEST slot; 0 or an errno. Never blocks."""
        if self.sock is None:
            return errno.EBADF
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except OSError as exc:
            return exc.errno or errno.EIO
        return 0

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def ready_frames(self) -> int:
        """Frames the kernel has put in the RX ring and nobody has taken (control path:
        one numpy pass over the slot or block headers)."""
        if self.rx is not None:
            return int(np.count_nonzero(self.rx.status & TP_STATUS_USER))
        if self.rx_blocks is not None:
            b = self.rx_blocks
            return int(b.num_pkts[(b.status & TP_STATUS_USER) != 0].sum())
        return 0

    def close(self) -> None:
        """Unmap and close (idempotent)."""
        self.rx = self.tx = None
        self.rx_blocks = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a numpy view still exists; the GC unmaps it
                pass
            self._map = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def membership(sock: socket.socket, ifindex: int, mr_type: int, add: bool) -> None:
    """PACKET_ADD/DROP_MEMBERSHIP (promiscuous or all-multicast) on ``ifindex``."""
    mreq = struct.pack("=iHH8s", ifindex, mr_type, 0, bytes(8))
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP if add else PACKET_DROP_MEMBERSHIP, mreq)
