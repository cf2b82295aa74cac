"""Adapters: the hardware side of the model (``sim``, ``xdp``, ``packet``).

Each implements the small contract in :mod:`efvi.adapters.base`. ``open_adapter``
picks one from a driver URL (``sim``, ``sim:PORT?opt=v``, ``xdp:IFNAME[@QUEUE]``,
``packet:IFNAME``).
"""

from __future__ import annotations

import errno
import importlib
from urllib.parse import parse_qsl

from efvi.adapters.base import Adapter
from efvi.errors import SetupError

#: scheme → "module:Class"
ADAPTERS: dict[str, str] = {
    "sim": "efvi.adapters.sim.adapter:SimAdapter",
    "xdp": "efvi.adapters.xdp.adapter:XdpAdapter",
    "packet": "efvi.adapters.packet.adapter:PacketAdapter",
}


def parse_url(url: str) -> tuple[str, str, int | None, dict[str, str]]:
    """``scheme:iface[@queue][?k=v&...]`` → (scheme, iface, queue, options)."""
    url = url.strip()
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition(":")
    scheme = scheme.lower()
    iface, _, q = rest.partition("@")
    queue: int | None = None
    if q:
        try:
            queue = int(q)
        except ValueError:
            raise SetupError(f"bad queue {q!r} in driver URL {url!r}", errno=errno.EINVAL,
                             hint="write IFNAME@N with N a queue number") from None
        if queue < 0:
            raise SetupError(f"negative queue in driver URL {url!r}", errno=errno.EINVAL)
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    return scheme, iface, queue, options


def open_adapter(url: str) -> Adapter:
    scheme, iface, queue, options = parse_url(url)
    target = ADAPTERS.get(scheme)
    if target is None:
        raise SetupError(
            f"unknown adapter {scheme!r} in driver URL {url!r}", errno=errno.EINVAL,
            hint="use sim, sim:PORT, xdp:IFNAME[@QUEUE] or packet:IFNAME",
        )
    modname, _, clsname = target.partition(":")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name is not None and modname.startswith(exc.name):
            raise SetupError(f"the {scheme} adapter is not available in this build",
                             errno=errno.ENOSYS, hint="use the sim adapter") from None
        raise
    cls: type[Adapter] = getattr(module, clsname)
    return cls(iface, queue, options)
