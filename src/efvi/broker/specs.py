"""Filter specs on the broker's wire, and what class of traffic each one takes.

:func:`spec_to_wire`/:func:`spec_from_wire` carry a :class:`~efvi.filters.FilterSpec`
exactly (every field; bytes as hex), and the broker rebuilds it through the same
setters the client used, so a spec that the client's checks would refuse is refused
by the broker too. :func:`traffic_class` says what the policy must allow for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields, replace
from typing import Any

from efvi.filters import IPPROTO_TCP, IPPROTO_UDP, FilterKind, FilterSpec

_BYTES = {"local_ip", "remote_ip", "mac"}


def spec_to_wire(spec: FilterSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(spec):
        v = getattr(spec, f.name)
        if f.name in _BYTES:
            v = v.hex()
        elif f.name == "program":
            v = [list(i) for i in v]
        elif f.name == "kind":
            v = int(v)
        out[f.name] = v
    return out


def spec_from_wire(d: dict[str, Any]) -> FilterSpec:
    """The spec ``d`` describes; ValueError naming the field when it is malformed."""
    if not isinstance(d, dict):
        raise ValueError("spec must be an object")
    names = {f.name for f in fields(FilterSpec)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"spec has unknown field(s) {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k in _BYTES:
            if not isinstance(v, str):
                raise ValueError(f"spec field {k} must be hex text")
            kw[k] = bytes.fromhex(v)
        elif k == "program":
            if not isinstance(v, list) or len(v) > 4096 or not all(
                    isinstance(i, list) and len(i) == 4
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in i)
                    for i in v):
                raise ValueError("spec program must be a list of [code, jt, jf, k]")
            kw[k] = tuple(tuple(i) for i in v)
        elif k == "kind":
            kw[k] = FilterKind(v)
        else:
            kw[k] = v
    spec = replace(FilterSpec(), **kw)
    if spec.kind == FilterKind.BPF:
        # re-run the setter's checks (the kernel's classic BPF rules) on the program
        rebuilt = FilterSpec().bpf(spec.program, sniff=spec.sniff_mode,
                                   expression=spec.expression_text)
        return replace(rebuilt, flags=spec.flags, promisc=spec.promisc)
    return spec


def traffic_class(spec: FilterSpec) -> tuple[str, str | None, int | None]:
    """(policy filter class, local address, local port) of a spec.

    ``any`` for kinds that take frames of any flow (all/mismatch/sniff/bpf), which the
    policy allows only with ``sniff_all``."""
    k = spec.kind
    if k in (FilterKind.IP_LOCAL, FilterKind.IP_FULL):
        name = {IPPROTO_UDP: "udp", IPPROTO_TCP: "tcp"}.get(spec.proto, "any")
        return name, str(ipaddress.ip_address(spec.local_ip)), spec.local_port
    if k == FilterKind.ETH:
        return "eth", None, None
    if k == FilterKind.ETHERTYPE:
        return "ethertype", None, None
    if k == FilterKind.IPPROTO:
        return "ipproto", None, None
    return "any", None, None
