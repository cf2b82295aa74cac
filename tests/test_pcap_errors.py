"""Bad input: FormatError names the offset, after every complete record is delivered.
Interrupted writers leave readable files."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efvi.errors import FormatError
from efvi.pcap import PcapNgWriter, PcapWriter, open_capture
from efvi.pcap.constants import BT_EPB

T0 = 1_700_000_000_000_000_000
SRC = str(Path(__file__).resolve().parents[1] / "src")


def good_file(fmt: str, n: int = 5, size: int = 40) -> bytes:
    buf = io.BytesIO()
    if fmt == "pcap":
        w: PcapWriter | PcapNgWriter = PcapWriter(buf, snaplen=1000)
    else:
        w = PcapNgWriter(buf)
        w.add_interface(snaplen=1000)
    for i in range(n):
        w.write(T0 + i, bytes([i]) * size)
    w.close()
    return buf.getvalue()


def header_len(fmt: str, data: bytes) -> int:
    """Offset of the first record/packet block."""
    if fmt == "pcap":
        return 24
    shb = struct.unpack_from("<I", data, 4)[0]
    return shb + struct.unpack_from("<I", data, shb + 4)[0]


def rec_len(fmt: str, size: int = 40) -> int:
    return 16 + size if fmt == "pcap" else 32 + size + (-size % 4)


def outcome(data: bytes, batch: bool) -> tuple[list[bytes], FormatError | None]:
    """(frames delivered, the error) reading ``data`` one way or the other."""
    got: list[bytes] = []
    try:
        with open_capture(io.BytesIO(data)) as r:
            if batch:
                for b in r.batches(3):
                    got.extend(bytes(b.frame(i)) for i in range(len(b)))
            else:
                got.extend(rec.data for rec in r)
    except FormatError as exc:
        return got, exc
    return got, None


FMTS = ["pcap", "pcapng"]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("fmt", FMTS)
def test_truncation_anywhere_delivers_whole_records_then_names_the_offset(
        fmt: str, batch: bool) -> None:
    data = good_file(fmt)
    h, rl = header_len(fmt, data), rec_len(fmt)
    shb = struct.unpack_from("<I", data, 4)[0] if fmt == "pcapng" else h
    for cut in range(len(data)):
        got, err = outcome(data[:cut], batch)
        complete = max(0, (cut - h) // rl) if cut >= h else 0
        assert got == [bytes([i]) * 40 for i in range(complete)], cut
        if (cut >= h and (cut - h) % rl == 0) or cut == shb:
            assert err is None, (cut, err)  # a file cut at a block boundary is valid
            continue
        assert err is not None, cut
        if cut < shb:
            want = 0
        elif cut < h:
            want = shb  # inside the IDB
        else:
            want = h + complete * rl
        assert err.offset == want, (cut, err)


@pytest.mark.parametrize("fmt", FMTS)
def test_wrong_magic_and_empty(fmt: str) -> None:
    for blob, what in ((b"", "empty"), (b"GIF89a" + bytes(40), "not a pcap"),
                       (struct.pack("<I", 0xA1B2CD34) + bytes(20), "Kuznetzov")):
        with pytest.raises(FormatError) as ei:
            open_capture(io.BytesIO(blob))
        assert ei.value.offset == 0 and what in str(ei.value)


@pytest.mark.parametrize("batch", [False, True])
def test_pcap_record_longer_than_snaplen_or_absurd(batch: bool) -> None:
    data = bytearray(good_file("pcap"))
    third = 24 + 2 * 56
    for bad, what in ((1001, "snapshot length 1000"), (300_000, "absurd")):
        d = bytearray(data)
        struct.pack_into("=I", d, third + 8, bad)
        got, err = outcome(bytes(d), batch)
        assert len(got) == 2 and err is not None
        assert err.offset == third and what in err.message
    d = bytearray(data)
    struct.pack_into("=I", d, 20, 0)  # snaplen 0 in the header: only the absurd check
    struct.pack_into("=I", d, 16, 0)
    struct.pack_into("=I", d, third + 8, 300_000)
    got, err = outcome(bytes(d), batch)
    assert len(got) == 2 and err is not None and "absurd" in err.message


@pytest.mark.parametrize("batch", [False, True])
def test_pcapng_block_faults(batch: bool) -> None:
    data = good_file("pcapng")
    h, rl = header_len("pcapng", data), rec_len("pcapng")
    third = h + 2 * rl
    cases: list[tuple[int, int, str]] = [
        (third + rl - 4, 999, "does not match its trailer"),
        (third + 4, 10, "bad block length"),
        (third + 4, 1 << 30, "bad block length"),
        (third + 8, 3, "interface 3"),
        (third + 20, 1001, "snapshot length"),
        (third + 20, 300_000, "absurd"),
        (third + 20, 60, "exceeds its block"),
    ]
    for where, value, what in cases:
        d = bytearray(data)
        struct.pack_into("=I", d, where, value)
        got, err = outcome(bytes(d), batch)
        assert len(got) == 2, (what, got)
        assert err is not None and what in err.message, (what, err)
        assert err.offset == third, (what, err)


@pytest.mark.parametrize("batch", [False, True])
def test_mid_file_garbage(batch: bool) -> None:
    for fmt in FMTS:
        data = good_file(fmt)
        h, rl = header_len(fmt, data), rec_len(fmt)
        d = data[:h + 2 * rl] + b"\xff" * 64 + data[h + 2 * rl:]
        got, err = outcome(d, batch)
        assert len(got) == 2 and err is not None and err.offset == h + 2 * rl, (fmt, err)


def test_unknown_block_is_skipped_not_an_error() -> None:
    data = good_file("pcapng")
    h = header_len("pcapng", data)
    unknown = struct.pack("=II", 0x40000BAD, 20) + b"12345678" + struct.pack("=I", 20)
    got, err = outcome(data[:h] + unknown + data[h:], False)
    assert err is None and len(got) == 5


def test_error_carries_the_path(tmp_path: Path) -> None:
    p = tmp_path / "bad.pcap"
    p.write_bytes(good_file("pcap")[:-3])
    with pytest.raises(FormatError) as ei:
        with open_capture(p) as r:
            list(r)
    assert ei.value.path == str(p) and str(p) in str(ei.value)
    assert "truncated record" in str(ei.value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FMTS), st.data())
def test_fuzz_readers_raise_only_format_error(fmt: str, data: st.DataObject) -> None:
    """Corrupt a valid file anywhere: records or FormatError, never another exception,
    and the batch path delivers exactly what the per-record path delivers."""
    blob = bytearray(good_file(fmt, n=6, size=data.draw(st.integers(0, 9))))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    got1, err1 = outcome(bytes(blob), False)
    got2, err2 = outcome(bytes(blob), True)
    assert got1 == got2
    assert (err1 is None) == (err2 is None)
    if err1 is not None and err2 is not None:
        assert err1.offset == err2.offset


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from efvi.pcap import PcapWriter, PcapNgWriter
    fmt, mode, path = sys.argv[1:4]
    if fmt == "pcap":
        w = PcapWriter(path, buffer_size=4096)
    else:
        w = PcapNgWriter(path, buffer_size=4096)
        w.add_interface()
    with w:
        for i in range(10_000_000):
            w.write(1_700_000_000_000_000_000 + i, i.to_bytes(4, "big") * 25)
            if i == 2000:
                w.flush()
                print("flushed", flush=True)
                if mode == "exception":
                    raise RuntimeError("boom")
                if mode == "sigint":
                    os.kill(os.getpid(), signal.SIGINT)
    """
)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("mode", ["kill9", "sigint", "exception"])
def test_interrupted_writer_leaves_a_readable_file(tmp_path: Path, fmt: str,
                                                   mode: str) -> None:
    path = tmp_path / f"cut.{fmt}"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, fmt, mode, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"flushed\n"
    if mode == "kill9":
        # Keep writing for a while, then kill without any chance to clean up.
        deadline = time.monotonic() + 30
        while path.stat().st_size < 2_000_000 and proc.poll() is None:
            assert time.monotonic() < deadline, "the writer stopped growing the file"
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    data = path.read_bytes()
    got, err = outcome(data, False)
    if mode == "kill9":
        # SIGKILL can stop the kernel inside one write() between pages: at most the
        # last record is torn, and every record before it is intact
        assert err is None or ("truncated" in err.message and err.offset > len(data) - 200), err
    else:
        assert err is None, err  # a clean exit flushed whole records only
    assert len(got) >= 2001
    assert got == [i.to_bytes(4, "big") * 25 for i in range(len(got))]
    if mode != "kill9":
        assert proc.returncode != 0 and len(got) == 2001


def test_batch_write_rejects_misuse() -> None:
    w = PcapWriter(io.BytesIO())
    with pytest.raises(ValueError):
        w.write_batch(np.zeros((2, 4), np.int16), [1, 2], [0, 0])
    with pytest.raises(ValueError):
        w.write_batch(np.zeros((2, 4), np.uint8), [1, 2, 3], [0, 0])
    with pytest.raises(ValueError):
        w.write_batch(np.zeros((1, 4), np.uint8), [1], [-5])
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO(), snaplen=0)


def test_pcapng_batch_writes_enhanced_packet_blocks() -> None:
    """The batch writer emits SHB, IDB, then one EPB (type 6) per record, lengths right."""
    buf = io.BytesIO()
    w = PcapNgWriter(buf)
    w.add_interface()
    w.write_batch(np.arange(2 * 60, dtype=np.uint8).reshape(2, 60), [60, 33], [5, 7])
    w.flush()
    blob = buf.getvalue()
    types, pos = [], 0
    while pos < len(blob):
        bt, bl = struct.unpack_from("<II", blob, pos)
        assert bl % 4 == 0 and struct.unpack_from("<I", blob, pos + bl - 4)[0] == bl
        types.append((bt, struct.unpack_from("<I", blob, pos + 20)[0] if bt == BT_EPB else None))
        pos += bl
    assert types == [(0x0A0D0D0A, None), (1, None), (6, 60), (6, 33)]
