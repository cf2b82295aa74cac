"""The CLI on the sim adapter: efvi demo, efvi sink / efvi send between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest

from efvi.cli.main import main
from efvi.pcap import open_capture


def efvi(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "efvi.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_demo_json_reports_no_drops(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    out = os.path.join(str(tmp_path), "demo.pcapng")
    rc = main(["demo", "--json", "-n", "5000", "-w", out])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert res["tx_packets"] == res["rx_packets"] == res["sniffed"] == 5000
    assert res["drops"] == 0 and res["gaps"] == 0 and res["pps"] > 0
    assert 0 < res["latency_ns"]["min"] <= res["latency_ns"]["p50"] <= res["latency_ns"]["max"]
    with open_capture(out) as r:
        recs = list(r)
    assert len(recs) == 5000 and all(isinstance(x.ts_ns, int) for x in recs)


def test_demo_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-n", "2000"]) == 0
    text = capsys.readouterr().out
    assert "received" in text and "drops        0" in text and "latency" in text


def _sim_mac(name: str) -> str:
    h = zlib.crc32(name.encode())
    return ":".join(f"{b:02x}" for b in (2, 0, 0x5E, (h >> 16) & 255, (h >> 8) & 255, h & 255))


def test_sink_and_send_over_a_named_wire() -> None:
    wire = f"@t{os.getpid()}"
    port_rx = f"rx{os.getpid()}"
    sink = subprocess.Popen(
        [sys.executable, "-m", "efvi.cli.main", "sink", "--json", "-n", "500", "--duration",
         "20", f"sim:{port_rx}?wire={wire}&ip=198.18.5.2", "udp:198.18.5.2:7000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sink.stderr is not None
        header = sink.stderr.readline()  # printed once the sink's VI is up
        assert "pkt-rate" in header, header
        snd = efvi("send", "--json", "-n", "500", "-B", "50", f"sim:tx?wire={wire}&ip=198.18.5.1",
                   "198.18.5.2", "7000", "--dmac", _sim_mac(port_rx))
        assert snd.returncode == 0, snd.stderr
        sres = json.loads(snd.stdout)
        assert sres["tx_packets"] == 500 and sres["completed"] == 500
        out, _ = sink.communicate(timeout=30)
    finally:
        sink.kill()
    res = json.loads(out)
    # the sink was up (its header printed) with 4096 buffers and the wire has 16 MiB of
    # queue: nothing may be lost; a loss would also have to be counted
    assert res["rx_packets"] + res["drops"] + sres["drops"] == 500
    assert res["rx_packets"] == 500 and res["drops"] == 0 and sres["drops"] == 0, (res, sres)


def test_send_without_neighbour_names_the_fix() -> None:
    r = efvi("send", "-n", "1", "sim:lonely", "198.18.0.77", "9")
    assert r.returncode == 1 and "no neighbour entry" in r.stderr and "--dmac" in r.stderr


def test_bad_filter_and_bad_url_are_clear_errors() -> None:
    r = efvi("sink", "-n", "1", "sim", "udp:nonsense")
    assert r.returncode == 2 and "bad filter spec" in r.stderr
    r = efvi("sink", "-n", "1", "nosuch:eth0", "unicast-all")
    assert r.returncode == 2 and "unknown adapter" in r.stderr


def test_sink_on_sim_stops_on_duration() -> None:
    r = efvi("sink", "--json", "--duration", "0.3", "sim", "unicast-all")
    assert r.returncode == 0
    assert json.loads(r.stdout)["rx_packets"] == 0
