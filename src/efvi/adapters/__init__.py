"""Adapters: the hardware side of the model (``sim``, ``xdp``, ``packet``).

Each implements the small contract in :mod:`efvi.adapters.base`. ``open_adapter``
picks one from a driver URL (``sim``, ``sim:PORT?opt=v``, ``xdp:IFNAME[@QUEUE]``,
``packet:IFNAME``).
"""

from __future__ import annotations

import errno
import importlib
from typing import TYPE_CHECKING

from efvi.adapters.options import canonical, check_url
from efvi.errors import SetupError

if TYPE_CHECKING:  # the contract loads with the adapter (numpy): URL checks stay light
    from efvi.adapters.base import Adapter

#: scheme → "module:Class"
ADAPTERS: dict[str, str] = {
    "sim": "efvi.adapters.sim.adapter:SimAdapter",
    "xdp": "efvi.adapters.xdp.adapter:XdpAdapter",
    "packet": "efvi.adapters.packet.adapter:PacketAdapter",
}


def parse_url(url: str) -> tuple[str, str, int | None, dict[str, str]]:
    """``scheme:iface[@queue][?k=v&...]`` → (scheme, iface, queue, options).

    The URL is checked against the adapter's option table
    (:mod:`efvi.adapters.options`): unknown options, repeated options, bad values
    and queues the adapter cannot have raise SetupError naming them. Options come
    back in canonical text form (booleans as ``1``/``0``).
    """
    u = check_url(url)
    return u.scheme, u.iface, u.queue, canonical(u.scheme, u.options)


def open_adapter(url: str) -> Adapter:
    scheme, iface, queue, options = parse_url(url)
    target = ADAPTERS[scheme]
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
