"""efvi — Solarflare's ef_vi packet-I/O model in Python, on any Linux host.

Control path: :class:`Driver` → :class:`ProtectionDomain` → :class:`MemoryRegion`,
:class:`VirtualInterface` / :class:`VISet` → :class:`FilterSpec` filters.
Data path: ``vi.receive_*``, ``vi.transmit_*``, ``vi.poll`` / ``vi.eventq_poll``,
``vi.transmit_unbundle``. See ``DESIGN.md`` and the README.
"""

from __future__ import annotations

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
from efvi.filters import FilterSpec as FilterSpec
from efvi.filters import parse_filter as parse_filter
from efvi.memory import MemoryRegion as MemoryRegion
from efvi.filter_book import FilterCookie as FilterCookie
from efvi.vi import ViFlags as ViFlags
from efvi.vi import VirtualInterface as VirtualInterface
from efvi.viset import VISet as VISet

__version__ = "0.1.0"
