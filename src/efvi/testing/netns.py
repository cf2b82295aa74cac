"""Network namespaces and veth pairs for integration tests (needs root).

:func:`veth_pair` creates two namespaces joined by a veth pair, with addresses from
198.18.0.0/15 (the benchmarking range) and permanent neighbour entries, and removes
everything on exit — also when the test fails, and at interpreter exit if the
process is interrupted. Names are unique per run (pid + counter; interface names fit
IFNAMSIZ); namespaces left by a process that was killed outright are removed by the
next :func:`veth_pair` call, which finds their owner's pid gone.

Code that must run *inside* a namespace uses :func:`enter` (``setns`` on the calling
thread) or runs a subprocess with ``ip netns exec NAME``. The iproute2 plumbing is
:mod:`efvi.netns`, shared with ``efvi lab``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from efvi.netns import add_netns, add_veth_pair, configure_end, enter, why_unavailable
from efvi.netns import ip as _ip

__all__ = ["Side", "Three", "VethPair", "enter", "three_namespaces", "veth_pair",
           "why_unavailable"]

_counter = itertools.count()
_live: set[str] = set()


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
            add_netns(ns)
            _live.add(ns)
        add_veth_pair(ns_a, if_a, ns_b, if_b, queues)
        for ns, ifn, mac, ip, peer_ip, peer_mac in ((ns_a, if_a, mac_a, ip_a, ip_b, mac_b),
                                                    (ns_b, if_b, mac_b, ip_b, ip_a, mac_a)):
            configure_end(ns, ifn, mac, ip, 24, peer_ip, peer_mac, mtu)
        yield VethPair(Side(ns_a, if_a, mac_a, ip_a), Side(ns_b, if_b, mac_b, ip_b))
    finally:
        _cleanup(ns_a)
        _cleanup(ns_b)


@dataclass(frozen=True)
class Three:
    """Three namespaces in a line: A --veth-- F --veth-- C (see :func:`three_namespaces`)."""

    a: Side  # in A, facing F
    fa: Side  # in F, facing A (no address)
    fc: Side  # in F, facing C (no address)
    c: Side  # in C, facing F


@contextlib.contextmanager
def three_namespaces(subnet: int = 50, mtu_c: int = 1500,
                     tx_checksum_a: bool = False) -> Iterator[Three]:
    """A --veth-- F --veth-- C for forwarding tests: A is 198.18.<subnet>.1, C .2, one
    L2 segment through F, whose two interfaces have no address (a forwarder or a
    bridge in F joins them). Permanent neighbour entries on A and C; IPv6 off.
    ``mtu_c`` is the MTU of the F–C link. Unless ``tx_checksum_a``, A's TX checksum
    offload is off: a veth hands locally sent frames on with a partial checksum, which
    a forwarder outside the kernel would send as it is (a real NIC fills it in).
    Everything is removed on exit, also on failure."""
    _clear_stale()
    tag = f"{os.getpid() % 100000}{next(_counter)}"
    pid = os.getpid()
    ns = {k: f"ef{k}{pid}_{tag}" for k in ("A", "B")}
    ns_a, ns_f, ns_c = ns["A"], ns["B"], f"efA{pid}_c{tag}"
    if_a, if_fa, if_fc, if_c = (f"{p}{tag}"[:15] for p in ("ta", "tf", "tg", "tc"))
    mac_a, mac_c = f"02:00:c6:12:{subnet:02x}:01", f"02:00:c6:12:{subnet:02x}:02"
    ip_a, ip_c = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    made: list[str] = []
    try:
        for n in (ns_a, ns_f, ns_c):
            _ip("netns", "add", n)
            made.append(n)
            _live.add(n)
            _ip("-n", n, "link", "set", "lo", "up")
            subprocess.run(["ip", "netns", "exec", n, "sysctl", "-qw",
                            "net.ipv6.conf.all.disable_ipv6=1"], capture_output=True)
        _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_fa,
            "netns", ns_f)
        _ip("link", "add", if_fc, "netns", ns_f, "type", "veth", "peer", "name", if_c,
            "netns", ns_c)
        for n, ifn, mac, ip, peer_ip, peer_mac in ((ns_a, if_a, mac_a, ip_a, ip_c, mac_c),
                                                   (ns_c, if_c, mac_c, ip_c, ip_a, mac_a)):
            _ip("-n", n, "link", "set", ifn, "address", mac)
            _ip("-n", n, "addr", "add", f"{ip}/24", "dev", ifn)
            _ip("-n", n, "link", "set", ifn, "up")
            _ip("-n", n, "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", ifn,
                "nud", "permanent")
        if not tx_checksum_a:
            subprocess.run(["ip", "netns", "exec", ns_a, "ethtool", "-K", if_a, "tx", "off"],
                           capture_output=True, check=True)
        _ip("-n", ns_c, "link", "set", if_c, "mtu", str(mtu_c))
        _ip("-n", ns_f, "link", "set", if_fc, "mtu", str(mtu_c))
        macs = {}
        for ifn in (if_fa, if_fc):
            _ip("-n", ns_f, "link", "set", ifn, "up")
            out = _ip("-n", ns_f, "-br", "link", "show", ifn).stdout.split()
            macs[ifn] = out[2] if len(out) > 2 else ""
        yield Three(Side(ns_a, if_a, mac_a, ip_a), Side(ns_f, if_fa, macs[if_fa], ""),
                    Side(ns_f, if_fc, macs[if_fc], ""), Side(ns_c, if_c, mac_c, ip_c))
    finally:
        for n in made:
            _cleanup(n)
