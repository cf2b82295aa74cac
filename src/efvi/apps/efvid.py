"""``efvid``: the privileged resource broker that gives unprivileged processes VIs.

ef_vi's driver grants VIs, filters and memory registration to applications that hold
no privilege; on AF_XDP and AF_PACKET the same split is possible in user space
because socket descriptors can be handed over (``SCM_RIGHTS``). ``efvid`` runs as
root, listens on a Unix ``SOCK_SEQPACKET`` socket (default
``/run/efvi/efvid.sock``), and for each client does the privileged steps:

* ``xdp``: loads and attaches the interface program (one per interface, shared by
  every client, detached when the last one leaves), creates AF_XDP sockets, registers
  the client's memory — a sealed ``memfd`` the client sends — as their UMEM, binds
  them, and passes the bound sockets back; the client maps the rings itself, so
  frames never pass through the broker. Filter-table entries, classic-BPF filters
  and XSKMAP slots are changed only here, after the policy allows them and only for
  targets and sockets the same client owns.
* ``packet``: creates the AF_PACKET socket with its ring, attaches the classic-BPF
  program compiled from the client's filter specs, locks it (``SO_LOCK_FILTER``: the
  client cannot widen what it sees) and binds it; a filter change makes a new socket.

Each request is checked against the :class:`~efvi.broker.policy.Policy` with the
caller's ``SO_PEERCRED`` credentials; every grant and refusal is logged. When a client
closes or dies, its filters, slots and sockets are removed and its memory unmapped.

Single-threaded (one selector loop): a slow client cannot corrupt another's state,
only delay it by one request.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import json
import logging
import mmap
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from efvi.broker.policy import Caller, Grant, Policy
from efvi.broker.protocol import ProtocolError, decode_request, recv_msg, send_msg, VERSION
from efvi.broker.specs import spec_from_wire, traffic_class
from efvi.errors import EfviError, FilterExistsError, SetupError

log = logging.getLogger("efvid")

DEFAULT_POLICY = "/etc/efvi/policy.toml"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_RING_MAX = 1 << 16


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Refused(SetupError):
    """A request the broker will not carry out (bad argument for this client)."""

    def __init__(self, message: str, err: int = _errno.EINVAL, hint: str = "") -> None:
        super().__init__(message, errno=err, hint=hint)


@dataclass
class Umem:
    mm: mmap.mmap
    addr: int
    length: int
    size: int
    first: Any = None  # the socket that registered it (others share it)


@dataclass
class Held:
    """What one client holds on one opened interface."""

    kind: str
    iface: str
    adapter: Any
    grants: list[Grant]
    umems: dict[int, Umem] = field(default_factory=dict)
    sockets: dict[int, Any] = field(default_factory=dict)
    targets: set[int] = field(default_factory=set)
    slots: dict[int, int] = field(default_factory=dict)
    filters: dict[bytes, int] = field(default_factory=dict)
    bpf: set[int] = field(default_factory=set)
    queues: set[int] = field(default_factory=set)


@dataclass
class Session:
    conn: socket.socket
    caller: Caller
    held: dict[int, Held] = field(default_factory=dict)


class Broker:
    """The broker's state and request handlers (see the module doc)."""

    def __init__(self, policy: Policy, path: str, socket_mode: int = 0o666) -> None:
        self.policy = policy
        self.path = path
        self.socket_mode = socket_mode
        self.sessions: dict[int, Session] = {}
        self._ids = 1
        #: (ifname, queue) -> pid of the client holding it (one FILL ring per queue)
        self.queue_holders: dict[tuple[str, int], int] = {}
        self.listener: socket.socket | None = None
        self.sel = selectors.DefaultSelector()

    def _id(self) -> int:
        self._ids += 1
        return self._ids

    # ---- the socket ----------------------------------------------------------------------
    def listen(self) -> None:
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, mode=0o755, exist_ok=True)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # a stale socket of a broker that died
            else:
                probe.close()
                raise SetupError(f"another efvid already listens on {self.path}",
                                 errno=_errno.EADDRINUSE,
                                 hint="stop it first, or pass --socket PATH")
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.bind(self.path)
        os.chmod(self.path, self.socket_mode)
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, None)
        log.info("efvid %d listening on %s (policy %s, %d grant(s))", os.getpid(),
                 self.path, self.policy.path, len(self.policy.grants))

    def serve(self, stop: Callable[[], bool], tick: float = 0.2) -> None:
        """Serve until ``stop()`` is true; then release everything."""
        try:
            while not stop():
                for key, _ in self.sel.select(tick):
                    if key.data is None:
                        self._accept()
                    else:
                        self._readable(key.data)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for sess in list(self.sessions.values()):
            self._drop(sess, "broker stopping")
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # EMFILE/ENFILE: keep serving the clients we have
            log.warning("accept failed: %s (out of descriptors?)", exc.strerror)
            time.sleep(0.05)
            return
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        sess = Session(conn, Caller.from_peer(pid, uid, gid))
        self.sessions[conn.fileno()] = sess
        self.sel.register(conn, selectors.EVENT_READ, sess)
        log.info("client %s connected", sess.caller)

    def _readable(self, sess: Session) -> None:
        try:
            got = recv_msg(sess.conn)
        except ProtocolError as exc:
            self._reply_error(sess, 0, Refused(str(exc), _errno.EPROTO))
            return
        except OSError as exc:
            self._drop(sess, f"connection error: {exc.strerror}")
            return
        if got is None:
            self._drop(sess, "disconnected")
            return
        data, fds = got
        rid = 0
        try:
            op, rid, args = decode_request(data, len(fds))
            result, out_fds = self.handle(sess, op, args, fds)
        except ProtocolError as exc:
            log.warning("client %s: malformed request: %s", sess.caller, exc)
            self._reply_error(sess, rid, Refused(str(exc), _errno.EPROTO))
            return
        except EfviError as exc:
            self._reply_error(sess, rid, exc)
            return
        except Exception as exc:  # noqa: BLE001 - one client's fault never stops the broker
            log.exception("client %s: request failed", sess.caller)
            self._reply_error(sess, rid, Refused(f"efvid internal error: {exc}", _errno.EIO))
            return
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            send_msg(sess.conn, {"id": rid, "ok": True, "result": result}, out_fds)
        except OSError as exc:
            self._drop(sess, f"reply failed: {exc.strerror}")

    def _reply_error(self, sess: Session, rid: int, exc: EfviError) -> None:
        msg = getattr(exc, "message", str(exc))
        log.warning("refuse %s: %s", sess.caller, msg)
        body = {"id": rid, "ok": False, "error": msg,
                "errno": getattr(exc, "errno", 0) or _errno.EPERM,
                "hint": getattr(exc, "hint", "")}
        try:
            send_msg(sess.conn, body)
        except OSError as e:
            self._drop(sess, f"reply failed: {e.strerror}")

    def _drop(self, sess: Session, why: str) -> None:
        for h in list(sess.held):
            self._release(sess, h)
        try:
            self.sel.unregister(sess.conn)
        except (KeyError, ValueError):
            pass
        self.sessions.pop(sess.conn.fileno(), None)
        sess.conn.close()
        log.info("client %s: %s; everything it held is released", sess.caller, why)

    # ---- requests ----------------------------------------------------------------------
    def handle(self, sess: Session, op: str, args: dict[str, Any],
               fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Carry out one request for ``sess``; (result, descriptors to send)."""
        if op == "hello":
            return {"version": VERSION, "pid": os.getpid()}, []
        if op == "xdp.open":
            return self._xdp_open(sess, args), []
        if op == "packet.open":
            return self._packet_open(sess, args), []
        h = sess.held.get(args.get("adapter", -1))
        if h is None:
            raise Refused(f"{op}: no interface {args.get('adapter')} is open on this "
                          "connection", _errno.EBADF)
        if op == "close":
            self._release(sess, args["adapter"])
            return {}, []
        if op.startswith("packet."):
            if h.kind != "packet":
                raise Refused(f"{op} on an xdp interface", _errno.EINVAL)
            return self._packet_socket(sess, h, args)
        if h.kind != "xdp":
            raise Refused(f"{op} on a packet interface", _errno.EINVAL)
        handler = {
            "xdp.umem": self._xdp_umem, "xdp.socket": self._xdp_socket,
            "xdp.target": self._xdp_target, "xdp.target_free": self._xdp_target_free,
            "xdp.slot": self._xdp_slot, "xdp.filter_add": self._xdp_filter_add,
            "xdp.filter_del": self._xdp_filter_del, "xdp.bpf_add": self._xdp_bpf_add,
            "xdp.bpf_del": self._xdp_bpf_del, "xdp.kernel_macs": self._xdp_kernel_macs,
        }[op]
        return handler(sess, h, args, fds)

    # ---- xdp -----------------------------------------------------------------------------
    def _xdp_open(self, sess: Session, args: dict[str, Any]) -> dict[str, Any]:
        from efvi.adapters import open_adapter
        from urllib.parse import urlencode

        c = sess.caller
        iface, queue = args["iface"], args["queue"]
        opts = {str(k): str(v) for k, v in args["options"].items()}
        grants = self.policy.interface(c, "xdp", iface)
        if queue is not None:
            self.policy.queue(c, grants, "xdp", iface, queue)
        if opts.get("force", "0") not in ("0", "false", "False") and c.uid != 0:
            raise Refused(f"force=1 (taking {iface} over from another XDP program) is for "
                          "root only", _errno.EPERM, "drop ?force=1")
        if len(sess.held) >= 16:
            raise Refused("at most 16 interfaces open per connection", _errno.EMFILE)
        opts["broker"] = "0"
        url = f"xdp:{iface}" + (f"@{queue}" if queue is not None else "") + "?" + urlencode(opts)
        adapter = open_adapter(url)
        hid = self._id()
        sess.held[hid] = Held("xdp", iface, adapter, grants)
        log.info("grant %s: xdp:%s%s (grant %s)", c, iface,
                 "" if queue is None else f"@{queue}", grants[0].name)
        p = adapter.program  # type: ignore[attr-defined]  # an XdpAdapter: its program
        return {"adapter": hid, "mode": p.mode, "hw_kfunc": p.hw_kfunc, "hw_note": p.hw_note,
                "frags": p.frags}

    def _xdp_umem(self, sess: Session, h: Held, args: dict[str, Any],
                  fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        if len(fds) != 1:
            raise Refused("xdp.umem needs exactly one memfd", _errno.EINVAL)
        fd = fds[0]
        size, off, length = args["size"], args["umem_offset"], args["umem_len"]
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise Refused(f"the descriptor is not a memfd of {size} bytes", _errno.EINVAL)
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if seals & _SEALS != _SEALS:
            raise Refused("the memfd must be sealed against shrinking and growing "
                          "(F_SEAL_SHRINK|F_SEAL_GROW)", _errno.EPERM)
        if not (0 <= off and 0 < length and off + length <= size and off % 4096 == 0):
            raise Refused(f"UMEM [{off}, +{length}) is outside the {size}-byte memfd")
        _, max_mem = self.policy.limits(h.grants)
        used = sum(u.size for hh in sess.held.values() for u in hh.umems.values())
        if used + size > max_mem:
            raise Refused(f"{used + size} bytes of packet memory would exceed the "
                          f"{max_mem}-byte limit of your grant", _errno.ENOMEM,
                          "register a smaller region, or ask for a larger max_memory_mb")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        uid = self._id()
        h.umems[uid] = Umem(mm, base + off, length, size)
        return {"umem": uid}, []

    def _xdp_socket(self, sess: Session, h: Held, args: dict[str, Any],
                    fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        from efvi.adapters.xdp.xsk import XskSocket

        a = h.adapter
        c = sess.caller
        u = h.umems.get(args["umem"])
        if u is None:
            raise Refused(f"no UMEM {args['umem']} on this interface", _errno.EBADF)
        q = args["queue"]
        if not 0 <= q < a.nqueues or (a.queue is not None and q != a.queue):
            raise Refused(f"{h.iface} has no queue {q} for this driver", _errno.EINVAL)
        self.policy.queue(c, h.grants, "xdp", h.iface, q)
        sizes = {k: args[k] for k in ("rx_size", "tx_size", "fill_size", "comp_size")}
        for k, v in sizes.items():
            if v and (not _pow2(v) or v > _RING_MAX):
                raise Refused(f"{k}={v} is not a power of two up to {_RING_MAX}")
        max_vis, _ = self.policy.limits(h.grants)
        held = sum(len(hh.sockets) for hh in sess.held.values())
        if held >= max_vis:
            raise Refused(f"your grant allows {max_vis} sockets at once", _errno.EMFILE,
                          "close VIs you no longer use")
        holder = self.queue_holders.get((h.iface, q))
        if holder is not None and holder != c.pid and sizes["fill_size"]:
            raise Refused(f"queue {q} of {h.iface} is held by another efvid client "
                          f"(pid {holder})", _errno.EBUSY,
                          "AF_XDP has one fill ring per queue: use another queue")
        with a.netns.enter():
            s = XskSocket(a.ifindex, q, umem_addr=u.addr, umem_len=u.length,
                          shared_fd=u.first.fd if u.first is not None else None,
                          zerocopy=a.zerocopy, tx_budget=sizes["tx_size"], sg=args["sg"],
                          unmapped=True, **sizes)
        if u.first is None:
            u.first = s
        sid = self._id()
        h.sockets[sid] = s
        h.queues.add(q)
        self.queue_holders[(h.iface, q)] = c.pid
        if sizes["fill_size"]:
            a.program.hold_queue(q, c.pid)  # the record `efvi info` shows
        log.info("grant %s: AF_XDP socket on %s queue %d", c, h.iface, q)
        return {"socket": sid, "zerocopy": s.zerocopy}, [s.fd]

    def _xdp_target(self, sess: Session, h: Held, args: dict[str, Any],
                    fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        t = h.adapter.program.alloc_target()
        h.targets.add(t)
        return {"target": t}, []

    def _own_target(self, h: Held, t: int) -> None:
        if t not in h.targets:
            raise Refused(f"target {t} is not yours", _errno.EPERM)

    def _xdp_target_free(self, sess: Session, h: Held, args: dict[str, Any],
                         fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        t = args["target"]
        self._own_target(h, t)
        h.targets.discard(t)
        h.adapter.program.free_target(t)
        return {}, []

    def _xdp_slot(self, sess: Session, h: Held, args: dict[str, Any],
                  fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        from efvi.adapters.xdp.program import MAX_QUEUES

        t, q, sid = args["target"], args["queue"], args["socket"]
        self._own_target(h, t)
        if not 0 <= q < MAX_QUEUES:
            raise Refused(f"queue {q} is out of range")
        slot = t * MAX_QUEUES + q
        prog = h.adapter.program
        if sid is None:
            if h.slots.pop(slot, None) is not None:
                prog.clear_slot(slot)
            return {}, []
        s = h.sockets.get(sid)
        if s is None or s.queue != q:
            raise Refused(f"socket {sid} is not yours or not bound to queue {q}", _errno.EPERM)
        prog.set_slot(slot, s.fd)
        h.slots[slot] = sid
        return {}, []

    def _xdp_filter_add(self, sess: Session, h: Held, args: dict[str, Any],
                        fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        from efvi.adapters.xdp.program import TableKind, presence_bit, spec_key

        try:
            spec = spec_from_wire(json.loads(args["spec"]))
        except (ValueError, TypeError) as exc:
            raise Refused(f"malformed filter spec: {exc}") from None
        t = args["target"]
        self._own_target(h, t)
        cls, addr, port = traffic_class(spec)
        self.policy.filter(sess.caller, h.grants, "xdp", h.iface, cls, addr, port)
        kind, key = spec_key(spec)
        prog = h.adapter.program
        if key in prog.filters:
            raise FilterExistsError(f"filter {spec} is already installed on {h.iface} "
                                    "(maybe by another efvid client)")
        if kind in (TableKind.UCAST_MIS, TableKind.MCAST_MIS):
            prog.refresh_kernel_macs(h.adapter.mac)
        bit = presence_bit(kind, spec.vlan_id is None)
        prog.insert(key, bit, t, spec.is_multicast)
        h.filters[key] = bit
        log.info("grant %s: filter %s on xdp:%s", sess.caller, spec, h.iface)
        return {}, []

    def _xdp_filter_del(self, sess: Session, h: Held, args: dict[str, Any],
                        fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        from efvi.adapters.xdp.program import spec_key

        try:
            spec = spec_from_wire(json.loads(args["spec"]))
        except (ValueError, TypeError) as exc:
            raise Refused(f"malformed filter spec: {exc}") from None
        _, key = spec_key(spec)
        bit = h.filters.pop(key, None)
        if bit is None:
            raise Refused(f"filter {spec} is not one of yours", _errno.ENOENT)
        h.adapter.program.remove(key, bit)
        return {}, []

    def _xdp_bpf_add(self, sess: Session, h: Held, args: dict[str, Any],
                     fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        from efvi.filters import FilterSpec

        t = args["target"]
        self._own_target(h, t)
        self.policy.filter(sess.caller, h.grants, "xdp", h.iface, "any")
        try:
            spec = FilterSpec().bpf([tuple(i) for i in args["program"]])
        except (TypeError, ValueError) as exc:
            raise Refused(f"malformed classic BPF program: {exc}") from None
        token = h.adapter.program.add_bpf(spec.program, t)
        h.bpf.add(token)
        log.info("grant %s: bpf filter (%d insns) on xdp:%s", sess.caller,
                 len(spec.program), h.iface)
        return {"token": token}, []

    def _xdp_bpf_del(self, sess: Session, h: Held, args: dict[str, Any],
                     fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        tok = args["token"]
        if tok not in h.bpf:
            raise Refused(f"bpf filter {tok} is not one of yours", _errno.ENOENT)
        h.bpf.discard(tok)
        h.adapter.program.remove_bpf(tok)
        return {}, []

    def _xdp_kernel_macs(self, sess: Session, h: Held, args: dict[str, Any],
                         fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        h.adapter.program.refresh_kernel_macs(h.adapter.mac)
        return {}, []

    # ---- packet --------------------------------------------------------------------------
    def _packet_open(self, sess: Session, args: dict[str, Any]) -> dict[str, Any]:
        from efvi.adapters import open_adapter
        from urllib.parse import urlencode

        c = sess.caller
        iface = args["iface"]
        grants = self.policy.interface(c, "packet", iface)
        opts = {str(k): str(v) for k, v in args["options"].items()}
        opts["broker"] = "0"
        adapter = open_adapter(f"packet:{iface}?" + urlencode(opts))
        hid = self._id()
        sess.held[hid] = Held("packet", iface, adapter, grants)
        log.info("grant %s: packet:%s (grant %s)", c, iface, grants[0].name)
        return {"adapter": hid}

    def _packet_socket(self, sess: Session, h: Held,
                       args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        from efvi.adapters.packet.brokered import make_locked_socket

        specs = []
        for w in args["filters"]:
            try:
                spec = spec_from_wire(w)
            except (ValueError, TypeError) as exc:
                raise Refused(f"malformed filter spec: {exc}") from None
            cls, addr, port = traffic_class(spec)
            self.policy.filter(sess.caller, h.grants, "packet", h.iface, cls, addr, port)
            specs.append(spec)
        old = args["replaces"]
        if old is not None and old not in h.sockets:
            raise Refused(f"socket {old} is not yours", _errno.EPERM)
        max_vis, _ = self.policy.limits(h.grants)
        held = sum(len(hh.sockets) for hh in sess.held.values()) - (old is not None)
        if held >= max_vis:
            raise Refused(f"your grant allows {max_vis} sockets at once", _errno.EMFILE,
                          "close VIs you no longer use")
        s = make_locked_socket(h.adapter, specs, args)
        if old is not None:
            h.sockets.pop(old).close()
        sid = self._id()
        h.sockets[sid] = s
        log.info("grant %s: packet socket on %s with %d filter(s)", sess.caller, h.iface,
                 len(specs))
        return {"socket": sid}, [s.fileno()]

    # ---- release -------------------------------------------------------------------------
    def _release(self, sess: Session, hid: int) -> None:
        h = sess.held.pop(hid, None)
        if h is None:
            return
        a = h.adapter
        if h.kind == "xdp":
            prog = a.program
            for key, bit in h.filters.items():
                _quiet(prog.remove, key, bit)
            for tok in h.bpf:
                _quiet(prog.remove_bpf, tok)
            for slot in h.slots:
                _quiet(prog.clear_slot, slot)
            for t in h.targets:
                prog.free_target(t)
        for s in h.sockets.values():
            _quiet(s.close)
        for q in h.queues:
            if self.queue_holders.get((h.iface, q)) == sess.caller.pid:
                del self.queue_holders[(h.iface, q)]
                if h.kind == "xdp":
                    _quiet(a.program.hold_queue, q, 0)
        _quiet(a.close)
        for u in h.umems.values():
            _quiet(u.mm.close)


def _quiet(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except (OSError, EfviError, BufferError) as exc:
        log.warning("cleanup step %s failed: %s", getattr(fn, "__name__", fn), exc)
