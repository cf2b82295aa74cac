"""The ``efvid`` wire protocol: one JSON object per ``SOCK_SEQPACKET`` message, file
descriptors beside it as ``SCM_RIGHTS``.

Sans-I/O core: :func:`encode` and :func:`decode` turn requests/replies into bytes and
back and check every field the broker relies on; :func:`send_msg`/:func:`recv_msg` are
the thin socket shell (one ``sendmsg``/``recvmsg`` each).

A request is ``{"op": NAME, "id": N, "args": {...}}`` with at most :data:`MAX_FDS`
descriptors; a reply is ``{"id": N, "ok": true, "result": {...}}`` or
``{"id": N, "ok": false, "error": TEXT, "errno": E, "hint": TEXT}``. Messages are at
most :data:`MAX_MSG` bytes; anything else — not UTF-8, not JSON, not an object, an
unknown ``op``, wrong field types, too many descriptors — is a :class:`ProtocolError`
naming the fault (the broker answers it and keeps serving).
"""

from __future__ import annotations

import array
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

#: The largest message either side sends or accepts (bytes of JSON).
MAX_MSG = 64 * 1024
#: The most descriptors one message carries.
MAX_FDS = 4
#: Protocol version spoken by this build (``hello`` exchanges it).
VERSION = 1

#: Every request the broker knows, with the argument names and types it requires.
OPS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {},
    "xdp.open": {"iface": str, "queue": (int, type(None)), "options": dict},
    "xdp.umem": {"adapter": int, "size": int, "umem_offset": int, "umem_len": int},
    "xdp.socket": {"adapter": int, "umem": int, "queue": int, "rx_size": int,
                   "tx_size": int, "fill_size": int, "comp_size": int, "sg": bool},
    "xdp.target": {"adapter": int},
    "xdp.target_free": {"adapter": int, "target": int},
    "xdp.slot": {"adapter": int, "target": int, "queue": int, "socket": (int, type(None))},
    "xdp.filter_add": {"adapter": int, "spec": str, "target": int},
    "xdp.filter_del": {"adapter": int, "spec": str},
    "xdp.bpf_add": {"adapter": int, "program": list, "target": int},
    "xdp.bpf_del": {"adapter": int, "token": int},
    "xdp.kernel_macs": {"adapter": int},
    "packet.open": {"iface": str, "options": dict},
    "packet.socket": {"adapter": int, "rx_slots": int, "rx_frame": int, "tx_slots": int,
                      "tx_frame": int, "blocks": (list, type(None)), "filters": list,
                      "fanout": (int, type(None)), "replaces": (int, type(None))},
    "close": {"adapter": int},
}


class ProtocolError(ValueError):
    """A message that is not a well-formed request or reply (names the fault)."""


@dataclass
class Message:
    """One decoded message: its JSON object and the descriptors that came with it."""

    body: dict[str, Any]
    fds: list[int] = field(default_factory=list)


def encode(body: dict[str, Any]) -> bytes:
    """JSON bytes of ``body`` (ProtocolError if larger than :data:`MAX_MSG`)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_MSG:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MSG}-byte limit")
    return data


def _obj(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MSG:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MSG}-byte limit")
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise ProtocolError("message nests too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"message is a JSON {type(body).__name__}, not an object")
    return body


def _int_field(body: dict[str, Any], name: str) -> int:
    v = body.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 62:
        raise ProtocolError(f"field {name!r} must be a non-negative integer, got {v!r}")
    return v


def decode_request(data: bytes, nfds: int = 0) -> tuple[str, int, dict[str, Any]]:
    """``(op, id, args)`` of a request; ProtocolError naming what is wrong."""
    body = _obj(data)
    rid = _int_field(body, "id")
    op = body.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown op {op!r}; known: {', '.join(sorted(OPS))}")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"{op}: 'args' must be an object")
    for name, typ in OPS[op].items():
        if name not in args:
            raise ProtocolError(f"{op}: missing argument {name!r}")
        v = args[name]
        if isinstance(v, bool) and typ is int:
            raise ProtocolError(f"{op}: argument {name!r} must be an integer")
        if not isinstance(v, typ):
            raise ProtocolError(f"{op}: argument {name!r} has the wrong type "
                                f"({type(v).__name__})")
        if isinstance(v, int) and not isinstance(v, bool) and not -1 <= v < 1 << 48:
            raise ProtocolError(f"{op}: argument {name!r}={v} is out of range")
    extra = set(args) - set(OPS[op])
    if extra:
        raise ProtocolError(f"{op}: unknown argument(s) {sorted(extra)}")
    if nfds > MAX_FDS:
        raise ProtocolError(f"{nfds} descriptors in one message (at most {MAX_FDS})")
    return op, rid, args


def decode_reply(data: bytes) -> dict[str, Any]:
    """A reply object (checked for ``id``, ``ok`` and, on failure, ``error``)."""
    body = _obj(data)
    _int_field(body, "id")
    if not isinstance(body.get("ok"), bool):
        raise ProtocolError("reply without a boolean 'ok'")
    if not body["ok"] and not isinstance(body.get("error"), str):
        raise ProtocolError("failed reply without an 'error' text")
    return body


# ---- the socket shell ---------------------------------------------------------------------
def send_msg(sock: socket.socket, body: dict[str, Any], fds: list[int] | None = None) -> None:
    """One ``sendmsg`` with ``fds`` as SCM_RIGHTS (control path; may raise OSError)."""
    data = encode(body)
    anc = []
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([data], anc)


def recv_msg(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One ``recvmsg``: (bytes, descriptors), or None at end of stream.

    Descriptors beyond :data:`MAX_FDS` and any that arrived truncated are closed here,
    so a hostile peer cannot make the receiver leak them.
    """
    fdsize = array.array("i").itemsize
    data, anc, flags, _ = sock.recvmsg(MAX_MSG + 1, socket.CMSG_SPACE((MAX_FDS + 4) * fdsize))
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[:len(payload) - len(payload) % fdsize])
            fds.extend(a)
    if not data and not fds:
        return None
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or len(fds) > MAX_FDS:
        for fd in fds:
            os.close(fd)
        raise ProtocolError("message or its descriptors were truncated "
                            f"(at most {MAX_MSG} bytes and {MAX_FDS} descriptors)")
    return data, fds
