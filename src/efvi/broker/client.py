"""The client end of ``efvid``: one connection per adapter, one request at a time.

Adapters use it when the process lacks the privileges their setup needs (or when told
to by the URL option ``broker=1`` / the environment variable ``EFVI_BROKER=1``):
:func:`use_broker` decides, :class:`BrokerClient` carries the requests. The broker's
refusals come back as :class:`~efvi.errors.SetupError` with its message and hint (a
policy refusal names the grant that refused).

Control path only: nothing here runs per packet.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import threading
from typing import Any

import efvi.caps as caps
from efvi.broker.protocol import ProtocolError, decode_reply, recv_msg, send_msg
from efvi.errors import SetupError

#: Where efvid listens unless ``EFVI_BROKER_SOCKET`` or ``efvid --socket`` say otherwise.
DEFAULT_SOCKET = "/run/efvi/efvid.sock"

def socket_path() -> str:
    return os.environ.get("EFVI_BROKER_SOCKET") or DEFAULT_SOCKET


def effective_caps() -> int:
    """This process's effective capability set (see :mod:`efvi.caps`)."""
    return caps.effective()


def use_broker(adapter: str, option: str | bool | None) -> bool:
    """Whether ``adapter`` should go through efvid.

    ``option`` is the URL's ``broker=`` value: True/"1" always, False/"0" never,
    None/"auto" when this process lacks a capability the direct path needs (sys_admin
    stands in for bpf/perfmon on old kernels) *and* a broker socket exists — without
    one the direct path runs and fails with its own EPERM, whose hint names efvid. When
    the broker is asked for (``1``) and not running, the error says how to start it."""
    env = os.environ.get("EFVI_BROKER", "").lower()
    if option in (None, "auto", ""):
        if env in ("1", "yes", "on", "true"):
            return True
        if env in ("0", "no", "off", "false"):
            return False
        if caps.missing(adapter, effective_caps()):
            return os.path.exists(socket_path())
        return False
    return option in (True, "1", "true", "yes", "on")


class BrokerClient:
    """One connection to efvid (a ``SOCK_SEQPACKET`` Unix socket)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or socket_path()
        self._lock = threading.Lock()
        self._next = 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.path)
        except OSError as exc:
            s.close()
            if exc.errno in (_errno.ENOENT, _errno.ECONNREFUSED):
                raise SetupError(
                    f"this process lacks the privileges for the adapter and efvid is not "
                    f"running (nothing listens on {self.path})", errno=exc.errno,
                    hint="start the broker as root: `systemctl enable --now efvid` or "
                         "`efvi daemon &` (or run this command as root)") from None
            if exc.errno == _errno.EACCES:
                raise SetupError(f"no permission to connect to efvid at {self.path}",
                                 errno=exc.errno,
                                 hint="the socket's mode or directory refuses this user: "
                                      "see `efvid --socket-mode`") from None
            raise SetupError(f"cannot connect to efvid at {self.path}: {exc.strerror}",
                             errno=exc.errno or _errno.EIO) from None
        self.sock = s
        self.info = self.call("hello")[0]

    def call(self, op: str, fds: list[int] | None = None,
             **args: Any) -> tuple[dict[str, Any], list[int]]:
        """Send one request and wait for its reply: (result, descriptors received).

        SetupError with the broker's message, errno and hint when it refuses."""
        with self._lock:
            if self.sock.fileno() < 0:
                raise SetupError("the connection to efvid is closed", errno=_errno.EBADF)
            rid = self._next
            self._next += 1
            try:
                send_msg(self.sock, {"op": op, "id": rid, "args": args}, fds)
                got = recv_msg(self.sock)
            except (OSError, ProtocolError) as exc:
                raise SetupError(f"efvid at {self.path} failed during {op}: {exc}",
                                 errno=getattr(exc, "errno", None) or _errno.EIO,
                                 hint="see efvid's log (journalctl -u efvid)") from None
            if got is None:
                raise SetupError(f"efvid at {self.path} closed the connection during {op}",
                                 errno=_errno.ECONNRESET, hint="see efvid's log")
            data, rfds = got
            try:
                body = decode_reply(data)
            except ProtocolError as exc:
                for fd in rfds:
                    os.close(fd)
                raise SetupError(f"efvid sent a malformed reply to {op}: {exc}",
                                 errno=_errno.EPROTO) from None
        if not body["ok"]:
            for fd in rfds:
                os.close(fd)
            raise SetupError(body["error"], errno=int(body.get("errno") or _errno.EPERM),
                             hint=str(body.get("hint") or ""))
        result = body.get("result") or {}
        return result, rfds

    def close(self) -> None:
        """Close the connection: the broker releases everything it holds for us."""
        if self.sock.fileno() >= 0:
            self.sock.close()
