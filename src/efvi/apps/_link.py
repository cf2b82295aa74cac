"""Link-state watching for long-running tools (control path, once a second)."""

from __future__ import annotations

from collections.abc import Callable

from efvi import Driver, netutil


def link_watch(driver: Driver) -> Callable[[], bool] | None:
    """A function returning False once ``driver``'s interface is down or gone, or None
    for adapters without a kernel interface (sim). Cost: one rtnetlink query a call."""
    a = driver.adapter
    ns = getattr(a, "netns", None) or getattr(a, "_ns", None)
    if ns is None or a.name == "sim":
        return None
    ifindex = driver.interface.ifindex

    def up() -> bool:
        try:
            with ns.enter():
                li = netutil.link_info(ifindex)
        except Exception:  # noqa: BLE001 - gone (deleted, namespace removed) is down
            return False
        return li.up and li.running

    return up
