"""efvi — Solarflare's ef_vi packet-I/O model in Python, on any Linux host.

Control path: :class:`Driver` → :class:`ProtectionDomain` → :class:`MemoryRegion`,
:class:`VirtualInterface` / :class:`VISet` → :class:`FilterSpec` filters.
Data path: ``vi.receive_*``, ``vi.transmit_*``, ``vi.poll`` / ``vi.eventq_poll``,
``vi.transmit_unbundle``. See ``docs/design.md`` and the README.

The names below are loaded on first use (PEP 562), so ``import efvi`` — and every
``efvi`` command start-up — does not pay for numpy and the core until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → defining module
_EXPORTS: dict[str, str] = {
    "EF_REQUEST_ID_MASK": "efvi.constants",
    "PKT_BUF_SIZE": "efvi.constants",
    "Driver": "efvi.driver",
    "ProtectionDomain": "efvi.driver",
    "ClosedError": "efvi.errors",
    "EfviError": "efvi.errors",
    "FilterExistsError": "efvi.errors",
    "FormatError": "efvi.errors",
    "SetupError": "efvi.errors",
    "UnsupportedError": "efvi.errors",
    "ClockSource": "efvi.events",
    "DiscardReason": "efvi.events",
    "Event": "efvi.events",
    "EventBatch": "efvi.events",
    "EventType": "efvi.events",
    "RxFlags": "efvi.events",
    "TxErrorType": "efvi.events",
    "FilterSpec": "efvi.filters",
    "parse_filter": "efvi.filters",
    "MemoryRegion": "efvi.memory",
    "FilterCookie": "efvi.filter_book",
    "ViFlags": "efvi.viflags",
    "VirtualInterface": "efvi.vi",
    "VISet": "efvi.viset",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'efvi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from efvi.constants import EF_REQUEST_ID_MASK as EF_REQUEST_ID_MASK
    from efvi.constants import PKT_BUF_SIZE as PKT_BUF_SIZE
    from efvi.driver import Driver as Driver
    from efvi.driver import ProtectionDomain as ProtectionDomain
    from efvi.errors import ClosedError as ClosedError
    from efvi.errors import EfviError as EfviError
    from efvi.errors import FilterExistsError as FilterExistsError
    from efvi.errors import FormatError as FormatError
    from efvi.errors import SetupError as SetupError
    from efvi.errors import UnsupportedError as UnsupportedError
    from efvi.events import ClockSource as ClockSource
    from efvi.events import DiscardReason as DiscardReason
    from efvi.events import Event as Event
    from efvi.events import EventBatch as EventBatch
    from efvi.events import EventType as EventType
    from efvi.events import RxFlags as RxFlags
    from efvi.events import TxErrorType as TxErrorType
    from efvi.filter_book import FilterCookie as FilterCookie
    from efvi.filters import FilterSpec as FilterSpec
    from efvi.filters import parse_filter as parse_filter
    from efvi.memory import MemoryRegion as MemoryRegion
    from efvi.viflags import ViFlags as ViFlags
    from efvi.vi import VirtualInterface as VirtualInterface
    from efvi.viset import VISet as VISet
