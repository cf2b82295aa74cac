"""``efvid``'s policy: who may use which interfaces, queues, filters and how much.

The policy is a TOML file (read with :mod:`tomllib`) of ``[[grant]]`` tables; a
request is allowed when one grant matching the caller's credentials allows all of
it. **Default deny**: no file, or no matching grant, refuses everything except to
uid 0 (root could do it directly anyway). Example::

    [[grant]]
    name = "market-data"            # named in logs and in refusals
    users = ["alice", 1001]         # user names or uids
    groups = ["trading"]            # group names or gids (primary or supplementary)
    adapters = ["xdp", "packet"]
    interfaces = ["eth1", "veth*"]  # fnmatch patterns
    queues = [0, 1]                 # xdp RX queues (omit: any)
    filters = ["udp", "tcp"]        # udp, tcp, eth, ethertype, ipproto
    addresses = ["198.18.0.0/15"]   # local address of udp/tcp filters
    ports = ["5000-5999", 7000]     # local port of udp/tcp filters
    sniff_all = false               # unicast-all, multicast-all, mismatch, port sniff,
                                    # bpf/expression filters: frames of any flow
    max_vis = 8                     # sockets held at once
    max_memory_mb = 256             # packet memory registered at once

Pure functions over the parsed policy and the caller's (uid, gids): no I/O but
:meth:`Policy.load`.
"""

from __future__ import annotations

import fnmatch
import grp
import ipaddress
import pwd
import tomllib
from dataclasses import dataclass, field
from typing import Any

from efvi.errors import SetupError

_KEYS = {"name", "users", "groups", "adapters", "interfaces", "queues", "filters",
         "addresses", "ports", "sniff_all", "max_vis", "max_memory_mb"}
FILTER_CLASSES = ("udp", "tcp", "eth", "ethertype", "ipproto")


class PolicyError(SetupError):
    """The policy file is malformed (names the file, the grant and the field)."""


class Denied(SetupError):
    """A request the policy refuses; the message names the grant(s) considered."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno=13,
                         hint="ask the administrator to extend the efvid policy "
                              "(docs/security.md)")


@dataclass(frozen=True)
class Caller:
    """A client's credentials (``SO_PEERCRED``) and its groups."""

    uid: int
    gid: int
    pid: int
    gids: frozenset[int] = frozenset()

    @classmethod
    def from_peer(cls, pid: int, uid: int, gid: int) -> "Caller":
        gids = {gid}
        try:
            name = pwd.getpwuid(uid).pw_name
            gids.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
        except KeyError:
            pass
        return cls(uid, gid, pid, frozenset(gids))

    def __str__(self) -> str:
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = str(self.uid)
        return f"user {name} (uid {self.uid}, pid {self.pid})"


@dataclass(frozen=True)
class Grant:
    name: str
    uids: frozenset[int]
    gids: frozenset[int]
    adapters: tuple[str, ...] = ("xdp", "packet")
    interfaces: tuple[str, ...] = ()
    queues: frozenset[int] | None = None
    filters: tuple[str, ...] = ("udp", "tcp")
    addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    sniff_all: bool = False
    max_vis: int = 8
    max_memory: int = 256 << 20

    def applies(self, c: Caller) -> bool:
        return c.uid in self.uids or bool(self.gids & c.gids)


def _fail(where: str, msg: str) -> PolicyError:
    return PolicyError(f"{where}: {msg}", errno=22,
                       hint="fix the policy file (see docs/security.md) and restart efvid")


def _ids(where: str, values: Any, lookup: Any) -> frozenset[int]:
    if not isinstance(values, list):
        raise _fail(where, "must be a list of names or numbers")
    out = set()
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool):
            out.add(v)
        elif isinstance(v, str):
            try:
                out.add(lookup(v))
            except KeyError:
                raise _fail(where, f"no such name {v!r}") from None
        else:
            raise _fail(where, f"{v!r} is not a name or a number")
    return frozenset(out)


def _ports(where: str, values: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(values, list):
        raise _fail(where, "must be a list of ports or 'LO-HI' ranges")
    out = []
    for v in values:
        try:
            if isinstance(v, int) and not isinstance(v, bool):
                lo = hi = v
            else:
                a, _, b = str(v).partition("-")
                lo, hi = int(a), int(b or a)
        except ValueError:
            raise _fail(where, f"{v!r} is not a port or a LO-HI range") from None
        if not 0 <= lo <= hi <= 65535:
            raise _fail(where, f"{v!r} is outside 0..65535")
        out.append((lo, hi))
    return tuple(out)


def _grant(i: int, raw: Any, path: str) -> Grant:
    where = f"{path}: grant {i + 1}"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise _fail(where, f"unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    name = str(raw.get("name", f"grant {i + 1}"))
    where = f"{path}: grant {name!r}"
    uids = _ids(f"{where}.users", raw.get("users", []), lambda n: pwd.getpwnam(n).pw_uid)
    gids = _ids(f"{where}.groups", raw.get("groups", []), lambda n: grp.getgrnam(n).gr_gid)
    if not uids and not gids:
        raise _fail(where, "names no users or groups (it would grant nothing)")
    adapters = tuple(raw.get("adapters", ["xdp", "packet"]))
    if not set(adapters) <= {"xdp", "packet"}:
        raise _fail(f"{where}.adapters", f"{list(adapters)}: only xdp and packet")
    ifaces = tuple(str(x) for x in raw.get("interfaces", []))
    if not ifaces:
        raise _fail(f"{where}.interfaces", "is empty (name the interfaces, e.g. ['eth1'])")
    queues = raw.get("queues")
    q = None
    if queues is not None:
        if not isinstance(queues, list) or not all(isinstance(x, int) and x >= 0
                                                   for x in queues):
            raise _fail(f"{where}.queues", "must be a list of queue numbers")
        q = frozenset(queues)
    filters = tuple(raw.get("filters", ["udp", "tcp"]))
    bad = set(filters) - set(FILTER_CLASSES)
    if bad:
        raise _fail(f"{where}.filters", f"unknown kind(s) {sorted(bad)}; known: "
                                        f"{list(FILTER_CLASSES)} (and sniff_all = true)")
    try:
        nets = tuple(ipaddress.ip_network(str(a), strict=False)
                     for a in raw.get("addresses", []))
    except ValueError as exc:
        raise _fail(f"{where}.addresses", str(exc)) from None
    sniff = raw.get("sniff_all", False)
    if not isinstance(sniff, bool):
        raise _fail(f"{where}.sniff_all", "must be true or false")
    mv, mm = raw.get("max_vis", 8), raw.get("max_memory_mb", 256)
    if not isinstance(mv, int) or mv < 0 or not isinstance(mm, int) or mm < 0:
        raise _fail(where, "max_vis and max_memory_mb must be non-negative integers")
    return Grant(name, uids, gids, adapters, ifaces, q, filters, nets,
                 _ports(f"{where}.ports", raw.get("ports", [])), sniff, mv, mm << 20)


@dataclass
class Policy:
    """The grants of one policy file (empty: deny everyone but root)."""

    path: str = "(none)"
    grants: list[Grant] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, path: str = "<policy>") -> "Policy":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _fail(path, f"not valid TOML: {exc}") from None
        unknown = set(doc) - {"grant"}
        if unknown:
            raise _fail(path, f"unknown top-level key(s) {sorted(unknown)}; use [[grant]]")
        raw = doc.get("grant", [])
        if not isinstance(raw, list):
            raise _fail(path, "'grant' must be an array of tables: [[grant]]")
        return cls(path, [_grant(i, g, path) for i, g in enumerate(raw)])

    @classmethod
    def load(cls, path: str) -> "Policy":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.parse(f.read(), path)
        except FileNotFoundError:
            return cls(path, [])  # default deny
        except OSError as exc:
            raise _fail(path, exc.strerror or str(exc)) from None

    # ---- decisions ---------------------------------------------------------------------
    def _mine(self, c: Caller) -> list[Grant]:
        return [g for g in self.grants if g.applies(c)]

    def _deny(self, c: Caller, what: str, mine: list[Grant], why: str = "") -> Denied:
        if not mine:
            return Denied(f"efvid policy {self.path}: no grant for {c}, so {what} is refused "
                          "(default deny)")
        names = ", ".join(repr(g.name) for g in mine)
        return Denied(f"efvid policy {self.path}: {what} is refused for {c}: "
                      f"grant(s) {names} {why or 'do not allow it'}")

    def interface(self, c: Caller, adapter: str, iface: str) -> list[Grant]:
        """The caller's grants that allow ``adapter:iface`` (Denied if none)."""
        if c.uid == 0:
            return [Grant("root", frozenset({0}), frozenset(), ("xdp", "packet"), ("*",),
                          None, FILTER_CLASSES, (), (), True, 1 << 20, 1 << 50)]
        mine = self._mine(c)
        ok = [g for g in mine if adapter in g.adapters
              and any(fnmatch.fnmatchcase(iface, p) for p in g.interfaces)]
        if not ok:
            allowed = "; ".join(f"{g.name!r}: {list(g.adapters)} on {list(g.interfaces)}"
                                for g in mine)
            raise self._deny(c, f"{adapter}:{iface}", mine, f"allow only {allowed}")
        return ok

    def queue(self, c: Caller, grants: list[Grant], adapter: str, iface: str,
              q: int) -> None:
        if any(g.queues is None or q in g.queues for g in grants):
            return
        allowed = sorted(set().union(*(g.queues or () for g in grants)))
        raise self._deny(c, f"{adapter}:{iface} queue {q}", grants,
                         f"allow queues {allowed} only")

    def filter(self, c: Caller, grants: list[Grant], adapter: str, iface: str,
               kind: str, address: str | None = None, port: int | None = None) -> None:
        """Allow a filter of class ``kind`` (``udp``, ``tcp``, ``eth``, ``ethertype``,
        ``ipproto``, or ``any`` for filters that match any flow)."""
        what = f"filter {kind}" + (f" {address}:{port}" if address is not None else "")
        for g in grants:
            if kind == "any":
                if g.sniff_all:
                    return
                continue
            if kind not in g.filters:
                continue
            if address is not None and g.addresses and not any(
                    ipaddress.ip_address(address) in n for n in g.addresses):
                continue
            if port is not None and g.ports and not any(lo <= port <= hi
                                                        for lo, hi in g.ports):
                continue
            return
        rules = "; ".join(
            f"{list(g.filters)}"
            + (f" on {[str(n) for n in g.addresses]}" if g.addresses else "")
            + (f" ports {[f'{a}-{b}' if a != b else a for a, b in g.ports]}" if g.ports else "")
            + (", sniff_all" if g.sniff_all else "") for g in grants)
        raise self._deny(c, f"{what} on {adapter}:{iface}", grants, f"allow only {rules}")

    def limits(self, grants: list[Grant]) -> tuple[int, int]:
        """(max VIs/sockets, max memory bytes): the most generous matching grant."""
        return max(g.max_vis for g in grants), max(g.max_memory for g in grants)
