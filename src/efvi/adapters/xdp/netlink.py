"""XDP attach/detach over rtnetlink (``RTM_SETLINK`` / ``IFLA_XDP``): the fallback path.

efvi attaches through a bpf_link (:func:`efvi.bpf.syscall.link_create`), which the
kernel removes when the process dies. Netlink attachments outlive the process, so
they are used only where bpf_link is unavailable (kernels before 5.9) and to remove a
stale program left by a crashed efvi run or, with ``force=1``, a foreign one.
Control path only; runs in the calling thread's network namespace.
"""

from __future__ import annotations

import errno as _errno
import struct

from efvi.bpf.syscall import (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE,
                                   XDP_FLAGS_UPDATE_IF_NOEXIST)
from efvi.errors import SetupError
from efvi.netutil import (IFLA_XDP, IFLA_XDP_FD, IFLA_XDP_FLAGS, NLA_F_NESTED, NLM_F_ACK,
                          NLM_F_REQUEST, RTM_SETLINK, Netlink, NetlinkError, link_info, nla,
                          nla_s32, nla_u32)

_IFINFO = struct.Struct("=BxHiII")
MODE_FLAGS = {"drv": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE}


def set_xdp(ifindex: int, prog_fd: int, flags: int) -> None:
    """Attach ``prog_fd`` (−1 = detach) with XDP_FLAGS ``flags``; raise SetupError."""
    xdp = nla_s32(IFLA_XDP_FD, prog_fd) + nla_u32(IFLA_XDP_FLAGS, flags)
    payload = _IFINFO.pack(0, 0, ifindex, 0, 0) + nla(IFLA_XDP | NLA_F_NESTED, xdp)
    with Netlink() as nl:
        try:
            nl.request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, payload)
        except NetlinkError as exc:
            what = "detach" if prog_fd < 0 else "attach"
            raise SetupError(f"netlink XDP {what} on ifindex {ifindex} failed: {exc.strerror}",
                             errno=exc.errno or _errno.EIO,
                             hint="needs CAP_NET_ADMIN in the interface's namespace"
                             if exc.errno == _errno.EPERM else "") from None


def attach(ifindex: int, prog_fd: int, mode: str) -> None:
    """Attach in ``mode`` (drv|skb), refusing to replace an existing program."""
    set_xdp(ifindex, prog_fd, MODE_FLAGS[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST)


def detach(ifindex: int, mode: str | None = None) -> None:
    """Detach whatever netlink-attached program runs in ``mode`` (default: the one seen)."""
    if mode is None:
        mode = link_info(ifindex).xdp_attached
    if mode not in MODE_FLAGS:
        return
    set_xdp(ifindex, -1, MODE_FLAGS[mode])
