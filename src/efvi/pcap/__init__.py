"""pcap and pcapng capture files, nanoseconds end to end (sans-I/O codecs with thin
file shells).

* :func:`open_capture` — detects the format and streams records (:class:`Record`)
  or numpy batches (:class:`RecordBatch`) in constant memory.
* :class:`PcapWriter` / :class:`PcapNgWriter` — per-record ``write`` and vectorised
  ``write_batch``; pcapng adds ``add_interface`` and ``set_stats`` (ISB at close).
* :func:`efvi.apps.pcap.summarize` — a capinfos-like summary (``efvi pcap info``).

Bad bytes raise :class:`efvi.errors.FormatError` naming the file offset, after every
complete record before the fault has been delivered.
"""

from efvi.pcap.pcap import PcapReader as PcapReader
from efvi.pcap.pcap import PcapWriter as PcapWriter
from efvi.pcap.pcapng import PcapNgReader as PcapNgReader
from efvi.pcap.pcapng import PcapNgWriter as PcapNgWriter
from efvi.pcap.pcapng import Section as Section
from efvi.pcap.reader import CaptureReader as CaptureReader
from efvi.pcap.reader import open_capture as open_capture
from efvi.pcap.reader import read_batches as read_batches
from efvi.pcap.reader import read_records as read_records
from efvi.pcap.record import Interface as Interface
from efvi.pcap.record import InterfaceStats as InterfaceStats
from efvi.pcap.record import Record as Record
from efvi.pcap.record import RecordBatch as RecordBatch

__all__ = ["CaptureReader", "Interface", "InterfaceStats", "PcapNgReader", "PcapNgWriter",
           "PcapReader", "PcapWriter", "Record", "RecordBatch", "Section", "open_capture",
           "read_batches", "read_records"]
