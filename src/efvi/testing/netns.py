"""Network namespaces and veth pairs for integration tests (needs root).

:func:`veth_pair` creates two namespaces joined by a veth pair, with addresses from
198.18.0.0/15 (the benchmarking range) and permanent neighbour entries, and removes
everything on exit — also when the test fails, and at interpreter exit if the
process is interrupted. Names are unique per run (pid + counter; interface names fit
IFNAMSIZ); namespaces left by a process that was killed outright are removed by the
next :func:`veth_pair` call, which finds their owner's pid gone.

Code that must run *inside* a namespace uses :func:`enter` (``setns`` on the calling
thread) or runs a subprocess with ``ip netns exec NAME``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

_counter = itertools.count()
_live: set[str] = set()
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def why_unavailable() -> str | None:
    """None if netns/veth tests can run here, else the reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class Side:
    """One end of a veth pair: its namespace, interface, addresses."""

    netns: str
    ifname: str
    mac: str
    ip: str

    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            **kw: object) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside this side's namespace."""
        res: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.netns, *cmd], check=check, capture_output=True,
            text=True, timeout=timeout, **kw)
        return res

    def popen(self, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kw)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class VethPair:
    a: Side
    b: Side


def _cleanup(name: str) -> None:
    _ip("netns", "del", name, check=False)
    _live.discard(name)


@atexit.register
def _cleanup_all() -> None:
    for name in list(_live):
        _cleanup(name)


_stale_checked = False


def _clear_stale() -> None:
    """Delete namespaces left by test processes that died without cleaning up (SIGKILL):
    their names carry the owner's pid (``efA<pid>_<tag>``)."""
    global _stale_checked
    if _stale_checked:
        return
    _stale_checked = True
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name[:3] in ("efA", "efB") and "_" in name:
            pid = name[3:].split("_", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                _cleanup(name)


@contextlib.contextmanager
def veth_pair(queues: int = 1, subnet: int = 0, mtu: int = 1500,
              xdp_peer_pass: bool = False) -> Iterator[VethPair]:
    """Two namespaces ``efA*``/``efB*`` joined by veth ``ea*``/``eb*``.

    Addresses 198.18.<subnet>.1/24 (side a) and .2 (side b), MACs
    02:00:c6:12:<subnet>:01/02. ``queues`` sets the veth RX/TX queue count.
    """
    _clear_stale()
    tag = f"{os.getpid() % 100000}{next(_counter)}"
    ns_a, ns_b = f"efA{os.getpid()}_{tag}", f"efB{os.getpid()}_{tag}"
    if_a, if_b = f"ea{tag}"[:15], f"eb{tag}"[:15]
    mac_a, mac_b = f"02:00:c6:12:{subnet:02x}:01", f"02:00:c6:12:{subnet:02x}:02"
    ip_a, ip_b = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    try:
        for ns in (ns_a, ns_b):
            _ip("netns", "add", ns)
            _live.add(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", if_a, "numrxqueues", str(queues), "numtxqueues", str(queues),
            "netns", ns_a, "type", "veth", "peer", "name", if_b,
            "numrxqueues", str(queues), "numtxqueues", str(queues), "netns", ns_b)
        for ns, ifn, mac, ip, peer_ip, peer_mac in ((ns_a, if_a, mac_a, ip_a, ip_b, mac_b),
                                                    (ns_b, if_b, mac_b, ip_b, ip_a, mac_a)):
            _ip("-n", ns, "link", "set", ifn, "address", mac, "mtu", str(mtu))
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", ifn)
            _ip("-n", ns, "link", "set", ifn, "up")
            _ip("-n", ns, "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", ifn,
                "nud", "permanent")
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            f"net.ipv6.conf.{ifn}.disable_ipv6=1"], capture_output=True)
        yield VethPair(Side(ns_a, if_a, mac_a, ip_a), Side(ns_b, if_b, mac_b, ip_b))
    finally:
        _cleanup(ns_a)
        _cleanup(ns_b)


@contextlib.contextmanager
def enter(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block, then back.

    Sockets created inside stay bound to that namespace after the block.
    """
    own = os.open(f"/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
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
