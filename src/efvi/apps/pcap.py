"""``efvi pcap``: a capinfos-like summary of a capture file, and lossless conversion.

Both stream the file (batch path for :func:`summarize`, per-record for
:func:`convert`), so they work on files of any size.
"""

from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass, field

from efvi.errors import FormatError, SetupError
from efvi.pcap._io import PathOrFile, replacing
from efvi.pcap.constants import DEFAULT_SNAPLEN, IF_TSRESOL, LINKTYPE_NAMES
from efvi.pcap.pcap import PcapReader, PcapWriter
from efvi.pcap.pcapng import PcapNgReader, PcapNgWriter
from efvi.pcap.reader import open_capture
from efvi.pcap.record import Interface

__all__ = ["CaptureSummary", "convert", "output_format", "resolution_name", "summarize"]


def resolution_name(tsresol: int) -> str:
    """``9 -> "ns"``, ``6 -> "us"``, ``3 -> "ms"``, ``0x94 -> "2^-20 s"``."""
    if tsresol & 0x80:
        return f"2^-{tsresol & 0x7F} s"
    return {0: "s", 3: "ms", 6: "us", 9: "ns", 12: "ps"}.get(tsresol, f"10^-{tsresol} s")


@dataclass(slots=True)
class CaptureSummary:
    """What ``efvi pcap info`` reports; ``None`` where the file does not say."""

    file: str
    format: str
    byte_order: str
    resolution: list[str]
    link_types: list[str]
    interfaces: int
    sections: int
    snaplen: int | None
    packets: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    duration_ns: int | None = None
    received: int | None = None
    drops: int | None = None
    skipped_blocks: int = 0
    interface_names: list[str | None] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _ifaces(r: PcapReader | PcapNgReader) -> list[Interface]:
    if isinstance(r, PcapNgReader):
        return [i for s in r.sections for i in s.interfaces]
    return list(r.interfaces)


def summarize(src: PathOrFile, name: str | None = None) -> CaptureSummary:
    """Read the whole file (batch path) and summarise it."""
    with open_capture(src) as r:
        packets = nbytes = wbytes = 0
        first: int | None = None
        last: int | None = None
        for b in r.batches():
            packets += len(b)
            nbytes += int(b.caplen.sum(dtype="int64"))
            wbytes += int(b.orig_len.sum(dtype="int64"))
            lo, hi = int(b.ts_ns.min()), int(b.ts_ns.max())
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        ifaces = _ifaces(r)
        received = drops = None
        nsections = 1
        skipped = 0
        if isinstance(r, PcapNgReader):
            nsections = len(r.sections)
            skipped = sum(r.skipped.values())
            latest = {(s.section, s.ifidx): s for s in r.stats}
            recv = [s.recv for s in latest.values() if s.recv is not None]
            drop = [s.drop for s in latest.values() if s.drop is not None]
            received = sum(recv) if recv else None
            drops = sum(drop) if drop else None
        snaps = {i.snaplen for i in ifaces}
        return CaptureSummary(
            file=name if name is not None else str(r._src.path or "<stream>"),
            format=r.format + ("-ns" if isinstance(r, PcapReader) and r.nanosecond else
                               "-us" if isinstance(r, PcapReader) else ""),
            byte_order="little" if r.byte_order == "<" else "big",
            resolution=sorted({resolution_name(i.tsresol) for i in ifaces}),
            link_types=sorted({f"{LINKTYPE_NAMES.get(i.linktype, 'LINKTYPE')} "
                               f"({i.linktype})" for i in ifaces}),
            interfaces=len(ifaces), sections=nsections,
            snaplen=snaps.pop() if len(snaps) == 1 else None,
            packets=packets, bytes=nbytes, wire_bytes=wbytes, first_ns=first,
            last_ns=last, duration_ns=None if first is None or last is None else last - first,
            received=received, drops=drops, skipped_blocks=skipped,
            interface_names=[i.name for i in ifaces])


def output_format(dst: PathOrFile, fmt: str | None = None) -> str:
    """``fmt`` if given, else ``"pcap"`` for a ``*.pcap`` path and ``"pcapng"`` otherwise."""
    if fmt is not None:
        return fmt
    name = dst if isinstance(dst, (str, os.PathLike)) else ""
    return "pcap" if os.fspath(name).endswith(".pcap") else "pcapng"


def convert(src: PathOrFile, dst: PathOrFile, fmt: str = "pcapng",
            snaplen: int | None = None) -> int:
    """Copy every record of ``src`` into a new ``fmt`` (``"pcap"`` or ``"pcapng"``)
    file at ``dst``; returns the record count.

    Lossless for what both formats hold: ns timestamps (pcap output is always the ns
    flavour), frames, original lengths, link types; to pcapng also interface names
    and options, packet options and the last ISB counters of each interface. Frames
    are cut to ``snaplen`` when given. FormatError when a pcap output would need
    interfaces of different link types.

    The output is written to a temporary file renamed over ``dst`` on success (a
    failed convert leaves no half file under ``dst``); SetupError when ``dst`` is
    ``src`` (same device and inode, also through links) or cannot be written.
    """
    if fmt not in ("pcap", "pcapng"):
        raise SetupError(f"unknown capture format {fmt!r}", errno=errno.EINVAL,
                         hint="use pcap or pcapng")
    if snaplen is not None and not 0 < snaplen <= 0x7FFFFFFF:
        raise SetupError(f"snaplen {snaplen} is outside 1..2147483647", errno=errno.EINVAL,
                         hint="give a positive snapshot length, e.g. 65535")
    with open_capture(src) as r, replacing(dst, src) as out:
        if fmt == "pcap":
            return _to_pcap(r, out, snaplen)
        return _to_pcapng(r, out, snaplen)


def _to_pcap(r: PcapReader | PcapNgReader, dst: PathOrFile, snaplen: int | None) -> int:
    w: PcapWriter | None = None
    linktype: int | None = None
    n = 0
    try:
        for rec in r:
            iface = r.interfaces[rec.ifidx]
            if w is None:
                linktype = iface.linktype
                snaps = [i.snaplen for i in r.interfaces if i.snaplen]
                w = PcapWriter(dst, linktype=linktype,
                               snaplen=snaplen or max(snaps, default=DEFAULT_SNAPLEN))
            elif iface.linktype != linktype:
                raise FormatError(f"interfaces of link types {linktype} and "
                                  f"{iface.linktype}: classic pcap holds one; "
                                  "convert to pcapng instead")
            w.write(rec.ts_ns, rec.data, rec.orig_len)
            n += 1
        if w is None:
            ifs = _ifaces(r)
            w = PcapWriter(dst, linktype=ifs[0].linktype if ifs else 1,
                           snaplen=snaplen or (ifs[0].snaplen if ifs and ifs[0].snaplen
                                               else DEFAULT_SNAPLEN))
    finally:
        if w is not None:
            w.close()
    return n


def _to_pcapng(r: PcapReader | PcapNgReader, dst: PathOrFile, snaplen: int | None) -> int:
    shb = dict(r.sections[0].options) if isinstance(r, PcapNgReader) else {}
    w = PcapNgWriter(dst, userappl=(shb[4].decode("utf-8", "replace") if 4 in shb
                                    else "efvi pcap convert"),
                     os=shb[3].decode("utf-8", "replace") if 3 in shb else None,
                     hardware=shb[2].decode("utf-8", "replace") if 2 in shb else None,
                     comment=shb[1].decode("utf-8", "replace") if 1 in shb else None)
    mapping: dict[tuple[int, int], int] = {}

    def out_if(section: int, ifidx: int, iface: Interface) -> int:
        key = (section, ifidx)
        if key not in mapping:
            opts = [(c, v) for c, v in iface.options if c != IF_TSRESOL]
            snap = iface.snaplen or DEFAULT_SNAPLEN
            mapping[key] = w.add_interface(iface.linktype,
                                           min(snap, snaplen) if snaplen else snap,
                                           options=opts)
        return mapping[key]

    n = 0
    try:
        for rec in r:
            sec = len(r.sections) - 1 if isinstance(r, PcapNgReader) else 0
            idx = out_if(sec, rec.ifidx, r.interfaces[rec.ifidx])
            w.write(rec.ts_ns, rec.data, idx, rec.orig_len, options=rec.options)
            n += 1
        if isinstance(r, PcapNgReader):
            for s in r.stats:
                iface = r.sections[s.section].interfaces[s.ifidx]
                w.set_stats(out_if(s.section, s.ifidx, iface), s.recv, s.drop,
                            osdrop=s.osdrop, filter_accept=s.filter_accept,
                            user_delivered=s.user_delivered, ts_ns=s.ts_ns)
        elif not mapping:
            out_if(0, 0, r.interfaces[0])
    finally:
        w.close()
    return n
