"""``efvi lab``: two network namespaces joined by a veth pair, to try every tool on.

``up`` makes namespaces ``NAME-a`` and ``NAME-b`` (NAME is ``efvi`` or starts with it)
and a veth pair whose ends, ``veth-a`` and ``veth-b``, are created inside them — the
root namespace and its interfaces (eth0, ...) are never touched. The ends get
198.18.S.1/24 and 198.18.S.2/24 from the benchmarking range 198.18.0.0/15 (S from
``subnet``; 256–511 use 198.19.x), MACs ``02:00:c6:12:SS:01``/``02``, IPv6 off and a
permanent neighbour entry for each other, so ``efvi send`` needs no ARP. :meth:`Lab.commands`
lists ready-to-run ``ip netns exec`` lines for sink, send and capture on ``xdp`` and
``packet``. ``down`` deletes the two namespaces (the kernel deletes the veth with them).

Idempotent: ``up`` on a lab that is up as asked changes nothing; a half-made lab (one
namespace, no veth, an address missing) is deleted and made again; a lab up with
another subnet is refused (``down`` first). ``down`` on a lab that is not there is a
no-op. Control path only; needs root (``ip netns add`` needs CAP_SYS_ADMIN).
"""

from __future__ import annotations

import errno
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from efvi import netns
from efvi.errors import SetupError

__all__ = ["DEFAULT_NAME", "Lab", "LabEnd", "LabState", "down", "plan", "status", "up"]

DEFAULT_NAME = "efvi"
#: every name lab makes derives from NAME, and NAME from this fixed prefix
NAME_RE = re.compile(r"^efvi(?:[a-z0-9]*)(?:-[a-z0-9]+)*$")
MAX_NAME = 24
MAX_SUBNET = 511
IFNAMES = ("veth-a", "veth-b")


@dataclass(frozen=True)
class LabEnd:
    """One end of the lab's veth pair."""

    netns: str
    ifname: str
    mac: str
    ip: str
    prefix_len: int = 24

    def exec(self, *cmd: str) -> str:
        """``ip netns exec NETNS CMD...`` as one shell line."""
        return " ".join(("ip", "netns", "exec", self.netns, *cmd))


@dataclass(frozen=True)
class Lab:
    """What a lab is (or will be): its name, subnet and two ends."""

    name: str
    subnet: int
    a: LabEnd
    b: LabEnd

    @property
    def network(self) -> str:
        return f"{self.a.ip.rsplit('.', 1)[0]}.0/24"

    def commands(self, efvi: str = "efvi") -> list[tuple[str, str]]:
        """Ready-to-run lines as ``(comment, command)``: receivers in ``NAME-a``,
        senders in ``NAME-b``; ``efvi`` is how to run efvi (a path if it is not on
        PATH). Start each receiver, then its sender in another terminal."""
        a, b = self.a, self.b
        e = efvi
        return [
            ("xdp: the sink steals UDP port 5000 on veth-a (start it first)",
             a.exec(e, "sink", "-n", "10000", f"xdp:{a.ifname}", f"udp:{a.ip}:5000")),
            ("... and the sender in the other namespace",
             b.exec(e, "send", "-n", "10000", f"xdp:{b.ifname}", a.ip, "5000")),
            ("packet: the sink copies UDP port 5001 (the kernel keeps delivering it)",
             a.exec(e, "sink", "-n", "1000", f"packet:{a.ifname}", f"udp:{a.ip}:5001,sniff")),
            ("... and its sender",
             b.exec(e, "send", "-n", "1000", f"packet:{b.ifname}", a.ip, "5001")),
            ("capture on xdp (a tcpdump expression runs in the XDP program)",
             a.exec(e, "capture", "-i", f"xdp:{a.ifname}", "-c", "5", "udp", "port", "5002")),
            ("capture on packet to a file (pcapng, ns timestamps)",
             a.exec(e, "capture", "-i", f"packet:{a.ifname}", "-c", "5", "-w", "lab.pcapng",
                    "udp", "port", "5002")),
            ("... and traffic for either capture",
             b.exec(e, "send", "-n", "5", f"packet:{b.ifname}", a.ip, "5002")),
            ("what each adapter can do on veth-a",
             a.exec(e, "info", a.ifname)),
            ("remove the lab", f"{e} lab down" + (f" --name {self.name}"
                                                 if self.name != DEFAULT_NAME else "")),
        ]

    def as_dict(self, efvi: str = "efvi") -> dict[str, Any]:
        return {"name": self.name, "network": self.network, "a": asdict(self.a),
                "b": asdict(self.b),
                "commands": [{"what": w, "command": c} for w, c in self.commands(efvi)]}


@dataclass(frozen=True)
class LabState:
    """What is there now: ``state`` is ``up`` (as planned), ``down`` (nothing),
    ``partial`` (some of it) or ``other`` (up with other addresses or MACs)."""

    state: str
    lab: Lab
    detail: str = ""


def check_name(name: str) -> str:
    """``name`` if it is a lab name, else SetupError (EINVAL) saying what is allowed."""
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise SetupError(f"lab name {name!r} is not allowed", errno=errno.EINVAL,
                         hint=f"use 'efvi' or a name starting with 'efvi' (lowercase letters, "
                              f"digits, '-'; at most {MAX_NAME} characters), e.g. efvi2")
    return name


def plan(name: str = DEFAULT_NAME, subnet: int = 0) -> Lab:
    """The lab ``name`` would be (no side effects); SetupError for a bad name or subnet."""
    check_name(name)
    if not 0 <= subnet <= MAX_SUBNET:
        raise SetupError(f"subnet {subnet} is outside 198.18.0.0/15", errno=errno.EINVAL,
                         hint=f"give 0..{MAX_SUBNET} (0-255: 198.18.S.0/24, "
                              f"256-511: 198.19.S-256.0/24)")
    net = f"198.{18 + subnet // 256}.{subnet % 256}"
    mac = f"02:00:c6:12:{subnet % 256:02x}"
    return Lab(name, subnet,
               LabEnd(f"{name}-a", IFNAMES[0], f"{mac}:01", f"{net}.1"),
               LabEnd(f"{name}-b", IFNAMES[1], f"{mac}:02", f"{net}.2"))


def _require_root() -> None:
    why = netns.why_unavailable()
    if why:
        raise SetupError(f"the lab {why}", errno=errno.EPERM,
                         hint="run it as root (sudo efvi lab ...)")


def _read(end: LabEnd) -> dict[str, Any] | None:
    """``ip -j addr show`` of ``end``'s interface, or None if it is not there."""
    res = netns.ip("-n", end.netns, "-j", "addr", "show", "dev", end.ifname, check=False)
    try:
        info = json.loads(res.stdout)[0] if res.returncode == 0 else None
    except (ValueError, IndexError):
        return None
    return info if isinstance(info, dict) else None


def _inet(info: dict[str, Any]) -> list[str]:
    return [f"{a.get('local')}/{a.get('prefixlen')}" for a in info.get("addr_info", [])
            if a.get("family") == "inet"]


def _subnet_of(info: dict[str, Any]) -> int | None:
    """The lab subnet an end's address says (198.18.S.x → S, 198.19.S.x → 256 + S)."""
    for addr in _inet(info):
        parts = addr.split("/")[0].split(".")
        if len(parts) == 4 and parts[0] == "198" and parts[1] in ("18", "19"):
            return (int(parts[1]) - 18) * 256 + int(parts[2])
    return None


def _end_state(end: LabEnd, info: dict[str, Any] | None) -> tuple[str, str]:
    """``("up", "")`` if ``end`` is configured as planned, else the state and why."""
    if info is None:
        return "partial", f"{end.ifname} missing in {end.netns}"
    if info.get("address") != end.mac:
        return "other", f"{end.ifname} in {end.netns} has MAC {info.get('address')}, not {end.mac}"
    addrs, want = _inet(info), f"{end.ip}/{end.prefix_len}"
    if addrs != [want]:
        return "other", f"{end.ifname} in {end.netns} has {addrs or 'no IPv4 address'}, not {want}"
    if "UP" not in info.get("flags", []):
        return "partial", f"{end.ifname} in {end.netns} is down"
    return "up", ""


def status(name: str = DEFAULT_NAME, subnet: int | None = None) -> LabState:
    """Whether lab ``name`` is up (as planned for ``subnet``; None: whatever subnet
    its ``veth-a`` address says, which is then the ``lab`` returned)."""
    _require_root()
    lab = plan(name, subnet or 0)
    present = set(netns.list_netns())
    have = [e.netns for e in (lab.a, lab.b) if e.netns in present]
    if not have:
        return LabState("down", lab)
    if len(have) == 1:
        return LabState("partial", lab, f"only {have[0]} exists")
    info_a = _read(lab.a)
    if subnet is None and info_a is not None:
        found = _subnet_of(info_a)
        if found is not None and 0 <= found <= MAX_SUBNET:
            lab = plan(name, found)
    for end, info in ((lab.a, info_a), (lab.b, _read(lab.b))):
        state, why = _end_state(end, info)
        if state != "up":
            return LabState(state, lab, why)
    return LabState("up", lab)


def up(name: str = DEFAULT_NAME, subnet: int = 0) -> tuple[Lab, bool]:
    """Make lab ``name`` (or find it up as asked): ``(lab, created)``.

    A half-made lab is deleted and made again; a lab up with another subnet or MACs
    raises SetupError (EEXIST) naming ``efvi lab down``. On a failure midway what was
    made is deleted again.
    """
    lab = plan(name, subnet)
    st = status(name, subnet)
    if st.state == "up":
        return lab, False
    if st.state == "other":
        raise SetupError(f"lab {name} is up but not as asked: {st.detail}", errno=errno.EEXIST,
                         hint=f"efvi lab down{'' if name == DEFAULT_NAME else ' --name ' + name}"
                              " first, or use another --name")
    if st.state == "partial":
        down(name)
    try:
        for end in (lab.a, lab.b):
            netns.add_netns(end.netns)
        netns.add_veth_pair(lab.a.netns, lab.a.ifname, lab.b.netns, lab.b.ifname)
        for end, peer in ((lab.a, lab.b), (lab.b, lab.a)):
            netns.configure_end(end.netns, end.ifname, end.mac, end.ip, end.prefix_len,
                                peer.ip, peer.mac)
    except BaseException:
        down(name)
        raise
    return lab, True


def down(name: str = DEFAULT_NAME) -> list[str]:
    """Delete lab ``name``'s namespaces (and with them its veth): the names deleted."""
    _require_root()
    lab = plan(name)
    present = set(netns.list_netns())
    gone = []
    for end in (lab.a, lab.b):
        if end.netns in present and netns.del_netns(end.netns):
            gone.append(end.netns)
    return gone
