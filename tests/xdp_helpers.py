"""Shared helpers of the xdp test modules (not a test module itself)."""

from __future__ import annotations

import os
import socket

import pytest

from efvi.testing import netns


def why_no_xdp() -> str | None:
    """None if AF_XDP tests can run here, else the reason."""
    reason = netns.why_unavailable()
    if reason:
        return reason
    try:
        socket.socket(44, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        return f"no AF_XDP sockets here ({exc.strerror}): needs CONFIG_XDP_SOCKETS and root"
    return None


def skip_unless_xdp() -> None:
    reason = why_no_xdp()
    if reason:
        pytest.skip(reason)


def udp_kernel_count(ns: str) -> int:
    """UDP datagrams the kernel of ``ns`` received (delivered + to closed ports)."""
    with netns.enter(ns):
        with open("/proc/thread-self/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    head, vals = lines[0], lines[1]
    d = dict(zip(head[1:], map(int, vals[1:])))
    return d["InDatagrams"] + d["NoPorts"] + d["InErrors"]


def xdp_attached(side: netns.Side) -> str:
    """``ip link`` output line mentioning XDP on the side's interface ("" if none)."""
    out = side.run("ip", "link", "show", "dev", side.ifname, check=False).stdout
    return "\n".join(ln for ln in out.splitlines() if "xdp" in ln or "prog/" in ln)


def no_xdp_left(*sides: netns.Side) -> None:
    """Assert that no XDP program is attached to any of the sides' interfaces."""
    for s in sides:
        if not os.path.exists(f"/var/run/netns/{s.netns}"):
            continue
        left = xdp_attached(s)
        assert not left, f"XDP program left on {s.ifname}: {left}"
