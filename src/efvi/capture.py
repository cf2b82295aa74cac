"""``efvi.capture``: the capture engine as a library (what ``efvi capture`` runs).

    from efvi.capture import Capture
    with Capture("xdp:eth1", expression="udp port 5000", snaplen=128) as cap:
        for batch in cap.batches(count=10_000):      # numpy columns per batch
            analyse(batch.ts_ns, batch.wire_len, batch.frames)

or write files: ``cap.run(CaptureWriter("out.pcapng", ...), duration_s=60)``. See
:mod:`efvi.apps.capture` for what each adapter sees.
"""

from __future__ import annotations

from efvi.apps.capture import Capture as Capture
from efvi.apps.capture import CaptureBatch as CaptureBatch
from efvi.apps.capture import CaptureStats as CaptureStats
from efvi.apps.capture import OutputError as OutputError
from efvi.apps.capture_files import CaptureWriter as CaptureWriter
from efvi.apps.capture_files import make_filename as make_filename
from efvi.wire.summary import describe as describe
from efvi.wire.summary import format_packet as format_packet

__all__ = ["Capture", "CaptureBatch", "CaptureStats", "CaptureWriter", "OutputError",
           "describe", "format_packet", "make_filename"]
