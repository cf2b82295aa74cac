"""Filter bookkeeping shared by VIs and VI sets: the cookie ``filter_add`` returns
(``ef_filter_cookie``), the mode check (sniff vs steal against the adapter's
capabilities) and the book of installed filters (control path only)."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterSpec

if TYPE_CHECKING:
    from efvi.adapters.base import HwVI
    from efvi.driver import ProtectionDomain

_cookie_ids = count(1)


@dataclass(frozen=True, slots=True)
class FilterCookie:
    """What ``filter_add`` returns and ``filter_del`` takes (``ef_filter_cookie``)."""

    filter_id: int
    spec: FilterSpec


def check_filter_mode(pd: ProtectionDomain, spec: FilterSpec) -> None:
    caps = pd.driver.capabilities
    spec.check()
    if spec.sniff_mode and not caps.sniff:
        raise UnsupportedError(
            f"the {caps.adapter} adapter cannot sniff (copy) frames: filter {spec} steals "
            "or nothing; use the packet adapter (or sim) for sniff filters")
    if not spec.sniff_mode and not caps.steal:
        raise UnsupportedError(
            f"the {caps.adapter} adapter only sniffs (the kernel keeps its copy); "
            f"add .sniff() to {spec} or use the xdp adapter (or sim) to steal frames")


class FilterBook:
    """The filters one VI (or VI set) installed: add, delete, delete all (control path)."""

    def __init__(self, pd: ProtectionDomain, targets: list[HwVI], what: str) -> None:
        self.pd = pd
        self.targets = targets
        self.what = what
        self.entries: dict[int, tuple[FilterCookie, object]] = {}

    def add(self, spec: FilterSpec) -> FilterCookie:
        check_filter_mode(self.pd, spec)
        handle = self.pd._hw.filter_add(spec, self.targets)
        cookie = FilterCookie(next(_cookie_ids), spec)
        self.entries[cookie.filter_id] = (cookie, handle)
        return cookie

    def delete(self, cookie: FilterCookie) -> None:
        entry = self.entries.pop(cookie.filter_id, None)
        if entry is None:
            raise SetupError(f"filter {cookie.spec} is not installed on this {self.what}",
                             errno=errno.ENOENT)
        self.pd._hw.filter_del(entry[1])

    def clear(self) -> None:
        """Remove every filter; teardown goes on whatever an adapter raises."""
        for _, handle in list(self.entries.values()):
            try:
                self.pd._hw.filter_del(handle)
            except Exception:  # noqa: BLE001
                pass
        self.entries.clear()
