"""Filter specs: pure data saying which frames a VI wants (``ef_filter_spec``).

A :class:`FilterSpec` is immutable. Every setter is callable on the class (starting
from an empty spec) or on a spec (adding a part), so both
``FilterSpec.ip4_local("udp", "239.1.1.1", 5000).vlan(10)`` and
``FilterSpec.vlan(10).ip4_local(...)`` build the same spec. A setter that would mix
incompatible parts raises :class:`~efvi.errors.SetupError` with ``EPROTONOSUPPORT``,
as ef_vi's setters return ``-EPROTONOSUPPORT``.

Each adapter compiles specs its own way (a table in the sim, BPF maps for ``xdp``,
classic BPF for ``packet``); all follow the hardware's priority, most specific first:

1. ``ip_full``   — full 5-tuple
2. ``ip_local``  — local 3-tuple (dst address, dst port, protocol)
3. ``eth``       — destination MAC (± VLAN, ± ethertype / IP protocol)
4. ``ethertype`` / ``ipproto`` — class filters (± VLAN)
5. ``unicast_all`` / ``multicast_all``
6. ``unicast_mismatch`` / ``multicast_mismatch`` — what nothing else (nor the kernel) wants
7. ``bpf``       — a classic BPF program (:meth:`FilterSpec.bpf`), e.g. a tcpdump
   expression compiled by libpcap (:meth:`FilterSpec.expression`): the last level, it
   steals only frames no table filter took; as a sniff it copies every frame it matches

Within one level a VLAN-specific filter beats a VLAN-any one. IP filters never match
IP fragments (those go to the kernel). ``sniff`` turns a spec into a copy: the VI
gets the frame and the kernel (and any stealing VI) still does. ``port_sniff`` is
sniff of everything.

A ``bpf`` spec holds the program as plain data (``(code, jt, jf, k)`` per
instruction, the ``struct sock_filter`` fields) and runs wherever the adapter filters:
``packet`` puts it in the VI's socket filter (the kernel runs it; there the outer VLAN
tag has already been removed from the frame, as for a live tcpdump on Linux), ``xdp``
translates it to eBPF inside the interface's XDP program (frames as on the wire, tags
included, as ``tcpdump -r`` sees a file), ``sim`` evaluates it in Python over each
batch (frames as on the wire). A program's non-zero return means "match"; its value
(a snap length) is ignored — snap lengths belong to the application.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from efvi.errors import SetupError

IPPROTO_TCP = 6
IPPROTO_UDP = 17
_PROTO_NAMES = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}


class FilterKind(IntEnum):
    """What a spec matches on; the value is its priority level (lower wins)."""

    NONE = 0
    IP_FULL = 1
    IP_LOCAL = 2
    ETH = 3
    ETHERTYPE = 4
    IPPROTO = 5
    UNICAST_ALL = 6
    MULTICAST_ALL = 7
    UNICAST_MISMATCH = 8
    MULTICAST_MISMATCH = 9
    ALL = 10  # port sniff: every frame
    BPF = 11  # a classic BPF program: after every table kind


#: Kinds that can be given a VLAN.
_VLAN_OK = frozenset({FilterKind.NONE, FilterKind.IP_FULL, FilterKind.IP_LOCAL,
                      FilterKind.ETH, FilterKind.ETHERTYPE, FilterKind.IPPROTO,
                      FilterKind.UNICAST_ALL, FilterKind.MULTICAST_ALL,
                      FilterKind.UNICAST_MISMATCH, FilterKind.MULTICAST_MISMATCH})


P = ParamSpec("P")
R = TypeVar("R")


class _setter(Generic[P]):
    """Descriptor: a setter usable on the class (empty spec) or on an instance."""

    def __init__(self, fn: Callable[Concatenate["FilterSpec", P], "FilterSpec"]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None,
                owner: type["FilterSpec"]) -> Callable[P, "FilterSpec"]: ...
    @overload
    def __get__(self, obj: "FilterSpec",
                owner: type["FilterSpec"]) -> Callable[P, "FilterSpec"]: ...

    def __get__(self, obj: "FilterSpec | None",
                owner: type["FilterSpec"]) -> Callable[P, "FilterSpec"]:
        target = owner() if obj is None else obj
        fn = self.fn

        def bound(*args: P.args, **kwargs: P.kwargs) -> "FilterSpec":
            return fn(target, *args, **kwargs)

        bound.__doc__ = fn.__doc__
        return bound


def _incompatible(what: str, spec: "FilterSpec") -> SetupError:
    return SetupError(
        f"filter spec cannot combine {what} with a {spec.kind.name.lower()} part ({spec})",
        errno=errno.EPROTONOSUPPORT,
        hint="build one spec per kind; add several filters to the VI instead",
    )


def _proto(p: int | str) -> int:
    if isinstance(p, str):
        try:
            return _PROTO_NAMES[p.lower()]
        except KeyError:
            raise SetupError(f"unknown IP protocol {p!r}", errno=errno.EINVAL,
                             hint="use 'udp' or 'tcp'") from None
    if p not in (IPPROTO_TCP, IPPROTO_UDP):
        raise SetupError(f"IP filters take UDP or TCP, not protocol {p}",
                         errno=errno.EPROTONOSUPPORT, hint="use ipproto() for other protocols")
    return p


def _port(p: int) -> int:
    if not 0 <= int(p) <= 0xFFFF:
        raise SetupError(f"port {p} out of range 0..65535", errno=errno.EINVAL)
    return int(p)


def _addr(a: str | bytes | int | ipaddress.IPv4Address | ipaddress.IPv6Address,
          version: int) -> bytes:
    try:
        if isinstance(a, bytes):
            ip = ipaddress.ip_address(a)
        else:
            ip = ipaddress.ip_address(a)
    except ValueError as exc:
        raise SetupError(f"bad IPv{version} address {a!r}: {exc}", errno=errno.EINVAL) from None
    if ip.version != version:
        raise SetupError(f"{a!r} is not an IPv{version} address", errno=errno.EINVAL)
    return ip.packed


def parse_mac(mac: str | bytes) -> bytes:
    """``"02:00:00:00:00:01"`` (or 6 raw bytes) → 6 bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise SetupError(f"MAC must be 6 bytes, got {len(mac)}", errno=errno.EINVAL)
        return mac
    parts = mac.replace("-", ":").split(":")
    try:
        if len(parts) != 6:
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise SetupError(f"bad MAC address {mac!r}", errno=errno.EINVAL,
                         hint="write it as 6 hex pairs, e.g. 02:00:c6:12:00:01") from None


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """An immutable filter spec. Build it with the setters; see the module doc."""

    kind: FilterKind = FilterKind.NONE
    ip_version: int = 0
    proto: int = 0
    local_ip: bytes = b""
    local_port: int = 0
    remote_ip: bytes = b""
    remote_port: int = 0
    mac: bytes = b""
    ethertype: int | None = None
    ipproto: int | None = None
    vlan_id: int | None = None
    sniff_mode: bool = False
    promisc: bool = False
    program: tuple[tuple[int, int, int, int], ...] = ()
    expression_text: str | None = None
    flags: int = field(default=0, compare=False)

    # ---- IP filters -------------------------------------------------------------
    def _ip(self, version: int, kind: FilterKind, proto: int | str,
            lhost: Any, lport: int, rhost: Any = None, rport: int = 0) -> "FilterSpec":
        if self.kind not in (FilterKind.NONE,):
            raise _incompatible(f"an IPv{version} {kind.name.lower()} part", self)
        return replace(
            self, kind=kind, ip_version=version, proto=_proto(proto),
            local_ip=_addr(lhost, version), local_port=_port(lport),
            remote_ip=_addr(rhost, version) if rhost is not None else b"",
            remote_port=_port(rport) if rhost is not None else 0,
        )

    @_setter
    def ip4_local(self, proto: int | str, host: Any, port: int) -> "FilterSpec":
        """Frames to ``host:port`` over UDP or TCP (``ef_filter_spec_set_ip4_local``)."""
        return self._ip(4, FilterKind.IP_LOCAL, proto, host, port)

    @_setter
    def ip4_full(self, proto: int | str, lhost: Any, lport: int, rhost: Any,
                 rport: int) -> "FilterSpec":
        """Frames of one 5-tuple: local ``lhost:lport`` from remote ``rhost:rport``."""
        return self._ip(4, FilterKind.IP_FULL, proto, lhost, lport, rhost, rport)

    @_setter
    def ip6_local(self, proto: int | str, host: Any, port: int) -> "FilterSpec":
        """IPv6 twin of :meth:`ip4_local`."""
        return self._ip(6, FilterKind.IP_LOCAL, proto, host, port)

    @_setter
    def ip6_full(self, proto: int | str, lhost: Any, lport: int, rhost: Any,
                 rport: int) -> "FilterSpec":
        """IPv6 twin of :meth:`ip4_full`."""
        return self._ip(6, FilterKind.IP_FULL, proto, lhost, lport, rhost, rport)

    # ---- L2 and class filters -----------------------------------------------------
    @_setter
    def eth_local(self, mac: str | bytes, vlan: int | None = None) -> "FilterSpec":
        """Frames to destination ``mac`` (on ``vlan`` if given)."""
        if self.kind not in (FilterKind.NONE, FilterKind.ETHERTYPE, FilterKind.IPPROTO):
            raise _incompatible("an eth_local part", self)
        spec = replace(self, kind=FilterKind.ETH, mac=parse_mac(mac))
        return spec.vlan(vlan) if vlan is not None and vlan >= 0 else spec

    @_setter
    def eth_type(self, ethertype: int) -> "FilterSpec":
        """Frames of one EtherType (after VLAN tags); combines with :meth:`eth_local`."""
        if not 0 <= ethertype <= 0xFFFF:
            raise SetupError(f"ethertype {ethertype:#x} out of range", errno=errno.EINVAL)
        if self.kind == FilterKind.ETH and self.ipproto is None:
            return replace(self, ethertype=ethertype)
        if self.kind != FilterKind.NONE:
            raise _incompatible("an ethertype part", self)
        return replace(self, kind=FilterKind.ETHERTYPE, ethertype=ethertype)

    @_setter
    def ip_proto(self, proto: int) -> "FilterSpec":
        """IPv4/IPv6 frames of one IP protocol; combines with :meth:`eth_local`."""
        if not 0 <= proto <= 0xFF:
            raise SetupError(f"IP protocol {proto} out of range", errno=errno.EINVAL)
        if self.kind == FilterKind.ETH and self.ethertype is None:
            return replace(self, ipproto=proto)
        if self.kind != FilterKind.NONE:
            raise _incompatible("an ipproto part", self)
        return replace(self, kind=FilterKind.IPPROTO, ipproto=proto)

    @_setter
    def vlan(self, vlan_id: int) -> "FilterSpec":
        """Restrict the spec to frames whose outer VLAN is ``vlan_id``."""
        if not 0 <= vlan_id <= 4095:
            raise SetupError(f"VLAN id {vlan_id} out of range 0..4095", errno=errno.EINVAL)
        if self.kind not in _VLAN_OK or (self.vlan_id is not None and self.vlan_id != vlan_id):
            raise _incompatible(f"VLAN {vlan_id}", self)
        return replace(self, vlan_id=vlan_id)

    def _special(self, kind: FilterKind) -> "FilterSpec":
        if self.kind != FilterKind.NONE:
            raise _incompatible(f"a {kind.name.lower()} part", self)
        return replace(self, kind=kind)

    @_setter
    def unicast_all(self) -> "FilterSpec":
        """Every unicast frame (steals ARP replies too)."""
        return self._special(FilterKind.UNICAST_ALL)

    @_setter
    def multicast_all(self) -> "FilterSpec":
        """Every multicast and broadcast frame (steals IGMP and ARP requests too)."""
        return self._special(FilterKind.MULTICAST_ALL)

    @_setter
    def unicast_mismatch(self) -> "FilterSpec":
        """Unicast frames that no other filter and not the kernel wants."""
        return self._special(FilterKind.UNICAST_MISMATCH)

    @_setter
    def multicast_mismatch(self) -> "FilterSpec":
        """Multicast frames that no other filter and no kernel subscription wants."""
        return self._special(FilterKind.MULTICAST_MISMATCH)

    @_setter
    def port_sniff(self, promiscuous: bool = True) -> "FilterSpec":
        """Copy every frame the port receives to the VI; the kernel still gets them."""
        if self.kind != FilterKind.NONE:
            raise _incompatible("port_sniff (it must be alone)", self)
        return replace(self, kind=FilterKind.ALL, sniff_mode=True, promisc=promiscuous)

    @_setter
    def sniff(self, promiscuous: bool = False) -> "FilterSpec":
        """Make this spec a copy (sniff) instead of a steal."""
        return replace(self, sniff_mode=True, promisc=promiscuous or self.promisc)

    # ---- classic BPF ------------------------------------------------------------------
    @_setter
    def bpf(self, program: Sequence[Any], *, sniff: bool = False,
            expression: str | None = None) -> "FilterSpec":
        """Frames a classic BPF program accepts (non-zero return), as a steal or a sniff.

        ``program`` is a sequence of ``(code, jt, jf, k)`` tuples or objects with those
        fields (``efvi.bpf.cbpf.Insn``). It must pass the kernel's classic BPF checks
        (SetupError otherwise, naming the instruction). ``expression`` only labels the
        spec (``str()``, listings). Cannot be combined with other parts or a VLAN: say
        ``vlan 10 and ...`` in the program instead.
        """
        if self.kind != FilterKind.NONE or self.vlan_id is not None:
            raise _incompatible("a bpf program", self)
        prog = _program(program)
        return replace(self, kind=FilterKind.BPF, program=prog, expression_text=expression,
                       sniff_mode=sniff or self.sniff_mode)

    # ---- one address's control protocols (classic BPF programs) ------------------------
    @_setter
    def arp(self, target: Any) -> "FilterSpec":
        """ARP frames for one IPv4 address: requests for it, replies to it and other
        hosts' claims to it (target or sender protocol address). The kernel keeps
        every other ARP frame, so it still answers for its own addresses. A ``bpf``
        spec (:func:`efvi.bpf.control.arp_program`); ``.sniff()`` makes it a copy."""
        from efvi.bpf.control import arp_program

        ip = _addr(target, 4)
        return self.bpf(arp_program(ip), expression=f"arp {ipaddress.ip_address(ip)}")

    @_setter
    def icmp_echo(self, dst: Any) -> "FilterSpec":
        """ICMP echo requests to one IPv4 address (a ``bpf`` spec)."""
        from efvi.bpf.control import icmp_echo_program

        ip = _addr(dst, 4)
        return self.bpf(icmp_echo_program(ip),
                        expression=f"icmp-echo {ipaddress.ip_address(ip)}")

    @_setter
    def icmp6_echo_nd(self, dst: Any) -> "FilterSpec":
        """ICMPv6 echo requests to one IPv6 address and neighbour solicitations /
        advertisements whose target it is (a ``bpf`` spec)."""
        from efvi.bpf.control import icmp6_echo_nd_program

        ip = _addr(dst, 6)
        return self.bpf(icmp6_echo_nd_program(ip),
                        expression=f"icmp6-echo-nd {ipaddress.ip_address(ip)}")

    @_setter
    def expression(self, text: str, *, sniff: bool = False) -> "FilterSpec":
        """Frames matching a tcpdump expression, compiled by the system's libpcap.

        ``FilterSpec.expression("tcp port 80")`` is ``FilterSpec.bpf(<what
        tcpdump -dd 'tcp port 80' prints>)``. Raises ``efvi.bpf.libpcap.ExpressionError``
        (a SetupError) with libpcap's message for a bad expression, SetupError naming
        the package when libpcap is not installed.
        """
        from efvi.bpf.libpcap import compile_expression

        return self.bpf(compile_expression(text), sniff=sniff, expression=text)

    # ---- queries ------------------------------------------------------------------
    def check(self) -> "FilterSpec":
        """Raise :class:`SetupError` if the spec matches nothing (control path)."""
        if self.kind == FilterKind.NONE:
            raise SetupError("empty filter spec: it matches nothing", errno=errno.EINVAL,
                             hint="call a setter such as ip4_local() or unicast_all()")
        return self

    @property
    def is_multicast(self) -> bool:
        """True if the spec's destination is a multicast address (filters chain)."""
        if self.kind in (FilterKind.IP_LOCAL, FilterKind.IP_FULL):
            return ipaddress.ip_address(self.local_ip).is_multicast
        if self.kind == FilterKind.ETH:
            return bool(self.mac[0] & 1)
        return self.kind in (FilterKind.MULTICAST_ALL, FilterKind.MULTICAST_MISMATCH)

    def __str__(self) -> str:
        k = self.kind
        parts: list[str] = []
        if k in (FilterKind.IP_LOCAL, FilterKind.IP_FULL):
            name = {IPPROTO_UDP: "udp", IPPROTO_TCP: "tcp"}[self.proto]
            lh = ipaddress.ip_address(self.local_ip)
            s = f"{name}:{lh}:{self.local_port}"
            if k == FilterKind.IP_FULL:
                s += f",{ipaddress.ip_address(self.remote_ip)}:{self.remote_port}"
            parts.append(s)
        elif k == FilterKind.ETH:
            extra = ""
            if self.ethertype is not None:
                extra = f"ethertype={self.ethertype:#06x},"
            if self.ipproto is not None:
                extra = f"ipproto={self.ipproto},"
            parts.append(f"eth:{extra}{format_mac(self.mac)}")
        elif k == FilterKind.ETHERTYPE:
            parts.append(f"ethertype:{self.ethertype:#06x}")
        elif k == FilterKind.IPPROTO:
            parts.append(f"ipproto:{self.ipproto}")
        elif k == FilterKind.ALL:
            parts.append("sniff:" + ("promisc" if self.promisc else "no-promisc"))
        elif k == FilterKind.BPF:
            parts.append(f"bpf:{self.expression_text}" if self.expression_text is not None
                         else f"bpf:<{len(self.program)} instructions>")
        else:
            parts.append(k.name.lower().replace("_", "-").replace("mismatch", "mis"))
        if self.vlan_id is not None:
            parts.append(f"vid={self.vlan_id}")
        if self.sniff_mode and k != FilterKind.ALL:
            parts.append("sniff")
        return " ".join(parts)


def parse_filter(text: str) -> FilterSpec:
    """Parse efsink's filter grammar into a spec (control path).

    ``udp|tcp:[vid=N,]HOST:PORT[,RHOST:RPORT]``, ``eth:[vid=N,][ipproto=P,|ethertype=T,]MAC``,
    ``ethertype:[vid=N,]T``, ``ipproto:[vid=N,]P``, ``unicast-all``, ``multicast-all``,
    ``unicast-mis[:vid=N]``, ``multicast-mis[:vid=N]``, ``sniff[:promisc|no-promisc]``,
    ``bpf:EXPRESSION`` (a tcpdump expression, compiled by libpcap; efvi's addition),
    ``arp:IP``, ``icmp-echo:IP``, ``icmp6-echo-nd:IP6`` (one address's control frames:
    :meth:`FilterSpec.arp` and friends; efvi's addition).
    IPv6 hosts go in brackets: ``udp:[ff15::1]:5000``. A trailing ``,sniff`` makes any
    spec a sniff (copy) filter.
    """
    text = text.strip()
    head, _, rest = text.partition(":")
    head = head.lower()
    if head == "bpf":  # the rest is a tcpdump expression, commas and all
        sniff_expr = rest.endswith(",sniff")
        expr = rest[:-len(",sniff")] if sniff_expr else rest
        return FilterSpec.expression(expr.strip(), sniff=sniff_expr)
    opts: list[str] = [o for o in _split_top(rest)] if rest else []
    sniff = False
    if opts and opts[-1] == "sniff" and head != "sniff":
        sniff = True
        opts = opts[:-1]
    try:
        vid: int | None = None
        keep: list[str] = []
        for o in opts:
            if o.startswith("vid="):
                if vid is not None:
                    raise ValueError("vid= given twice")
                vid = _int(o[4:], "vid")
                if not 0 <= vid <= 4095:
                    raise ValueError(f"vid={o[4:]} is outside 0..4095")
            elif o == "mcastloop-rx":
                raise ValueError(
                    "mcastloop-rx (receive this host's own multicast transmits) is not "
                    "supported by efvi's adapters; on sim, open the port with ?loopback=1")
            else:
                keep.append(o)
        spec: FilterSpec
        if head in ("udp", "tcp"):
            if not keep or len(keep) > 2:
                raise ValueError("expected HOST:PORT[,RHOST:RPORT]")
            lh, lp = _hostport(keep[0])
            if len(keep) == 2:
                rh, rp = _hostport(keep[1])
                v = ipaddress.ip_address(lh).version
                full = FilterSpec.ip4_full if v == 4 else FilterSpec.ip6_full
                spec = full(head, lh, lp, rh, rp)
            else:
                v = ipaddress.ip_address(lh).version
                spec = (FilterSpec.ip4_local if v == 4 else FilterSpec.ip6_local)(head, lh, lp)
        elif head == "eth":
            if not keep:
                raise ValueError("expected a MAC address")
            mac = keep[-1]
            spec = FilterSpec.eth_local(mac)
            for o in keep[:-1]:
                k, _, v2 = o.partition("=")
                if k == "ipproto":
                    spec = spec.ip_proto(_int(v2, "ipproto"))
                elif k == "ethertype":
                    spec = spec.eth_type(_int(v2, "ethertype"))
                else:
                    raise ValueError(f"unknown eth option {o!r}")
        elif head == "ethertype":
            spec = FilterSpec.eth_type(_int(_one(keep), "ethertype"))
        elif head == "ipproto":
            spec = FilterSpec.ip_proto(_int(_one(keep), "ipproto"))
        elif head == "unicast-all" and not keep:
            spec = FilterSpec.unicast_all()
        elif head == "multicast-all" and not keep:
            spec = FilterSpec.multicast_all()
        elif head in ("unicast-mis", "unicast-mismatch") and not keep:
            spec = FilterSpec.unicast_mismatch()
        elif head in ("multicast-mis", "multicast-mismatch") and not keep:
            spec = FilterSpec.multicast_mismatch()
        elif head in ("unicast-all", "multicast-all", "unicast-mis", "unicast-mismatch",
                      "multicast-mis", "multicast-mismatch"):
            raise ValueError(f"{head} takes only vid=N and sniff, not {','.join(keep)!r}")
        elif head in ("arp", "icmp-echo", "icmp6-echo-nd"):
            host = _one(keep).strip("[]")
            spec = {"arp": FilterSpec.arp, "icmp-echo": FilterSpec.icmp_echo,
                    "icmp6-echo-nd": FilterSpec.icmp6_echo_nd}[head](host)
        elif head == "sniff":
            mode = keep[0] if keep else "promisc"
            if len(keep) > 1 or mode not in ("promisc", "no-promisc"):
                raise ValueError("sniff takes promisc or no-promisc")
            spec = FilterSpec.port_sniff(mode == "promisc")
        else:
            raise ValueError("unknown filter kind")
        if vid is not None:
            spec = spec.vlan(vid)
    except ValueError as exc:
        raise SetupError(
            f"bad filter spec {text!r}: {exc}", errno=errno.EINVAL,
            hint="forms: udp:HOST:PORT[,RHOST:RPORT]  eth:[vid=N,]MAC  ethertype:T  ipproto:P  "
                 "unicast-all  multicast-all  unicast-mis  multicast-mis  sniff[:promisc]  "
                 "bpf:EXPRESSION  arp:IP  icmp-echo:IP  icmp6-echo-nd:IP6",
        ) from None
    if sniff:
        spec = spec.sniff()
    return spec


def _split_top(s: str) -> list[str]:
    """Split on commas outside [brackets] (IPv6 literals)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _hostport(s: str) -> tuple[str, int]:
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
    else:
        host, _, port = s.rpartition(":")
    if not host or not port:
        raise ValueError(f"expected HOST:PORT, got {s!r}")
    n = _int(port, "port", base=10)
    if not 0 <= n <= 0xFFFF:
        raise ValueError(f"port {port} is outside 0..65535")
    return host, n


def _int(s: str, what: str, base: int = 0) -> int:
    try:
        return int(s, base)
    except ValueError:
        raise ValueError(f"{what} {s!r} is not a number") from None


def _one(keep: list[str]) -> str:
    if len(keep) != 1:
        raise ValueError("expected exactly one value")
    return keep[0]


def _program(program: Sequence[Any]) -> tuple[tuple[int, int, int, int], ...]:
    """Normalise and check a classic BPF program (the kernel's rules; control path)."""
    from efvi.bpf.cbpf import Insn, as_tuple, check

    out: list[tuple[int, int, int, int]] = []
    try:
        for ins in program:
            t = as_tuple(ins)
            if not (0 <= t[0] <= 0xFFFF and 0 <= t[1] <= 255 and 0 <= t[2] <= 255):
                raise ValueError(f"instruction {len(out)} {t} does not fit struct sock_filter")
            out.append(t)
        check([Insn(*t) for t in out])
    except (TypeError, ValueError) as exc:
        raise SetupError(f"bad classic BPF program: {exc}", errno=errno.EINVAL,
                         hint="pass (code, jt, jf, k) tuples as tcpdump -dd prints them, "
                              "or use FilterSpec.expression()") from None
    return tuple(out)
