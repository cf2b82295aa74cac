"""Link state of one interface, cheap enough for a once-a-second check (support layer).

:class:`LinkProbe` answers ``up`` / ``no-carrier`` / ``down`` / ``gone`` with two
ioctls on a socket kept in the interface's namespace; the xdp and packet adapters'
``link_state()`` (the adapter contract, :meth:`efvi.Driver.link_state`) use it, and
:func:`link_state_message` is the one line a tool stops with.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import socket
import struct

__all__ = ["LINK_STATES", "LinkProbe", "link_state_message"]

_SIOCGIFNAME = 0x8910
_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1
_IFF_RUNNING = 0x40
#: the values of :meth:`LinkProbe.state` (and of ``Driver.link_state()``)
LINK_STATES = ("up", "no-carrier", "down", "gone")


class LinkProbe:
    """Watch one interface of the namespace this probe was made in: :meth:`state`.

    Holds an ``AF_UNIX`` socket made in that namespace (interface ioctls on it answer
    for its namespace, whichever namespace the calling thread is in later); needs no
    privilege.
    """

    def __init__(self, ifindex: int) -> None:
        self.ifindex = ifindex
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def state(self) -> str:
        """``up``, ``no-carrier`` (up, but no carrier: cable out, veth peer down),
        ``down`` (administratively) or ``gone`` (deleted, or moved to another
        namespace). Cost: two ``ioctl`` calls (SIOCGIFNAME, SIOCGIFFLAGS)."""
        s = self._sock
        if s is None:
            return "gone"
        try:
            req = fcntl.ioctl(s.fileno(), _SIOCGIFNAME, struct.pack("16si20x", b"", self.ifindex))
            name = req[:16]
            req = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack("16sH22x", name, 0))
        except OSError as exc:
            if exc.errno in (_errno.ENODEV, _errno.ENXIO):
                return "gone"
            raise
        (flags,) = struct.unpack_from("H", req, 16)
        if not flags & _IFF_UP:
            return "down"
        return "up" if flags & _IFF_RUNNING else "no-carrier"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def link_state_message(ifname: str, state: str) -> str:
    """One line saying what ``state`` (of :class:`LinkProbe`) means for ``ifname``;
    empty for ``up``."""
    return {
        "gone": f"interface {ifname} is gone (deleted, or moved to another network "
                "namespace) — stopped; the counts above are up to that moment",
        "down": f"interface {ifname} is down — bring it up (ip link set dev {ifname} up)",
        "no-carrier": f"{ifname} has no carrier (peer down) — plug the cable in, or set "
                      "the other end up (a veth pair needs both ends up)",
    }.get(state, "")
