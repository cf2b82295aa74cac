"""Replay capture files: the public API of ``efvi replay``.

* :class:`Scheduler`, :class:`Pacing`, :class:`Chunk` — sans-I/O: records in,
  ``(deadline_ns, batch)`` out (no clock; tests check a schedule directly);
* :class:`ReplaySender` — a TX VI that sends chunks at their deadlines, one doorbell
  per run of due records, and measures lateness;
* :func:`replay` — files (pcap/pcapng, streamed or preloaded), loops, limits → stats.

The capture-fed software NIC (``sim:PORT?pcap=FILE&speed=1|0``) is a URL option of
the ``sim`` adapter: see :mod:`efvi.adapters.sim.feed`.
"""

from efvi.apps.replay import LatencyHistogram as LatencyHistogram
from efvi.apps.replay import ReplayError as ReplayError
from efvi.apps.replay import ReplaySender as ReplaySender
from efvi.apps.replay import ReplayStats as ReplayStats
from efvi.apps.replay import check_files as check_files
from efvi.apps.replay import fix_checksums as fix_checksums
from efvi.apps.replay import replay as replay
from efvi.apps.replay_schedule import Chunk as Chunk
from efvi.apps.replay_schedule import Pacing as Pacing
from efvi.apps.replay_schedule import Scheduler as Scheduler

__all__ = ["Chunk", "LatencyHistogram", "Pacing", "ReplayError", "ReplaySender",
           "ReplayStats", "Scheduler", "check_files", "fix_checksums", "replay"]
