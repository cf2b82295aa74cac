"""argparse ``type=`` validators shared by the command modules.

Each returns the checked value or raises :class:`argparse.ArgumentTypeError` with a
message saying what was given and the form expected; argparse prefixes the flag's
name (``argument -l: ...``) and exits with status 2, so every bad value on a command
line is a one-line usage error naming the flag, before anything is opened.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable

from efvi.adapters.options import check_url
from efvi.errors import SetupError
from efvi.filters import FilterSpec, parse_filter, parse_mac

__all__ = ["int_range", "port", "ipv4", "mac", "driver_url", "filter_spec", "seconds",
           "path_arg"]


def int_range(lo: int, hi: int | None = None, *, extra: tuple[int, ...] = (),
              meaning: str = "") -> Callable[[str], int]:
    """An integer in ``lo..hi`` (``hi`` None: no upper bound), or one of ``extra``."""
    span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    form = f"an integer {span}" + "".join(f" or {e}" for e in extra)
    if meaning:
        form += f" ({meaning})"

    def check(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected {form}") \
                from None
        if v in extra or (v >= lo and (hi is None or v <= hi)):
            return v
        raise argparse.ArgumentTypeError(f"{v} is out of range; expected {form}")

    check.__name__ = "integer"
    return check


#: A UDP/TCP port to send to or from.
port = int_range(1, 65535)
port.__name__ = "port"


def ipv4(text: str) -> str:
    """A dotted-quad IPv4 address (names are not resolved; IPv6 is refused by name)."""
    t = text.strip()
    try:
        return str(ipaddress.IPv4Address(t))
    except ValueError:
        pass
    try:
        ipaddress.IPv6Address(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 address; expected a dotted quad such as 198.18.0.2 "
            "(host names are not resolved)") from None
    raise argparse.ArgumentTypeError(
        f"{text!r} is an IPv6 address; this tool sends IPv4 only — give an IPv4 address")


def mac(text: str) -> str:
    """A MAC address as 6 hex pairs."""
    try:
        parse_mac(text)
    except SetupError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a MAC address; expected 6 hex pairs such as 02:00:c6:12:00:01") \
            from None
    return text


def driver_url(text: str) -> str:
    """A driver URL whose adapter, queue and options are well-formed (nothing is opened)."""
    try:
        check_url(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def filter_spec(text: str) -> FilterSpec:
    """A filter in efsink's grammar."""
    try:
        return parse_filter(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        v = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected seconds > 0") \
            from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected seconds > 0")
    return v


def path_arg(text: str) -> str:
    """A non-empty path (``-`` for stdin/stdout)."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable file name")
    return text


def multicast_ipv4(text: str) -> str:
    """An IPv4 multicast group (224.0.0.0/4)."""
    a = ipv4(text)
    if not ipaddress.IPv4Address(a).is_multicast:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a multicast group; expected 224.0.0.0..239.255.255.255")
    return a


def number(lo: float = 0.0, hi: float | None = None, *, above: bool = False,
           unit: str = "") -> Callable[[str], float]:
    """A finite number ``>= lo`` (``> lo`` with ``above``), at most ``hi``."""
    span = (f"> {lo:g}" if above else f">= {lo:g}") + (f" and <= {hi:g}" if hi is not None else "")
    form = f"a number {span}" + (f" ({unit})" if unit else "")

    def check(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected {form}") \
                from None
        if not math.isfinite(v) or v < lo or (above and v == lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected {form}")
        return v

    check.__name__ = "number"
    return check


def filter_text(text: str) -> str:
    """A filter in efsink's grammar, checked, kept as text."""
    filter_spec(text)
    return text


def ipv4_interface(text: str) -> str:
    """``ADDR[/LEN]`` with ADDR an IPv4 address."""
    try:
        ipaddress.IPv4Interface(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 address; expected ADDR[/LEN] such as 198.18.0.1/15") \
            from None
    return text.strip()


def ipv6(text: str) -> str:
    """An IPv6 address (``ADDR[/LEN]``)."""
    try:
        ipaddress.IPv6Interface(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv6 address; expected e.g. fd00::1 or fd00::1/64") from None
    return text.strip()
