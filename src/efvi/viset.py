"""VI sets (``ef_vi_set``): VIs that share a filter's traffic by symmetric flow hash."""

from __future__ import annotations

import errno

from efvi.driver import ProtectionDomain
from efvi.errors import SetupError, UnsupportedError
from efvi.filter_book import FilterBook, FilterCookie
from efvi.filters import FilterSpec
from efvi.vi import VirtualInterface


class VISet:
    """``n`` VIs sharing a filter's traffic by symmetric flow hash (``ef_vi_set``)."""

    def __init__(self, pd: ProtectionDomain, n: int, rxq: int = -1, txq: int = -1,
                 evq: int = -1, flags: int = 0) -> None:
        pd._check_open()
        if not pd.driver.capabilities.vi_sets:
            raise UnsupportedError(f"the {pd.driver.adapter.name} adapter has no VI sets")
        if not 1 <= n <= 64:
            raise SetupError(f"a VI set has 1..64 VIs, not {n}", errno=errno.EINVAL)
        self.pd = pd
        self.vis = [VirtualInterface(pd, rxq, txq, evq, flags, queue=i) for i in range(n)]
        self._filters = FilterBook(pd, [vi._hw for vi in self.vis], "VI set")

    def __len__(self) -> int:
        return len(self.vis)

    def __getitem__(self, i: int) -> VirtualInterface:
        return self.vis[i]

    def filter_add(self, spec: FilterSpec) -> FilterCookie:
        """Spread frames matching ``spec`` over the set's VIs by flow hash."""
        self.pd._check_open()
        return self._filters.add(spec)

    def filter_del(self, cookie: FilterCookie) -> None:
        self._filters.delete(cookie)

    def close(self) -> None:
        self._filters.clear()
        for vi in self.vis:
            vi.close()

    def __enter__(self) -> "VISet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
