"""The capture engine and CLI on the sim adapter (no root): batches, snaplen, jumbo
chains and TRUNC discards stored with their wire length, files, names, the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from efvi import Driver, FilterSpec
from efvi.bpf import libpcap
from efvi.capture import Capture, CaptureBatch, CaptureStats, CaptureWriter, make_filename
from efvi.cli.main import main
from efvi.filters import format_mac
from efvi.pcap import read_records
from efvi.pcap.pcapng import PcapNgReader
from efvi.testing.conformance import Endpoint, Link, send
from efvi.wire.build import udp_frame

pytestmark = pytest.mark.skipif(not libpcap.available(), reason="needs libpcap0.8")


def _link(name: str, mtu: int = 1500) -> tuple[Driver, Link]:
    dtx = Driver.open(f"sim:{name}tx?wire={name}&mtu={mtu}")
    lk = Link(dtx, dtx, format_mac(dtx.interface.mac), "02:00:c6:12:09:02",
              dtx.interface.ipv4[0], "198.18.9.2")
    return dtx, lk


def _udp(lk: Link, dport: int, payload: bytes) -> bytes:
    return udp_frame(lk.rx_mac, lk.tx_mac, lk.tx_ip, lk.rx_ip, 40000, dport, payload)


def test_batches_snaplen_jumbo_and_trunc() -> None:
    dtx, lk = _link("cj", mtu=9000)
    tx = Endpoint(dtx)
    try:
        with Capture("sim:cjrx?wire=cj&mtu=9000&mac=02:00:c6:12:09:02", snaplen=3000,
                     expression="udp and not port 9") as cap:
            assert cap.clock == "virtual" or cap.clock
            small = [_udp(lk, 5000 + i, bytes([i]) * 50) for i in range(5)]
            jumbo = _udp(lk, 5005, bytes(range(256)) * 20)  # 5162 bytes: a 3-buffer chain
            send(tx, small + [_udp(lk, 9, b"no")] + [jumbo])
            got: list[CaptureBatch] = list(cap.batches(count=6, duration_s=2))
            recs = [(b.frame(i), int(b.wire_len[i])) for b in got for i in range(len(b))]
            assert recs[:5] == [(f, len(f)) for f in small]
            assert recs[5] == (jumbo[:3000], len(jumbo))  # snaplen cuts, wire length kept
            assert all(int(b.ts_ns.min()) > 0 for b in got)
            st = cap.stats
            assert st.captured == 6 and st.truncated == 0 and st.bytes == sum(
                len(f) for f in small) + len(jumbo)
    finally:
        tx.close()
        dtx.close()


def test_oversized_frame_stored_truncated_not_dropped(tmp_path: Path) -> None:
    dtx, lk = _link("ct")
    tx = Endpoint(dtx)
    try:
        with Capture("sim:ctrx?wire=ct&mac=02:00:c6:12:09:02") as cap:
            big = _udp(lk, 5000, bytes(3000))  # longer than the port's MTU: TRUNC
            send(tx, [big, _udp(lk, 5001, b"ok")])
            w = CaptureWriter(str(tmp_path / "t.pcapng"), interface="ctrx",
                              clock=lambda: cap.clock)
            st = cap.run(w, count=2, duration_s=2)
        assert st.truncated == 1 and st.captured == 2
        recs = list(read_records(tmp_path / "t.pcapng"))
        assert recs[0].orig_len == len(big) and bytes(recs[0].data) == big[:len(recs[0].data)]
        assert 1500 <= len(recs[0].data) < len(big)
    finally:
        tx.close()
        dtx.close()


def test_pcapng_interface_block_and_statistics(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    w = CaptureWriter(str(path), interface="eth9", description="xdp:eth9",
                      expression="udp", clock=lambda: "xdp-sw")
    st = CaptureStats()
    n = 4
    b = CaptureBatch(np.arange(n, dtype=np.int64) + 10**18, np.full(n, 60, np.int64),
                     np.full(n, 60, np.int64), np.zeros((n, 60), np.uint8), np.zeros(n, bool))
    st.captured, st.drops = n, 3
    w.write(b, st)
    w.close(st)
    with PcapNgReader(path) as r:
        recs = list(r)
        ifc = r.interfaces[0]
        stats = list(r.stats)
    assert [x.ts_ns for x in recs] == list(range(10**18, 10**18 + n))
    assert ifc.tsresol == 9 and ifc.name == "eth9" and ifc.snaplen == 262144
    comments = [v for c, v in ifc.options if c == 1]
    assert comments and b"clock source xdp-sw" in comments[0]
    assert len(stats) == 1 and stats[0].ifidx == 0  # one statistics block per file
    assert stats[0].recv == n + 3 and stats[0].drop == 3 and stats[0].user_delivered == n


def test_make_filename_follows_tcpdump() -> None:
    assert make_filename("cap", 0, 0, None) == "cap"
    assert make_filename("cap", 2, 0, None) == "cap2"
    assert make_filename("cap", 0, 2, None) == "cap00"  # -W 10..99: two digits, from 0
    t = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    assert make_filename("d-%Y%m%d-%H%M%S.pcap", 0, 0, t) == "d-20260102-030405.pcap"
    assert make_filename("d-%H.pcap", 1, 0, t) == "d-03.pcap1"


def test_cli_prints_tcpdump_style_lines_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    dtx, lk = _link("cc")
    tx = Endpoint(dtx)
    try:
        import threading
        frames = [_udp(lk, 7000, b"x" * 10), _udp(lk, 7001, b"y" * 10)]
        t = threading.Timer(0.5, lambda: send(tx, frames))
        t.start()
        rc = main(["capture", "-i", "sim:ccrx?wire=cc&mac=02:00:c6:12:09:02", "-c", "2",
                   "--duration", "5", "udp"])
        t.join()
        out, err = capsys.readouterr()
        assert rc == 0
        lines = out.splitlines()
        assert len(lines) == 2
        assert lines[0].endswith(f"IP {lk.tx_ip}.40000 > {lk.rx_ip}.7000: UDP, length 10")
        assert len(lines[0].split()[0]) == len("00:00:00.000000000")
        assert "2 packets captured" in err and "2 packets received by filter" in err
        t = threading.Timer(0.5, lambda: send(tx, frames))
        t.start()
        rc = main(["capture", "-i", "sim:ccrx?wire=cc&mac=02:00:c6:12:09:02", "-c", "1",
                   "--duration", "5", "--json", "--filter", f"udp:{lk.rx_ip}:7001"])
        t.join()
        out, err = capsys.readouterr()
        obj = json.loads(out)
        assert rc == 0 and obj["packets_captured"] == 1 and obj["packets_dropped_by_kernel"] == 0
    finally:
        tx.close()
        dtx.close()


def test_filter_spec_and_expression_are_ored() -> None:
    dtx, lk = _link("co")
    tx = Endpoint(dtx)
    try:
        with Capture("sim:corx?wire=co&mac=02:00:c6:12:09:02", expression="udp port 6000",
                     filters=[FilterSpec.ip4_local("udp", lk.rx_ip, 6001)]) as cap:
            send(tx, [_udp(lk, p, b"z") for p in (6000, 6001, 6002)])
            got = [b.frame(i) for b in cap.batches(count=3, duration_s=0.5)
                   for i in range(len(b))]
        assert [int.from_bytes(f[36:38], "big") for f in got] == [6000, 6001]
    finally:
        tx.close()
        dtx.close()
