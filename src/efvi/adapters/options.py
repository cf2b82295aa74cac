"""Driver-URL options: one parser and validator for every adapter.

Each adapter declares its options here as a tuple of :class:`Option` (name, form,
default, bounds). :func:`parse_options` checks a URL's ``?k=v&...`` part against
its adapter's table and returns typed values; unknown names, repeated names and
bad values raise :class:`~efvi.errors.SetupError` naming the option, the value and
the expected form. :func:`check_url` does the whole URL (adapter, interface,
queue, options) without opening anything, so a command line can be checked before
any resource is touched.

Control path only.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from efvi.errors import SetupError

OptionValue = str | int | bool
Kind = Literal["int", "bool", "choice", "str", "mac", "ipv4", "wire"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Option:
    """One URL option: ``name=VALUE`` of a ``kind``.

    ``kind`` is ``int`` (``lo``..``hi``), ``bool`` (1/0, true/false, yes/no, on/off),
    ``choice`` (one of ``choices``), ``mac`` (6 hex pairs), ``ipv4`` (dotted quad),
    ``wire`` (a name, or ``@NAME`` for a cross-process wire) or ``str``.
    """

    name: str
    kind: Kind
    default: OptionValue | None = None
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()
    help: str = ""

    @property
    def form(self) -> str:
        """The expected form, as error messages and ``--help`` print it."""
        if self.kind == "int":
            return f"an integer {self.lo}..{self.hi}"
        if self.kind == "bool":
            return "1 or 0"
        if self.kind == "choice":
            return "|".join(self.choices)
        if self.kind == "mac":
            return "a MAC address such as 02:00:c6:12:00:01"
        if self.kind == "ipv4":
            return "an IPv4 address such as 198.18.0.1"
        if self.kind == "wire":
            return "a wire name, or @NAME for a wire between processes"
        return "a non-empty string"

    def example(self) -> str:
        if self.kind == "int":
            return str(self.default if isinstance(self.default, int) else self.lo)
        if self.kind == "bool":
            return "1"
        if self.kind == "choice":
            return self.choices[0]
        if self.kind == "mac":
            return "02:00:c6:12:00:01"
        if self.kind == "ipv4":
            return "198.18.0.1"
        return "NAME"

    def parse(self, adapter: str, raw: str) -> OptionValue:
        """The typed value of ``raw``; SetupError naming the option otherwise."""
        v = raw.strip()
        try:
            if self.kind == "int":
                n = int(v, 10)
                if not self.lo <= n <= self.hi:
                    raise ValueError
                return n
            if self.kind == "bool":
                low = v.lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError
            if self.kind == "choice":
                low = v.lower()
                if low not in self.choices:
                    raise ValueError
                return low
            if self.kind == "mac":
                parts = v.replace("-", ":").split(":")
                if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
                    raise ValueError
                b = bytes(int(p, 16) for p in parts)
                if b[0] & 1:
                    raise ValueError  # a multicast MAC cannot be a port's address
                return ":".join(f"{x:02x}" for x in b)
            if self.kind == "ipv4":
                return str(ipaddress.IPv4Address(v))
            if self.kind == "wire":
                name = v[1:] if v.startswith("@") else v
                if not name or any(c in name for c in "/\0"):
                    raise ValueError
                return v
            if not v:
                raise ValueError
            return v
        except ValueError:
            raise SetupError(
                f"{adapter} option {self.name}={raw!r} is invalid: expected {self.form}",
                errno=errno.EINVAL, hint=f"write e.g. {self.name}={self.example()}") from None


@dataclass(frozen=True)
class AdapterUrl:
    """What a driver URL says: ``scheme:iface[@queue][?options]``."""

    scheme: str
    iface: str
    queue: int | None
    options: dict[str, OptionValue] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)


#: Every adapter's options. Defaults are what the adapter uses when the option is absent.
SCHEMAS: dict[str, tuple[Option, ...]] = {
    "sim": (
        Option("wire", "wire", help="join a wire: NAME in-process, @NAME between processes"),
        Option("loopback", "bool", False, help="the port receives its own frames"),
        Option("clock", "choice", "virtual", choices=("virtual", "real")),
        Option("mac", "mac", help="the port's MAC address"),
        Option("ip", "ipv4", help="the port's IPv4 address"),
        Option("mtu", "int", 1500, lo=68, hi=9216, help="the port's MTU"),
        Option("pcap", "str", help="play this capture into the port (a recorded feed)"),
        Option("speed", "choice", "1", choices=("1", "0"),
               help="pcap= timing: 1 recorded times, 0 as fast as polled"),
        Option("loop", "int", 1, lo=0, hi=1 << 31, help="pcap= passes (0: forever)"),
        Option("eof_event", "int", None, lo=0, hi=0xFFFF,
               help="a software event with this data on each VI when pcap= ends"),
    ),
    "xdp": (
        Option("mode", "choice", "auto", choices=("auto", "drv", "skb")),
        Option("zerocopy", "choice", "auto", choices=("auto", "0", "1")),
        Option("force", "bool", False,
               help="take the interface over from another XDP program (restored on close)"),
        Option("ts", "choice", "auto", choices=("auto", "sw", "hw")),
        Option("busy_poll", "int", 0, lo=0, hi=1_000_000,
               help="µs of SO_BUSY_POLL (with SO_PREFER_BUSY_POLL) on RX sockets; 0: off"),
        Option("busy_budget", "int", 64, lo=1, hi=65535,
               help="SO_BUSY_POLL_BUDGET: frames per busy-poll NAPI run"),
        Option("broker", "choice", "auto", choices=("auto", "0", "1"),
               help="go through efvid: auto = when this process lacks the privileges"),
    ),
    "packet": (
        Option("ring", "int", 0, lo=2, hi=1 << 22, help="RX ring slots (0: sized from rxq)"),
        Option("snaplen", "int", None, lo=64, hi=65535 + 18, help="bytes kept per frame"),
        Option("ts", "choice", "auto", choices=("auto", "sw", "hw")),
        Option("qdisc", "bool", False, help="1: TX through the qdisc layer (default bypasses it)"),
        Option("rx_ring", "choice", "auto", choices=("auto", "v2", "v3"),
               help="RX ring kind: auto = TPACKET_V3 blocks for VIs allocated with "
                    "EF_VI_RX_EVENT_MERGE, V2 slots otherwise"),
        Option("retire_ms", "int", 20, lo=1, hi=1000,
               help="TPACKET_V3: a block goes to the VI this long after its first frame"),
        Option("dir", "choice", "in", choices=("in", "out", "inout"),
               help="frames the filters see: received, sent by this host, or both"),
        Option("broker", "choice", "auto", choices=("auto", "0", "1"),
               help="go through efvid: auto = when this process lacks the privileges"),
    ),
}

#: Adapters that take ``@QUEUE`` and the highest queue the URL syntax allows
#: (the adapter checks the interface's real count when it opens).
QUEUES: dict[str, int] = {"sim": 0, "xdp": 1023, "packet": 0}

FORMS = {
    "sim": "sim[:PORT][?wire=NAME&loopback=1&clock=virtual|real&mac=MAC&ip=ADDR&mtu=N"
           "&pcap=FILE&speed=1|0&loop=N&eof_event=DATA]",
    "xdp": "xdp:IFNAME[@QUEUE][?mode=auto|drv|skb&zerocopy=auto|0|1&force=1&ts=auto|sw|hw"
           "&broker=auto|0|1]",
    "packet": "packet:IFNAME[?ring=N&snaplen=N&ts=auto|sw|hw&qdisc=0|1&dir=in|out|inout"
              "&broker=auto|0|1]",
}


def option_help(scheme: str) -> str:
    """``name=FORM`` for each option of ``scheme`` (for hints and ``--help``)."""
    return ", ".join(f"{o.name}={o.form}" for o in SCHEMAS[scheme])


def parse_options(scheme: str, query: str | Mapping[str, str]) -> dict[str, OptionValue]:
    """Check ``query`` (``k=v&...`` or a mapping) against ``scheme``'s table.

    Returns the options given, typed (absent ones are left to the adapter, whose
    defaults the table records). Raises SetupError for an unknown or repeated
    option or a bad value.
    """
    schema = {o.name: o for o in SCHEMAS[scheme]}
    pairs: Sequence[tuple[str, str]]
    if isinstance(query, str):
        pairs = []
        for item in query.split("&") if query else []:
            if not item:
                continue
            k, eq, v = item.partition("=")
            k = unquote(k.strip())
            if not eq:
                o = schema.get(k)
                raise SetupError(
                    f"{scheme} option {k!r} has no value", errno=errno.EINVAL,
                    hint=f"write {k}={o.example() if o else 'VALUE'}")
            pairs.append((k, unquote(v)))
    else:
        pairs = list(query.items())
    out: dict[str, OptionValue] = {}
    for k, v in pairs:
        o = schema.get(k)
        if o is None:
            raise SetupError(f"unknown {scheme} option {k!r}", errno=errno.EINVAL,
                             hint=f"{scheme} takes {option_help(scheme)}")
        if k in out:
            raise SetupError(f"{scheme} option {k} given twice", errno=errno.EINVAL,
                             hint=f"give {k}= once")
        out[k] = o.parse(scheme, v)
    return out


def split_url(url: str) -> tuple[str, str, str, str]:
    """``scheme:iface[@queue][?query]`` → the four parts as text (no checks)."""
    base, _, query = url.strip().partition("?")
    scheme, _, rest = base.partition(":")
    iface, _, q = rest.partition("@")
    return scheme.lower(), iface, q if "@" in rest else "", query


def check_url(url: str) -> AdapterUrl:
    """Parse and check a whole driver URL without opening anything.

    Raises SetupError naming the part that is wrong (adapter, queue, option) and the
    form it should have.
    """
    scheme, iface, q, query = split_url(url)
    _, _, rest = url.strip().partition("?")[0].partition(":")
    if scheme not in SCHEMAS:
        raise SetupError(f"unknown adapter {scheme!r} in driver URL {url!r}", errno=errno.EINVAL,
                         hint="use " + " or ".join(FORMS.values()))
    if any(c.isspace() or c in "/\0" for c in iface) or (scheme != "sim" and len(iface) > 15):
        raise SetupError(f"bad interface name {iface!r} in driver URL {url!r}",
                         errno=errno.EINVAL,
                         hint="an interface name has at most 15 characters, no '/' or spaces")
    queue: int | None = None
    if "@" in rest:
        top = QUEUES[scheme]
        try:
            queue = int(q, 10)
            if queue < 0:
                raise ValueError
        except ValueError:
            raise SetupError(f"bad queue {q!r} in driver URL {url!r}", errno=errno.EINVAL,
                             hint=f"write IFNAME@N with N a queue number 0..{top}"
                             if top else f"the {scheme} adapter has one queue: drop '@{q}'"
                             ) from None
        if queue > top:
            raise SetupError(
                f"queue {queue} in driver URL {url!r} does not exist", errno=errno.EINVAL,
                hint=f"the {scheme} adapter has one queue: drop '@{q}'" if top == 0
                else f"use a queue 0..{top}")
    options = parse_options(scheme, query)
    raw = {}
    for item in query.split("&") if query else []:
        if item:
            k, _, v = item.partition("=")
            raw[unquote(k.strip())] = unquote(v)
    return AdapterUrl(scheme, iface, queue, options, raw)


def canonical(scheme: str, options: Mapping[str, OptionValue]) -> dict[str, str]:
    """Typed options back to the text form the adapters read (bools as ``1``/``0``)."""
    out: dict[str, str] = {}
    for k, v in options.items():
        out[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out
