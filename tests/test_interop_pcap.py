"""Interoperability with capture tools no one here wrote: tcpdump/libpcap, tshark,
capinfos and editcap (Wireshark), scapy and dpkt. Each test skips, naming the missing
tool, only when that tool is not installed (CI installs tcpdump and tshark)."""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from efvi.cli.main import main as efvi_main
from efvi.pcap import PcapNgReader, PcapNgWriter, PcapReader, PcapWriter, open_capture
from efvi.apps.pcap import summarize
from efvi.wire.build import udp_frame

pytestmark = pytest.mark.area("interop")  # CI: no skip where tcpdump/tshark are installed

T0 = 1_700_000_000_123_456_789
N = 40


def frames() -> list[tuple[int, bytes]]:
    """Distinct UDP frames with ns timestamps (odd intervals: every ns digit matters)."""
    return [(T0 + i * 1_000_001_001 + i % 7,
             udp_frame("01:00:5e:01:02:03", "02:00:00:00:00:01", "198.18.0.1", "239.1.2.3",
                       1000 + i, 30001, bytes([i]) * (i % 50)))
            for i in range(N)]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install tcpdump tshark)")
    return path


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          timeout=120).stdout


def write_ours(path: Path, fmt: str) -> None:
    if fmt == "pcapng":
        with PcapNgWriter(path) as w:
            w.add_interface(name="sim0")
            for t, f in frames():
                w.write(t, f)
            w.set_stats(0, recv=N + 5, drop=5)
    else:
        with PcapWriter(path, nanosecond=fmt == "pcap-ns") as w:
            for t, f in frames():
                w.write(t, f)


def expected_ts(fmt: str) -> list[int]:
    return [t if fmt != "pcap-us" else t // 1000 * 1000 for t, _ in frames()]


def ns_text(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def read_ours(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(rec.ts_ns, rec.data) for rec in r]


FMTS = ["pcap-ns", "pcap-us", "pcapng"]


# They read ours ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FMTS)
def test_tcpdump_reads_our_files(tmp_path: Path, fmt: str) -> None:
    tcpdump = need("tcpdump")
    p = tmp_path / f"ours.{fmt}"
    write_ours(p, fmt)
    lines = run(tcpdump, "-r", str(p), "--nano", "-tt", "-n").splitlines()
    assert len(lines) == N
    for line, ts, (_, f) in zip(lines, expected_ts(fmt), frames()):
        assert line.startswith(ns_text(ts) + " IP 198.18.0.1."), line
        assert f"239.1.2.3.30001: UDP, length {len(f) - 42}" in line


@pytest.mark.parametrize("fmt", FMTS)
def test_tshark_and_capinfos_read_our_files(tmp_path: Path, fmt: str) -> None:
    tshark = need("tshark")
    capinfos = need("capinfos")
    p = tmp_path / f"ours.{fmt}"
    write_ours(p, fmt)
    out = run(tshark, "-r", str(p), "-T", "fields", "-e", "frame.time_epoch", "-e",
              "frame.len", "-e", "frame.cap_len", "-e", "udp.srcport")
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [[ns_text(ts), str(len(f)), str(len(f)), str(1000 + i)]
                    for i, (ts, (_, f)) in enumerate(zip(expected_ts(fmt), frames()))]
    info = run(capinfos, str(p))
    assert re.search(rf"Number of packets:\s+{N}\b", info)
    assert re.search(rf"Data size:\s+{sum(len(f) for _, f in frames())} bytes", info)
    prec = "microseconds" if fmt == "pcap-us" else "nanoseconds"
    assert re.search(rf"precision:\s+{prec}", info)
    if fmt == "pcapng":
        assert "Name = sim0" in info and "Number of stat entries = 1" in info


# We read theirs ---------------------------------------------------------------------

@pytest.mark.parametrize("nano", [False, True])
def test_we_read_what_tcpdump_writes(tmp_path: Path, nano: bool) -> None:
    tcpdump = need("tcpdump")
    src = tmp_path / "src.pcapng"
    write_ours(src, "pcapng")
    out = tmp_path / "tcpdump.pcap"
    argv = [tcpdump, "-r", str(src), "-w", str(out)]
    if nano:
        argv[1:1] = ["--time-stamp-precision=nano"]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    with PcapReader(out) as r:
        assert r.nanosecond is nano
        got = [(rec.ts_ns, rec.data) for rec in r]
    want_ts = expected_ts("pcap-ns" if nano else "pcap-us")
    assert got == [(t, f) for t, (_, f) in zip(want_ts, frames())]


@pytest.mark.parametrize("ftype,fmt", [("pcapng", "pcapng"), ("nsecpcap", "pcap-ns"),
                                       ("pcap", "pcap-us")])
def test_we_read_what_editcap_writes(tmp_path: Path, ftype: str, fmt: str) -> None:
    editcap = need("editcap")
    src = tmp_path / "src.pcapng"
    write_ours(src, "pcapng")
    out = tmp_path / f"editcap.{ftype}"
    subprocess.run([editcap, "-F", ftype, str(src), str(out)], check=True,
                   capture_output=True, timeout=120)
    assert read_ours(out) == [(t, f) for t, (_, f) in zip(expected_ts(fmt), frames())]


def test_we_read_what_tshark_writes_with_its_isb(tmp_path: Path) -> None:
    tshark = need("tshark")
    src = tmp_path / "src.pcap"
    write_ours(src, "pcap-ns")
    out = tmp_path / "tshark.pcapng"
    subprocess.run([tshark, "-r", str(src), "-F", "pcapng", "-w", str(out)], check=True,
                   capture_output=True, timeout=120)
    with PcapNgReader(out) as r:
        got = [(rec.ts_ns, rec.data) for rec in r]
        assert r.interfaces[0].linktype == 1
    assert got == [(t, f) for t, f in frames()]
    s = summarize(out)
    assert s.packets == N and s.first_ns == T0 and s.format == "pcapng"


def test_tshark_reads_what_efvi_pcap_convert_writes(tmp_path: Path) -> None:
    tshark = need("tshark")
    src = tmp_path / "src.pcap"
    write_ours(src, "pcap-us")
    out = tmp_path / "conv.pcapng"
    assert efvi_main(["pcap", "convert", str(src), str(out), "--snaplen", "50"]) == 0
    rows = run(tshark, "-r", str(out), "-T", "fields", "-e", "frame.time_epoch", "-e",
               "frame.len", "-e", "frame.cap_len").splitlines()
    assert rows == [f"{ns_text(t)}\t{len(f)}\t{min(len(f), 50)}"
                    for t, (_, f) in zip(expected_ts("pcap-us"), frames())]


def test_scapy_writes_files_we_read(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all", reason="scapy is not installed")
    from scapy.utils import PcapNgWriter as ScapyNgWriter
    from scapy.utils import PcapWriter as ScapyWriter

    pkts = []
    for t, f in frames():
        p = scapy_all.Ether(f)
        p.time = Decimal(t) / Decimal(10**9)
        pkts.append(p)
    us = tmp_path / "scapy-us.pcap"
    scapy_all.wrpcap(str(us), pkts)
    ns = tmp_path / "scapy-ns.pcap"
    w = ScapyWriter(str(ns), nano=True)
    w.write(pkts)
    w.close()
    ng = tmp_path / "scapy.pcapng"
    wn = ScapyNgWriter(str(ng))
    wn.write(pkts)
    wn.close()
    want = [f for _, f in frames()]
    for path, fmt in ((us, "pcap-us"), (ns, "pcap-ns"), (ng, "pcapng")):
        got = read_ours(path)
        assert [d for _, d in got] == want, path
        theirs = [int(p.time * 10**9) for p in scapy_all.rdpcap(str(path))]
        assert [t for t, _ in got] == theirs, path
        # scapy writes µs for wrpcap and for pcapng (if_tsresol 6), ns with nano=True.
        if fmt == "pcap-ns":
            assert [t for t, _ in got] == [t for t, _ in frames()], path
        else:
            assert all(abs(a - b) < 1000 and a % 1000 == 0
                       for (a, _), (b, _) in zip(got, frames())), path


def test_dpkt_writes_files_we_read(tmp_path: Path) -> None:
    dpkt = pytest.importorskip("dpkt", reason="dpkt is not installed")
    # Binary-fraction timestamps survive dpkt's float API exactly.
    stamps = [1_700_000_000 + i / 4 for i in range(N)]
    want = [(int(s * 4) * 250_000_000, f) for s, (_, f) in zip(stamps, frames())]
    for name, make in (("dpkt-us.pcap", lambda fh: dpkt.pcap.Writer(fh)),
                       ("dpkt-ns.pcap", lambda fh: dpkt.pcap.Writer(fh, nano=True)),
                       ("dpkt.pcapng", lambda fh: dpkt.pcapng.Writer(fh))):
        path = tmp_path / name
        with open(path, "wb") as fh:
            w = make(fh)
            for s, (_, f) in zip(stamps, frames()):
                w.writepkt(f, ts=s)
            w.close()
        assert read_ours(path) == want, name
        with open(path, "rb") as fh:
            r = dpkt.pcapng.Reader(fh) if name.endswith("ng") else dpkt.pcap.Reader(fh)
            assert [(round(ts * 4) * 250_000_000, bytes(b)) for ts, b in r] == want


def test_scapy_and_dpkt_read_our_files(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all", reason="scapy is not installed")
    dpkt = pytest.importorskip("dpkt", reason="dpkt is not installed")
    for fmt in FMTS:
        p = tmp_path / f"ours.{fmt}"
        write_ours(p, fmt)
        pk = scapy_all.rdpcap(str(p))
        assert [bytes(x) for x in pk] == [f for _, f in frames()]
        assert [int(x.time * 10**9) for x in pk] == expected_ts(fmt)
        with open(p, "rb") as fh:
            r = dpkt.pcapng.Reader(fh) if fmt == "pcapng" else dpkt.pcap.Reader(fh)
            got = [bytes(b) for _, b in r]
        assert got == [f for _, f in frames()]


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name,exact", [("editcap.pcapng", True), ("tcpdump-ns.pcap", True),
                                        ("scapy.pcapng", False)])
def test_fixture_files_from_other_tools(name: str, exact: bool) -> None:
    """Files editcap 3.x, tcpdump 4.99 (--time-stamp-precision=nano) and scapy 2.8
    wrote from ``frames()`` (kept in tests/data, so this runs without the tools)."""
    got = read_ours(DATA / name)
    assert [d for _, d in got] == [f for _, f in frames()]
    if exact:
        assert [t for t, _ in got] == [t for t, _ in frames()]
    else:  # scapy's pcapng is µs
        assert all(a % 1000 == 0 and abs(a - b) < 1000 for (a, _), (b, _) in
                   zip(got, frames()))
    s = summarize(DATA / name)
    assert s.packets == N and s.bytes == sum(len(f) for _, f in frames())
