"""VI allocation flags (``EF_VI_*``) and their check against the adapter's capabilities."""

from __future__ import annotations

import errno
from enum import IntFlag
from typing import TYPE_CHECKING

from efvi.errors import SetupError

if TYPE_CHECKING:
    from efvi.driver import ProtectionDomain

__all__ = ["ViFlags", "check_flags"]


class ViFlags(IntFlag):
    """``flags=`` of :class:`VirtualInterface` (ef_vi's ``EF_VI_*`` values).

    Each is checked against the adapter's :class:`~efvi.adapters.base.Capabilities`
    at allocation: asking for what the adapter lacks raises UnsupportedError naming
    an adapter that has it; any other bit raises SetupError.
    """

    DEFAULT = 0
    #: RX events carry ``ts_ns`` (every adapter stamps RX; ``capabilities.rx_timestamps``)
    RX_TIMESTAMPS = 0x10000
    #: TX completions carry ``ts_ns`` (``capabilities.tx_timestamps``: sim; packet,
    #: from the socket's ``SO_TIMESTAMPING`` error queue, one TX event per frame)
    TX_TIMESTAMPS = 0x20000
    #: the NIC writes into the registered memory directly (``capabilities.zero_copy``)
    RX_ZEROCOPY = 0x4000000
    #: RX events may come late and in batches, for throughput: on ``packet`` a
    #: TPACKET_V3 block ring (one wake-up per block, ``retire_ms``); no effect elsewhere
    RX_EVENT_MERGE = 0x200000


_FLAG_CAPS = {ViFlags.RX_TIMESTAMPS: ("rx_timestamps", "sim"),
              ViFlags.TX_TIMESTAMPS: ("tx_timestamps", "sim or packet"),
              ViFlags.RX_ZEROCOPY: ("zero_copy", "sim or xdp (zerocopy=1)")}


def check_flags(pd: ProtectionDomain, flags: int) -> ViFlags:
    """``flags`` as ViFlags; SetupError for unknown bits, UnsupportedError (from
    ``Driver.require``) for a capability the adapter lacks (control path)."""
    known = 0
    for f in ViFlags:
        known |= f
    if not isinstance(flags, int) or flags < 0 or flags & ~known:
        raise SetupError(
            f"VI flags {flags!r} include unknown bits", errno=errno.EINVAL,
            hint="combine ViFlags." + ", ViFlags.".join(
                str(f.name) for f in ViFlags if f.name))
    out = ViFlags(flags)
    for flag, (cap, who) in _FLAG_CAPS.items():
        if out & flag:
            pd.driver.require(cap, who_has=who)
    return out
