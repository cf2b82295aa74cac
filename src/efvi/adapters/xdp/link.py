"""One XDP program per interface: maps, load, attach, ownership, cleanup.

Ownership rules (control path):

* Within a process, every adapter/PD/VI on one interface (same namespace) shares one
  :class:`InterfaceProgram` (refcounted; detached when the last user closes).
* The program is named ``efvi_<pid>``. A second *process* asking for the same
  interface gets a :class:`~efvi.errors.SetupError` (EBUSY) naming the owner pid —
  efvi does not join another process's filter table (its sockets and UMEM live in
  that process). If the named pid is dead (a netlink-attached leftover of a crashed
  run), the program is detached and replaced.
* A program efvi did not attach is never replaced, unless ``force=1``. Then efvi takes
  a reference to it (``BPF_PROG_GET_FD_BY_ID``, so it cannot vanish), warns on stderr,
  records it in its config map (``efvi info`` shows it as ``displaced``) and attaches it
  again, by netlink in the mode it was in, when the program is released, at exit and
  on SIGTERM (the netlink-fallback cleanup below). On SIGKILL nothing of efvi runs: its
  bpf_link goes with the process, the interface is left with no XDP program, and the
  displaced program is freed with efvi's reference — lost, unless its loader pinned it
  in bpffs or still holds it; reattach it with its loader (``ip link set dev IF
  xdpgeneric|xdpdrv obj FILE`` or ``... pinned PATH``).
* RX timestamps (``ts=auto|sw|hw``): unless ``ts=sw`` or ``mode=skb``, the program is
  first built with the metadata kfunc ``bpf_xdp_metadata_rx_timestamp`` (BTF id from
  vmlinux BTF), loaded device-bound and attached in drv mode; if the kfunc is missing
  or the kernel/driver refuses the load or the attach, today's program (software
  stamps only) is loaded instead — silently for ``ts=auto``, UnsupportedError for
  ``ts=hw``. :attr:`InterfaceProgram.hw_kfunc` says which one runs and
  :attr:`InterfaceProgram.hw_note` why not.
* Attach is through a bpf_link, which the kernel removes when the process dies (also
  on SIGKILL); netlink is the fallback on kernels without XDP links, with an atexit
  hook and a SIGTERM handler that detach it.
"""

from __future__ import annotations

import atexit
import itertools
import errno as _errno
import os
import signal
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

from efvi.bpf import syscall as bpf
from efvi.adapters.xdp import netlink as xnl
from efvi.adapters.xdp.program import (FTABLE_SIZE, KEY_SIZE, KMACS_SIZE, MAX_QUEUES,
                                       MAX_TARGETS,
                                       RX_TS_KFUNC, XSKMAP_SIZE, build_program, kmac_key)
from efvi.errors import SetupError, UnsupportedError
from efvi.netutil import NetnsHandle, link_info, multicast_macs

_lock = threading.RLock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- cleanup at exit: netlink-attached programs, displaced programs to put back ----------
_netlink_attached: dict[int, "InterfaceProgram"] = {}  # id(prog) -> prog needing undo
_sigterm_installed = False


def _detach_all_netlink() -> None:
    """Detach every netlink-attached efvi program and put back what efvi displaced."""
    for prog in list(_netlink_attached.values()):
        try:
            prog.detach()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _on_sigterm(signum: int, frame: object) -> None:
    _detach_all_netlink()
    raise SystemExit(128 + signum)


def _install_sigterm() -> None:
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


atexit.register(_detach_all_netlink)


# ---- queue owner records --------------------------------------------------------------------
CONFIG_MAP = "efvi_cfg"


def queue_holders(prog_id: int) -> dict[int, int] | None:
    """RX queue -> pid of the process holding it, read from the config map of efvi's
    program ``prog_id`` (written by :meth:`InterfaceProgram.hold_queue` — by the
    process that owns the program, or by efvid for its clients). None if the program
    is gone, not efvi's, or not readable here (needs CAP_BPF / CAP_SYS_ADMIN)."""
    try:
        pfd = bpf.prog_fd_by_id(prog_id)
    except SetupError:
        return None
    try:
        map_ids = bpf.prog_map_ids(pfd)
    except SetupError:
        return None
    finally:
        os.close(pfd)
    for mid in map_ids:
        try:
            mfd = bpf.map_fd_by_id(mid)
        except SetupError:
            continue
        try:
            info = bpf.map_info(mfd)
            if info["name"] != CONFIG_MAP or info["value_size"] != 8:
                continue
            out: dict[int, int] = {}
            for q in range(min(MAX_QUEUES, max(0, int(info["max_entries"]) - 1))):
                v = bpf.map_lookup(mfd, struct.pack("<I", 1 + q), 8)
                pid = struct.unpack("<Q", v)[0] if v else 0
                if pid:
                    out[q] = int(pid)
            return out
        except SetupError:
            return None
        finally:
            os.close(mfd)
    return None


# ---- the program --------------------------------------------------------------------------
#: config map keys after the queue records hold what efvi displaced: ``<II`` (prog id,
#: mode code)
DISPLACED_KEYS = (1 + MAX_QUEUES, 2 + MAX_QUEUES)
_MODE_CODE = {"drv": 1, "skb": 2}
_CODE_MODE = {v: k for k, v in _MODE_CODE.items()}


class Displaced:
    """A foreign XDP program efvi removed with ``force=1``, held by fd until put back."""

    __slots__ = ("mode", "prog_id", "name", "fd")

    def __init__(self, mode: str, prog_id: int, name: str, fd: int) -> None:
        self.mode, self.prog_id, self.name, self.fd = mode, prog_id, name, fd


def displaced_of(prog_id: int) -> list[dict[str, Any]]:
    """The programs the efvi program ``prog_id`` displaced (from its config map):
    ``[{"id", "name", "mode"}]``, empty if none or unreadable."""
    out: list[dict[str, Any]] = []
    try:
        pfd = bpf.prog_fd_by_id(prog_id)
    except SetupError:
        return out
    try:
        for mid in bpf.prog_map_ids(pfd):
            mfd = bpf.map_fd_by_id(mid)
            try:
                mi = bpf.map_info(mfd)
                if mi["name"] != CONFIG_MAP or mi["max_entries"] <= max(DISPLACED_KEYS):
                    continue
                for key in DISPLACED_KEYS:
                    raw = bpf.map_lookup(mfd, struct.pack("<I", key), 8)
                    if raw is None:
                        continue
                    did, code = struct.unpack("<II", raw)
                    if did:
                        out.append({"id": did, "name": bpf.prog_name_by_id(did),
                                    "mode": _CODE_MODE.get(code, str(code))})
            finally:
                os.close(mfd)
    except SetupError:
        pass
    finally:
        os.close(pfd)
    return out


def _attached_ids(li: Any) -> list[tuple[str, int]]:
    """(mode, prog id) of each program netlink reports on a link (drv/skb only)."""
    if li.xdp_attached == "multi":
        return [(m, i) for m, i in (("drv", li.xdp_drv_prog_id), ("skb", li.xdp_skb_prog_id))
                if i]
    if li.xdp_attached in _MODE_CODE and li.xdp_prog_id:
        return [(li.xdp_attached, li.xdp_prog_id)]
    return []


def detach_command(ifname: str, attached: str) -> str:
    """The ``ip link`` command that removes an XDP program attached in ``attached`` mode
    (``xdp off`` only removes a native one; a generic one needs ``xdpgeneric off``)."""
    word = {"skb": "xdpgeneric", "drv": "xdpdrv", "hw": "xdpoffload"}.get(attached)
    if word is None:  # several at once, or unknown: remove each kind
        return "; ".join(f"ip link set dev {ifname} {w} off"
                         for w in ("xdpgeneric", "xdpdrv", "xdpoffload"))
    return f"ip link set dev {ifname} {word} off"


class InterfaceProgram:
    """The filter-table program of one interface in this process (see module doc)."""

    _registry: dict[tuple[int, int], "InterfaceProgram"] = {}

    def __init__(self, ifname: str, ifindex: int, netns: NetnsHandle, mode: str,
                 force: bool, ts: str = "auto", frags: bool = False) -> None:
        self.ifname = ifname
        #: loaded with BPF_F_XDP_HAS_FRAGS: frames longer than one buffer reach the
        #: sockets as multi-buffer chains (the interface's MTU needs it)
        self.frags = frags
        self._xflags = bpf.BPF_F_XDP_HAS_FRAGS if frags else 0
        self.ifindex = ifindex
        self.netns = netns
        self.refs = 0
        self.fds: dict[str, int] = {}
        self.prog_fd = -1
        self.link_fd = -1
        self.mode = ""  # drv | skb
        self.via = ""  # bpf_link | netlink
        self.prog_id = 0
        self.filters: dict[bytes, tuple[int, bool]] = {}  # key -> (target, multicast)
        self.presence: dict[int, int] = {}  # presence bit -> refcount
        self._targets: set[int] = set()
        self.slots: dict[int, int] = {}  # XSKMAP slot -> socket fd
        self.queue_owner: dict[int, Any] = {}  # RX queue -> the VI holding it
        self.ts = ts
        self.hw_kfunc = False  # the RX-timestamp kfunc variant is attached
        self.hw_note = ""  # why it is not (empty when it is)
        self._kfunc_id: int | None = None
        self.bpf_filters: dict[int, tuple[Sequence[object], int]] = {}  # token -> (prog, target)
        self._bpf_ids = itertools.count(1)
        #: foreign programs removed by ``force=1``, put back by :meth:`detach`
        self.displaced: list[Displaced] = []
        try:
            self._check_owner(force)
            self._create_maps()
            self._record_displaced()
            if not self._load_hw_variant(mode, ts):
                self._load()
                self._attach(mode)
        except BaseException:
            self.detach()
            self._close_fds()
            raise

    # ---- registry ----------------------------------------------------------------------
    @classmethod
    def acquire(cls, ifname: str, ifindex: int, netns: NetnsHandle, mode: str,
                force: bool, ts: str = "auto", frags: bool = False) -> "InterfaceProgram":
        key = (netns.inode, ifindex)
        with _lock:
            prog = cls._registry.get(key)
            if prog is None or prog.prog_fd < 0:
                prog = cls(ifname, ifindex, netns, mode, force, ts, frags)
                cls._registry[key] = prog
            elif ts == "hw" and not prog.hw_kfunc:
                raise UnsupportedError(
                    f"{ifname} already runs efvi's program without hardware RX timestamps "
                    f"in this process ({prog.hw_note or 'opened with ts=sw'}); open every "
                    f"driver on {ifname} with ts=hw or ts=auto")
            elif mode not in ("auto", prog.mode):
                raise SetupError(
                    f"{ifname} already runs efvi's program in {prog.mode} mode in this "
                    f"process; cannot also use mode={mode}", errno=_errno.EEXIST,
                    hint=f"open every driver on {ifname} with the same mode")
            prog.refs += 1
            return prog

    def release(self) -> None:
        with _lock:
            self.refs -= 1
            if self.refs > 0:
                return
            self._registry.pop((self.netns.inode, self.ifindex), None)
            self.detach()
            self._close_fds()

    # ---- setup ---------------------------------------------------------------------------
    def _check_owner(self, force: bool) -> None:
        li = link_info(self.ifindex)
        if not li.xdp_prog_id:
            return
        name = bpf.prog_name_by_id(li.xdp_prog_id) or "?"
        leftover = False
        if name.startswith("efvi_") and name[5:].isdigit():
            pid = int(name[5:])
            if pid != os.getpid() and _pid_alive(pid):
                held = queue_holders(li.xdp_prog_id) or {}
                queues = "".join(f"; RX queue {q} held by pid {p}"
                                 for q, p in sorted(held.items()))
                raise SetupError(
                    f"{self.ifname} is in use by efvi process {pid} (XDP program "
                    f"{name}, id {li.xdp_prog_id}{queues})", errno=_errno.EBUSY,
                    hint=f"stop process {pid}: one process drives an interface's program "
                         "(its VIs share it); for several processes on one interface, one "
                         "per RX queue, run efvid and open xdp:IF@Q?broker=1 in each")
            leftover = True  # of a dead efvi run: safe to clear, nothing to put back
        elif not force:
            raise SetupError(
                f"{self.ifname} already has XDP program {name!r} (id {li.xdp_prog_id}, "
                f"{li.xdp_attached} mode) that efvi did not attach", errno=_errno.EBUSY,
                hint=f"detach it ({detach_command(self.ifname, li.xdp_attached)}) or open "
                     f"xdp:{self.ifname}?force=1 to replace it")
        taken: list[Displaced] = []
        try:
            for m, pid in ([] if leftover else _attached_ids(li)):  # held: cannot vanish
                taken.append(Displaced(m, pid, bpf.prog_name_by_id(pid) or "?",
                                      bpf.prog_fd_by_id(pid)))
            xnl.detach(self.ifindex, li.xdp_attached)
        except SetupError as exc:
            for h in taken:
                os.close(h.fd)
            raise SetupError(
                f"cannot remove XDP program {name!r} (id {li.xdp_prog_id}) from "
                f"{self.ifname}: {exc.message}", errno=exc.errno or _errno.EBUSY,
                hint="it is held by a bpf_link of a running process; stop that process"
            ) from None
        self.displaced = taken
        if taken:
            _netlink_attached[id(self)] = self  # put back at exit and on SIGTERM
            _install_sigterm()
        for h in taken:
            sys.stderr.write(f"efvi: replacing XDP program id {h.prog_id} ({h.name}) on "
                             f"{self.ifname} in {h.mode} mode; it will be restored on exit\n")
            sys.stderr.flush()

    def _record_displaced(self) -> None:
        """Write the displaced programs into the config map (read by ``efvi info``)."""
        for key, h in zip(DISPLACED_KEYS, self.displaced):
            bpf.map_update(self.fds["config"], struct.pack("<I", key),
                           struct.pack("<II", h.prog_id, _MODE_CODE[h.mode]))

    def _create_maps(self) -> None:
        # entry 0: the presence mask the program reads; 1 + q: the pid holding RX
        # queue q (0: free) — the owner record `efvi info` reads (see queue_holders);
        # then DISPLACED_KEYS: the programs force=1 put aside (see displaced_of)
        self.fds["config"] = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8,
                                            1 + MAX_QUEUES + len(DISPLACED_KEYS), CONFIG_MAP)
        self.fds["ftable"] = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, KEY_SIZE, 4, FTABLE_SIZE,
                                            "efvi_filters")
        self.fds["kmacs"] = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 8, 4, KMACS_SIZE,
                                           "efvi_kmacs")
        self.fds["xsks"] = bpf.map_create(bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, XSKMAP_SIZE,
                                          "efvi_xsks")

    def _load(self) -> None:
        code = build_program(bpf_filters=self._bpf_list()).assemble(self.fds)
        self.prog_fd = bpf.prog_load(code, name=f"efvi_{os.getpid()}", prog_flags=self._xflags)
        self.prog_id = int(bpf.prog_info(self.prog_fd)["id"])

    # ---- bpf filters: part of the program, so a change loads a new one -----------------
    def _bpf_list(self) -> list[tuple[Sequence[object], int]]:
        return [(prog, target) for prog, target in self.bpf_filters.values()]

    def add_bpf(self, program: Sequence[object], target: int) -> int:
        """Add a classic BPF filter (the bpf level) for ``target``; returns its token.

        Builds, loads (the verifier checks the translation) and swaps in a new program;
        on any failure the running program and the filter list are left as they were.
        """
        token = next(self._bpf_ids)
        self.bpf_filters[token] = (program, target)
        try:
            self._reload()
        except BaseException:
            del self.bpf_filters[token]
            raise
        return token

    def remove_bpf(self, token: int) -> None:
        if self.bpf_filters.pop(token, None) is not None and self.prog_fd >= 0:
            self._reload()

    def _reload(self) -> None:
        """Load the program for the current bpf filters and put it in place of the old."""
        name = f"efvi_{os.getpid()}"
        if self.hw_kfunc and self._kfunc_id is not None:
            code = build_program(rx_ts_kfunc=self._kfunc_id,
                                 bpf_filters=self._bpf_list()).assemble(self.fds)
            with self.netns.enter():  # prog_ifindex is looked up in the caller's netns
                fd = bpf.prog_load(code, name=name,
                                   prog_flags=bpf.BPF_F_XDP_DEV_BOUND_ONLY | self._xflags,
                                   ifindex=self.ifindex)
        else:
            code = build_program(bpf_filters=self._bpf_list()).assemble(self.fds)
            fd = bpf.prog_load(code, name=name, prog_flags=self._xflags)
        try:
            if self.via == "bpf_link":
                bpf.link_update(self.link_fd, fd)
            elif self.via == "netlink":
                with self.netns.enter():
                    xnl.set_xdp(self.ifindex, fd, xnl.MODE_FLAGS[self.mode])
        except BaseException:
            os.close(fd)
            raise
        old, self.prog_fd = self.prog_fd, fd
        self.prog_id = int(bpf.prog_info(fd)["id"])
        if old >= 0:
            os.close(old)

    def _load_hw_variant(self, mode: str, ts: str) -> bool:
        """Load and attach (drv, bpf_link) the RX-timestamp kfunc variant; False if not.

        The variant is device-bound (``BPF_F_XDP_DEV_BOUND_ONLY``, ``prog_ifindex``),
        which the kernel only runs in native mode. Failure is silent for ``ts=auto``
        (``hw_note`` says why) and UnsupportedError for ``ts=hw``.
        """
        if ts not in ("auto", "sw", "hw"):
            raise SetupError(f"unknown ts={ts!r}", errno=_errno.EINVAL,
                             hint="use ?ts=auto (default), ?ts=sw or ?ts=hw")
        if ts == "sw":
            self.hw_note = "disabled (ts=sw)"
            return False
        if mode not in ("auto", "drv"):
            self.hw_note = ("the RX-timestamp kfunc needs a device-bound program, which "
                            "runs in native (drv) mode only, not skb")
        elif (btf_id := bpf.btf_find_func(RX_TS_KFUNC)) is None:
            self.hw_note = (f"the kernel has no {RX_TS_KFUNC} kfunc in "
                            f"{bpf.VMLINUX_BTF} (needs Linux >= 6.3 with BTF)")
        else:
            self._kfunc_id = btf_id
            code = build_program(rx_ts_kfunc=btf_id,
                                 bpf_filters=self._bpf_list()).assemble(self.fds)
            try:
                self.prog_fd = bpf.prog_load(code, name=f"efvi_{os.getpid()}",
                                             prog_flags=bpf.BPF_F_XDP_DEV_BOUND_ONLY
                                             | self._xflags,
                                             ifindex=self.ifindex)
                self.prog_id = int(bpf.prog_info(self.prog_fd)["id"])
                self.link_fd = bpf.link_create(self.prog_fd, self.ifindex,
                                               xnl.MODE_FLAGS["drv"])
            except SetupError as exc:
                first = exc.message.splitlines()[0] if exc.message else str(exc)
                self.hw_note = f"the kernel/driver refused the device-bound program: {first}"
                if self.prog_fd >= 0:
                    os.close(self.prog_fd)
                    self.prog_fd = -1
                self.prog_id = 0
            else:
                self.mode, self.via = "drv", "bpf_link"
                self.hw_kfunc, self.hw_note = True, ""
                return True
        if ts == "hw":
            raise UnsupportedError(f"xdp:{self.ifname}?ts=hw: no hardware RX timestamps: "
                                   f"{self.hw_note}; use ts=auto or ts=sw")
        return False

    def _attach(self, mode: str) -> None:
        modes = ["drv", "skb"] if mode == "auto" else [mode]
        if any(m not in xnl.MODE_FLAGS for m in modes):
            raise SetupError(f"unknown XDP mode {mode!r}", errno=_errno.EINVAL,
                             hint="use ?mode=drv, ?mode=skb or ?mode=auto")
        errors: list[SetupError] = []
        for m in modes:
            try:
                self.link_fd = bpf.link_create(self.prog_fd, self.ifindex, xnl.MODE_FLAGS[m])
                self.mode, self.via = m, "bpf_link"
                return
            except SetupError as exc:
                errors.append(exc)
                if exc.errno in (_errno.EBUSY, _errno.EEXIST, _errno.EPERM):
                    break
        if all(e.errno == _errno.EINVAL for e in errors):
            for m in modes:  # no XDP bpf_link on this kernel: netlink fallback
                try:
                    xnl.attach(self.ifindex, self.prog_fd, m)
                except SetupError as exc:
                    errors.append(exc)
                    continue
                self.mode, self.via = m, "netlink"
                _netlink_attached[id(self)] = self
                _install_sigterm()
                return
        e = errors[-1]
        raise SetupError(f"cannot attach the XDP program to {self.ifname}: {e.message}",
                         errno=e.errno, hint=e.hint or "try ?mode=skb (generic XDP)")

    def detach(self) -> None:
        """Remove the program from the interface and put back the programs it displaced
        (idempotent)."""
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        if _netlink_attached.pop(id(self), None) is not None and self.via == "netlink":
            with self.netns.enter():
                try:
                    xnl.detach(self.ifindex, self.mode)
                except SetupError:
                    pass
        self.via = ""
        self._restore()

    def _restore(self) -> None:
        """Attach the displaced programs again, each in its mode; warn if one cannot be."""
        held, self.displaced = self.displaced, []
        for h in held:
            try:
                with self.netns.enter():
                    xnl.attach(self.ifindex, h.fd, h.mode)
            except (SetupError, OSError) as exc:
                sys.stderr.write(f"efvi: could not restore XDP program id {h.prog_id} "
                                 f"({h.name}) on {self.ifname} in {h.mode} mode: {exc}; "
                                 "reattach it with its loader\n")
            finally:
                os.close(h.fd)

    def _close_fds(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # ---- the filter table -------------------------------------------------------------------
    def alloc_target(self) -> int:
        for t in range(1, MAX_TARGETS):
            if t not in self._targets:
                self._targets.add(t)
                return t
        raise SetupError(f"too many VIs and VI sets on {self.ifname} (max {MAX_TARGETS - 1})",
                         errno=_errno.ENOSPC, hint="close VIs you no longer use")

    def free_target(self, t: int) -> None:
        self._targets.discard(t)

    def set_slot(self, slot: int, sock_fd: int) -> None:
        bpf.map_update(self.fds["xsks"], struct.pack("<I", slot), struct.pack("<I", sock_fd))
        self.slots[slot] = sock_fd

    def clear_slot(self, slot: int) -> None:
        if self.slots.pop(slot, None) is not None and "xsks" in self.fds:
            bpf.map_delete(self.fds["xsks"], struct.pack("<I", slot))

    def hold_queue(self, queue: int, pid: int) -> None:
        """Record ``pid`` as the holder of RX ``queue`` (0: free) in the program's
        config map, where every process can read it (:func:`queue_holders`)."""
        if "config" in self.fds and 0 <= queue < MAX_QUEUES:
            bpf.map_update(self.fds["config"], struct.pack("<I", 1 + queue),
                           struct.pack("<Q", pid))

    def _write_presence(self) -> None:
        mask = 0
        for bit, n in self.presence.items():
            if n > 0:
                mask |= bit
        bpf.map_update(self.fds["config"], struct.pack("<I", 0), struct.pack("<Q", mask))

    def insert(self, key: bytes, bit: int, target: int, multicast: bool,
               spec: object = None) -> None:
        """Add a filter-table entry (``spec`` is for the broker proxy's policy check)."""
        if len(self.filters) >= FTABLE_SIZE:
            raise SetupError(
                f"the xdp filter table of {self.ifname} is full: it holds {FTABLE_SIZE} "
                "filters per interface", errno=_errno.ENOSPC,
                hint="delete filters you no longer need, or cover many flows with one wider "
                     "filter (eth:MAC, ipproto:, unicast-all)")
        try:
            bpf.map_update(self.fds["ftable"], key, struct.pack("<I", target),
                           bpf.BPF_NOEXIST)
        except SetupError as exc:
            if exc.errno != _errno.E2BIG:
                raise
            raise SetupError(
                f"the xdp filter table of {self.ifname} is full ({FTABLE_SIZE} entries)",
                errno=_errno.ENOSPC, hint="delete filters, or use one wider filter") from None
        self.filters[key] = (target, multicast)
        self.presence[bit] = self.presence.get(bit, 0) + 1
        self._write_presence()

    def remove(self, key: bytes, bit: int) -> None:
        if self.filters.pop(key, None) is None:
            return
        if "ftable" in self.fds:
            bpf.map_delete(self.fds["ftable"], key)
            self.presence[bit] = self.presence.get(bit, 1) - 1
            self._write_presence()

    def refresh_kernel_macs(self, own_mac: bytes) -> None:
        """Load the MACs the kernel accepts (own, broadcast, multicast list) into kmacs."""
        with self.netns.enter():
            macs = {own_mac, b"\xff" * 6, *multicast_macs(self.ifname)}
        for m in macs:
            bpf.map_update(self.fds["kmacs"], kmac_key(m), struct.pack("<I", 1))
