"""Link-state watching for long-running tools (control path, once a second).

Every tool asks the adapter contract the same question, :meth:`efvi.Driver.link_state`
(two ioctls on xdp and packet, always ``up`` on sim), from its progress tick — never
per packet. ``efvi sink``, ``send`` and ``capture`` stop with :func:`link_lost`'s
message when it is not empty; ``station`` and ``forward`` with :func:`link_watch`.
"""

from __future__ import annotations

from collections.abc import Callable

from efvi import Driver
from efvi.errors import EfviError
from efvi.linkstate import link_state_message

__all__ = ["link_lost", "link_watch"]


def link_watch(driver: Driver) -> Callable[[], bool] | None:
    """A function returning False once ``driver``'s interface is down, gone or has no
    carrier, or None for adapters without a kernel interface (sim)."""
    if driver.adapter.name == "sim":
        return None

    def up() -> bool:
        try:
            return driver.link_state() == "up"
        except (OSError, EfviError):
            return False

    return up


def link_lost(driver: Driver, *, carrier: bool = False) -> str:
    """Empty while ``driver``'s interface can carry frames, else the one-line reason a
    tool stops with, naming the interface: it is gone (deleted, moved to another
    namespace) or down, or — with ``carrier``, for a sender — it has no carrier.
    An error asking (other than the interface being gone) is not a reason to stop."""
    try:
        state = driver.link_state()
    except (OSError, EfviError):
        return ""
    if state == "up" or (state == "no-carrier" and not carrier):
        return ""
    return link_state_message(driver.adapter.iface, state)
