"""``efvi pcap info`` and ``efvi pcap convert``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efvi.cli.main import main
from efvi.pcap import PcapNgWriter, PcapWriter, read_records

T0 = 1_700_000_000_000_000_123


def make(tmp_path: Path) -> Path:
    p = tmp_path / "two-if.pcapng"
    with PcapNgWriter(p) as w:
        w.add_interface(name="a")
        w.add_interface(linktype=101, name="b", tsresol=6)
        w.write(T0, b"x" * 60, 0, orig_len=64, options=[(1, b"c")])
        w.write(T0 + 5000, b"y" * 30, 1)
        w.set_stats(0, recv=9, drop=4)
        w.set_stats(1, recv=1, drop=1)
    return p


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make(tmp_path)
    assert main(["pcap", "info", str(p), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["packets"] == 2 and d["bytes"] == 90 and d["wire_bytes"] == 94
    assert d["first_ns"] == T0 and d["last_ns"] == T0 + 5000 - 123
    assert d["drops"] == 5 and d["received"] == 10 and d["format"] == "pcapng"
    assert d["link_types"] == ["EN10MB (1)", "RAW (101)"] and d["resolution"] == ["ns", "us"]
    assert main(["pcap", "info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "Packets:              2" in text and "Dropped (ISB):        5" in text


def test_convert_round_trip_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make(tmp_path)
    out = tmp_path / "back.pcapng"
    assert main(["pcap", "convert", str(p), str(out)]) == 0
    a, b = list(read_records(p)), list(read_records(out))
    assert a == b  # ts, data, orig_len, ifidx, options
    assert main(["pcap", "info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["drops"] == 5
    # Two link types cannot go into one classic pcap: a clear error, exit status 1.
    assert main(["pcap", "convert", str(p), str(tmp_path / "x.pcap")]) == 1
    assert "classic pcap holds one" in capsys.readouterr().err
    single = tmp_path / "one.pcap"
    with PcapWriter(single, nanosecond=False) as w:
        w.write(T0, b"z" * 100)
    cut = tmp_path / "cut.pcap"
    assert main(["pcap", "convert", str(single), str(cut), "--snaplen", "10"]) == 0
    (rec,) = list(read_records(cut))
    assert rec.data == b"z" * 10 and rec.orig_len == 100 and rec.ts_ns == T0 - 123
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"nonsense" * 4)
    assert main(["pcap", "info", str(bad)]) == 1
    assert "offset 0" in capsys.readouterr().err
