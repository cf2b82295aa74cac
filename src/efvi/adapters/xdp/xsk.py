"""AF_XDP sockets: UMEM registration, the four rings as numpy/memoryview views, bind.

Control path: :class:`XskSocket` construction (socket, setsockopt, mmap, bind) may raise
:class:`~efvi.errors.SetupError` with the errno and the fix. The ring views it exposes
are the data path; see :class:`Ring` for the access rules.

The UMEM is registered in *unaligned chunk* mode with 2048-byte chunks: a fill-ring
address is used as given (the frame lands at ``addr + 256``) and a TX descriptor may
start anywhere and cross 2 KiB boundaries (length ≤ 2048). RX descriptor addresses
carry the offset of the frame in their top 16 bits (``base | ofs << 48``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import mmap
import os
import socket
import struct
import time

from typing import Any

import numpy as np

from efvi.errors import SetupError

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_MAX_TX_SKB_BUDGET = 9

XDP_SHARED_UMEM = 1
XDP_COPY = 2
XDP_ZEROCOPY = 4
XDP_USE_NEED_WAKEUP = 8
XDP_USE_SG = 16
XDP_UMEM_UNALIGNED_CHUNK_FLAG = 1
XDP_RING_NEED_WAKEUP = 1
XDP_OPTIONS_ZEROCOPY = 1
XDP_PKT_CONTD = 1

PGOFF_RX = 0
PGOFF_TX = 0x80000000
PGOFF_FILL = 0x100000000
PGOFF_COMP = 0x180000000

CHUNK_SIZE = 2048
XDP_PACKET_HEADROOM = 256
ADDR_MASK = (1 << 48) - 1
OFFSET_SHIFT = 48

DESC_DTYPE = np.dtype([("addr", "<u8"), ("len", "<u4"), ("options", "<u4")])
STAT_NAMES = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
              "rx_fill_ring_empty_descs", "tx_ring_empty_descs")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


SO_BUSY_POLL = 46
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70


def _fail(what: str, err: int, hint: str = "") -> SetupError:
    if not hint:
        if err == _errno.EPERM:
            hint = "AF_XDP needs CAP_NET_RAW and CAP_NET_ADMIN: run as root"
        elif err == _errno.ENOBUFS:
            hint = ("the UMEM could not be pinned: RLIMIT_MEMLOCK is too low; run as root "
                    "with CAP_IPC_LOCK, raise `ulimit -l`, or register a smaller region")
        elif err == _errno.EAFNOSUPPORT:
            hint = "this kernel has no AF_XDP (CONFIG_XDP_SOCKETS=y); use the packet adapter"
        elif err == _errno.EBUSY:
            hint = ("another AF_XDP socket (maybe another process) holds this queue; "
                    "stop it or pick another queue with xdp:IFNAME@Q")
    return SetupError(f"AF_XDP {what} failed: {os.strerror(err)}", errno=err, hint=hint)


class Ring:
    """One mmap'ed ring: ``prod``/``cons``/``flags`` are 1-element u32 memoryviews
    (single aligned 4-byte accesses), ``desc`` a numpy view of the entries.

    Consumer rule: read ``prod`` once, read entries ``[cons, prod)``, then publish
    ``cons``. Producer rule: write entries, then publish ``prod``. Indices are
    free-running u32; slot = index & mask. (Correct on x86's TSO memory model.)
    """

    def __init__(self, fd: int, pgoff: int, offsets: tuple[int, int, int, int], n: int,
                 dtype: np.dtype[np.generic]) -> None:
        p_off, c_off, d_off, f_off = offsets
        size = d_off + n * dtype.itemsize
        try:
            self.mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        except OSError as exc:
            raise _fail("ring mmap", exc.errno or _errno.ENOMEM) from None
        mv = memoryview(self.mm)
        self.prod = mv[p_off:p_off + 4].cast("I")
        self.cons = mv[c_off:c_off + 4].cast("I")
        self.flags = mv[f_off:f_off + 4].cast("I")
        self.desc: Any = np.frombuffer(self.mm, dtype=dtype, count=n,
                                                           offset=d_off)
        self.size = n
        self.mask = n - 1
        self._mv = mv
        # scalar views for the per-packet path (memoryview indexing beats numpy's)
        self.desc_q = mv[d_off:d_off + n * dtype.itemsize].cast("Q")
        self.desc_i = mv[d_off:d_off + n * dtype.itemsize].cast("I")

    def close(self) -> None:
        for v in (self.prod, self.cons, self.flags, self.desc_q, self.desc_i):
            v.release()
        del self.desc
        self._mv.release()
        try:
            self.mm.close()
        except BufferError:
            pass


class XskSocket:
    """One AF_XDP socket bound to (``ifindex``, ``queue``).

    With ``shared_fd`` it joins the UMEM of that socket (``XDP_SHARED_UMEM``); it
    gets its own FILL/COMPLETION rings (``own_pool``) when bound to a different queue.
    ``zerocopy``: True = require, False = copy mode, None = try zero-copy, fall back.

    Broker split (``efvid``): the privileged side builds the socket with
    ``unmapped=True`` (registered, configured and bound, rings not mapped in the
    broker); the client adopts the descriptor it is sent with ``configured=`` and maps
    the rings into its own address space (mapping a bound socket's rings needs
    Linux ≥ 6.5).
    """

    def __init__(self, ifindex: int, queue: int, *, umem_addr: int, umem_len: int,
                 rx_size: int, tx_size: int, fill_size: int, comp_size: int,
                 shared_fd: int | None = None, zerocopy: bool | None = None,
                 tx_budget: int = 0, sg: bool = False,
                 configured: socket.socket | None = None, unmapped: bool = False) -> None:
        self.ifindex = ifindex
        self.queue = queue
        self.rx: Ring | None = None
        self.tx: Ring | None = None
        self.fill: Ring | None = None
        self.comp: Ring | None = None
        self.zerocopy = False
        #: the broker's id of this socket when ``efvid`` made it (else None)
        self.broker_id: int | None = None
        #: bound with XDP_SHARED_UMEM to another socket's UMEM (maybe another device's)
        self.shared_umem = shared_fd is not None
        if configured is not None:
            # made, registered and bound by a privileged broker (efvid): map its rings
            self.sock = configured
            self.fd = self.sock.fileno()
            try:
                self._map_rings(rx_size, tx_size, fill_size, comp_size)
                self._read_options()
            except SetupError as exc:
                self.close()
                if exc.errno == _errno.EBUSY:
                    raise SetupError("cannot map the rings of the socket efvid bound",
                                     errno=exc.errno,
                                     hint="mapping a bound AF_XDP socket's rings needs "
                                          "Linux >= 6.5; run as root instead") from None
                raise
            except BaseException:
                self.close()
                raise
            return
        try:
            self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise _fail("socket", exc.errno or _errno.EAFNOSUPPORT) from None
        self.fd = self.sock.fileno()
        self._sg = XDP_USE_SG if sg else 0
        try:
            # the first socket of a UMEM registers it; the others share it at bind
            self._configure(umem_addr, umem_len if shared_fd is None else 0, rx_size,
                            tx_size, fill_size, comp_size, tx_budget)
            if not unmapped:
                self._map_rings(rx_size, tx_size, fill_size, comp_size)
            self._bind_socket(shared_fd, zerocopy)
            self._read_options()
        except BaseException:
            self.close()
            raise

    def _configure(self, umem_addr: int, umem_len: int, rx_size: int, tx_size: int,
                   fill_size: int, comp_size: int, tx_budget: int) -> None:
        s = self.sock
        if umem_len:
            reg = struct.pack("<QQIIII", umem_addr, umem_len, CHUNK_SIZE, 0,
                              XDP_UMEM_UNALIGNED_CHUNK_FLAG, 0)
            try:
                s.setsockopt(SOL_XDP, XDP_UMEM_REG, reg)
            except OSError as exc:
                raise _fail(f"UMEM registration ({umem_len} bytes)", exc.errno or 0) from None
        try:
            if fill_size:
                s.setsockopt(SOL_XDP, XDP_UMEM_FILL_RING, fill_size)
                s.setsockopt(SOL_XDP, XDP_UMEM_COMPLETION_RING, comp_size)
            if rx_size:
                s.setsockopt(SOL_XDP, XDP_RX_RING, rx_size)
            if tx_size:
                s.setsockopt(SOL_XDP, XDP_TX_RING, tx_size)
        except OSError as exc:
            raise _fail("ring setup", exc.errno or 0) from None
        if tx_budget and tx_size:
            try:
                s.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, tx_budget)
            except OSError:
                pass  # older kernels: the default budget (32 per sendto) applies

    def _bind_socket(self, shared_fd: int | None, zerocopy: bool | None) -> None:
        if shared_fd is not None:
            self._bind(XDP_SHARED_UMEM, shared_fd)
        else:
            if zerocopy is None:
                tries = [XDP_ZEROCOPY, XDP_COPY]
            else:
                tries = [XDP_ZEROCOPY] if zerocopy else [XDP_COPY]
            last: SetupError | None = None
            for mode in tries:
                try:
                    self._bind(XDP_USE_NEED_WAKEUP | mode | self._sg, 0)
                    last = None
                    break
                except SetupError as exc:
                    last = exc
                    if exc.errno not in (_errno.EOPNOTSUPP, _errno.EINVAL) or mode == XDP_COPY:
                        break
            if last is not None:
                if zerocopy and last.errno == _errno.EOPNOTSUPP:
                    raise SetupError(last.message, errno=last.errno,
                                     hint="this driver has no AF_XDP zero-copy: drop "
                                          "?zerocopy=1 to use copy mode")
                raise last

    def _map_rings(self, rx_size: int, tx_size: int, fill_size: int, comp_size: int) -> None:
        """mmap the rings configured on the socket (needs no privilege)."""
        try:
            raw = self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128)
        except OSError as exc:
            raise _fail("ring setup", exc.errno or 0) from None
        if len(raw) < 128:
            raise SetupError("AF_XDP: this kernel's XDP_MMAP_OFFSETS has no flags field",
                             errno=_errno.EOPNOTSUPP, hint="needs Linux ≥ 5.4")
        o = struct.unpack("<16Q", raw)
        off_rx, off_tx, off_fr, off_cr = o[0:4], o[4:8], o[8:12], o[12:16]

        def order(t: tuple[int, ...]) -> tuple[int, int, int, int]:
            return (t[0], t[1], t[2], t[3])  # producer, consumer, desc, flags

        if rx_size:
            self.rx = Ring(self.fd, PGOFF_RX, order(off_rx), rx_size, DESC_DTYPE)
        if tx_size:
            self.tx = Ring(self.fd, PGOFF_TX, order(off_tx), tx_size, DESC_DTYPE)
        if fill_size:
            self.fill = Ring(self.fd, PGOFF_FILL, order(off_fr), fill_size, np.dtype("<u8"))
            self.comp = Ring(self.fd, PGOFF_COMP, order(off_cr), comp_size, np.dtype("<u8"))

    def _read_options(self) -> None:
        try:
            opts = struct.unpack("<I", self.sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4))[0]
            self.zerocopy = bool(opts & XDP_OPTIONS_ZEROCOPY)
        except OSError:
            self.zerocopy = False

    def set_busy_poll(self, usecs: int, budget: int) -> bool:
        """``SO_PREFER_BUSY_POLL`` + ``SO_BUSY_POLL`` (µs) + ``SO_BUSY_POLL_BUDGET``:
        poll() then spins the driver's NAPI context for up to ``usecs`` instead of
        sleeping for an interrupt. False where the kernel refuses (old kernel, no
        CAP_NET_ADMIN for the budget); the socket works as before then."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, usecs)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL_BUDGET, budget)
        except OSError:
            return False
        return True

    def _bind(self, flags: int, shared_fd: int) -> None:
        addr = ctypes.create_string_buffer(
            struct.pack("<HHIII", AF_XDP, flags, self.ifindex, self.queue, shared_fd), 16)
        for attempt in range(40):
            if _libc.bind(self.fd, addr, 16) == 0:
                return
            err = ctypes.get_errno()
            if err != _errno.EBUSY:
                break
            # a socket closed just before releases its queue asynchronously (RCU/work)
            time.sleep(0.005 * (attempt + 1) if attempt < 10 else 0.05)
        hint = ""
        if err == _errno.EINVAL:
            hint = (f"queue {self.queue} may not exist on ifindex {self.ifindex} "
                    "(see `efvi info`)")
        raise _fail(f"bind to queue {self.queue}", err, hint)

    # ---- doorbells (data path) -------------------------------------------------------
    def kick_tx(self) -> int:
        """``sendto(MSG_DONTWAIT)``: 0, or the errno (EAGAIN/ENOBUFS/EBUSY = retry)."""
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except OSError as exc:
            return exc.errno or _errno.EIO
        return 0

    def kick_rx(self) -> None:
        """``recvfrom(MSG_DONTWAIT)``: lets the driver refill from the FILL ring."""
        try:
            self.sock.recv(0, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def statistics(self) -> dict[str, int]:
        """``XDP_STATISTICS`` (cost: one getsockopt)."""
        try:
            raw = self.sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        except OSError:
            return {}
        vals = struct.unpack("<%dQ" % (len(raw) // 8), raw)
        return dict(zip(STAT_NAMES, vals))

    def close(self) -> None:
        """Unmap the rings and close the socket (idempotent)."""
        for name in ("rx", "tx", "fill", "comp"):
            r = getattr(self, name)
            if r is not None:
                r.close()
                setattr(self, name, None)
        if self.sock.fileno() >= 0:
            self.sock.close()
