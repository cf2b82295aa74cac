"""Network namespaces and veth pairs through iproute2 (needs root; control path only).

The pieces :mod:`efvi.apps.lab` (``efvi lab up|down``) and the test fixtures in
:mod:`efvi.testing.netns` share: run ``ip``, add/delete/list namespaces, create a veth
pair whose two ends are born inside two namespaces (nothing appears in the root
namespace, even for a moment), give an end its MAC, address, MTU and a permanent
neighbour entry for its peer, and move the calling thread into a namespace.

Every call runs ``ip`` (a process each: milliseconds) and raises
:class:`~efvi.errors.SetupError` naming the command and iproute2's message when it
fails (``check=False`` returns the result instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator

from efvi.errors import SetupError

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

__all__ = ["add_netns", "add_veth_pair", "configure_end", "del_netns", "enter", "ip",
           "list_netns", "why_unavailable"]


def why_unavailable() -> str | None:
    """None if namespaces and veth pairs can be made here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; with ``check``, a failure raises SetupError with ip's message."""
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        msg = " ".join((res.stderr or res.stdout).split()) or f"exit status {res.returncode}"
        raise SetupError(f"`ip {' '.join(args)}` failed: {msg}", errno=errno.EIO,
                         hint="check that iproute2 works here and the names are free")
    return res


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()]


def add_netns(name: str) -> None:
    """Create namespace ``name`` with its loopback up."""
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def del_netns(name: str) -> bool:
    """Delete namespace ``name`` (and the interfaces in it); False if it was not there."""
    return ip("netns", "del", name, check=False).returncode == 0


def add_veth_pair(ns_a: str, if_a: str, ns_b: str, if_b: str, queues: int = 1) -> None:
    """A veth pair with end ``if_a`` created in ``ns_a`` and ``if_b`` in ``ns_b``."""
    q = str(queues)
    ip("link", "add", if_a, "numrxqueues", q, "numtxqueues", q, "netns", ns_a,
       "type", "veth", "peer", "name", if_b, "numrxqueues", q, "numtxqueues", q,
       "netns", ns_b)


def configure_end(ns: str, ifname: str, mac: str, addr: str, prefix_len: int,
                  peer_ip: str, peer_mac: str, mtu: int = 1500,
                  ipv6: bool = False) -> None:
    """Give one end its MAC, MTU and address, bring it up and add a permanent neighbour
    entry for its peer (so senders need no ARP); IPv6 off unless ``ipv6`` (no router
    solicitations or DAD frames in captures)."""
    ip("-n", ns, "link", "set", ifname, "address", mac, "mtu", str(mtu))
    ip("-n", ns, "addr", "add", f"{addr}/{prefix_len}", "dev", ifname)
    if not ipv6:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        f"net.ipv6.conf.{ifname}.disable_ipv6=1"], capture_output=True)
    ip("-n", ns, "link", "set", ifname, "up")
    ip("-n", ns, "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", ifname,
       "nud", "permanent")


@contextlib.contextmanager
def enter(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block, then back.

    Sockets created inside stay bound to that namespace after the block.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    except OSError:
        os.close(own)
        raise
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
        try:
            yield
        finally:
            _libc.setns(own, _CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)
