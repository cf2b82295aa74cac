"""``efvi capture`` on a veth pair: live expressions, files read by tcpdump/tshark,
``-w -`` into a pipe, snaplen, rotation, ``-Q``, SIGKILL and a full disk.

Frames are sent raw from namespace a (an AF_PACKET socket, so any bytes go on the
wire: the corpus of :mod:`bpf_corpus`) and captured on namespace b's end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from efvi.apps.capture import Capture, CaptureBatch
from efvi.bpf import libpcap
from efvi.pcap import read_records
from efvi.testing import netns

from bpf_corpus import EXPRESSIONS, build_frames, tcpdump_matches, write_pcap
from xdp_helpers import why_no_xdp

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("tcpdump") is None or not libpcap.available(),
                                 reason="needs tcpdump and libpcap0.8")]

SRC = str(Path(__file__).resolve().parent.parent / "src")
FRAMES = [f for f in build_frames() if len(f) >= 14]
UNTAGGED = [f for f in FRAMES if f[12:14] not in (b"\x81\x00", b"\x88\xa8")]


def _need(adapter: str) -> None:
    reason = why_no_xdp() if adapter == "xdp" else netns.why_unavailable()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def raw_sender(side: netns.Side) -> Iterator[socket.socket]:
    with netns.enter(side.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((side.ifname, 0))
        yield s
    finally:
        s.close()


def efvi(*args: str, side: netns.Side, **kw: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen(["ip", "netns", "exec", side.netns, sys.executable, "-m",
                             "efvi.cli.main", "capture", *args], env=env,  # type: ignore[call-overload]
                            **kw)


def wait_listening(p: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Wait for the 'listening on' line on stderr (the VI and its filter are in place)."""
    assert p.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if b"listening on" in line:
            return
        if not line and p.poll() is not None:
            raise AssertionError(f"capture exited {p.returncode} before listening")
    raise AssertionError("capture did not start")


def records(path: Path | str) -> list[tuple[bytes, int]]:
    return [(bytes(rec.data), rec.orig_len) for rec in read_records(path)]


# ---- the expression corpus, live -----------------------------------------------------------
@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_live_expressions_agree_with_tcpdump(adapter: str, veth: netns.VethPair,
                                             tmp_path: Path) -> None:
    """Each expression filters a live capture on b: the corpus frames it receives are
    exactly those ``tcpdump -r`` selects. packet gets untagged frames only (its socket
    filter sees frames with the outer tag removed, like a live tcpdump)."""
    _need(adapter)
    frames = FRAMES if adapter == "xdp" else UNTAGGED
    path = tmp_path / "sent.pcap"
    write_pcap(path, frames)
    corpus = set(frames)
    exprs = EXPRESSIONS if adapter == "xdp" else EXPRESSIONS[::2]
    with raw_sender(veth.a) as tx:
        for expr in exprs:
            want = sorted(frames[i] for i in tcpdump_matches(path, expr))
            with netns.enter(veth.b.netns):
                cap = Capture(f"{adapter}:{veth.b.ifname}", expression=expr, nbuf=512,
                              rxq=256)
            try:
                for f in frames:
                    tx.send(f)
                got: list[bytes] = []
                deadline = time.monotonic() + 3
                quiet = time.monotonic() + 0.15
                while time.monotonic() < deadline:
                    for b in cap.batches(duration_s=0.03):
                        got += [b.frame(i) for i in range(len(b))]
                    if len([g for g in got if g in corpus]) >= len(want) \
                            and time.monotonic() > quiet:
                        break
            finally:
                cap.close()
            assert sorted(g for g in got if g in corpus) == want, expr


# ---- files, pipes, snaplen ----------------------------------------------------------------
def udp_frames(pair: netns.VethPair, n: int, size: int = 100) -> list[bytes]:
    from efvi.wire.build import udp_frame
    return [udp_frame(pair.b.mac, pair.a.mac, pair.a.ip, pair.b.ip, 40000 + i % 7, 5000,
                      i.to_bytes(4, "big") + bytes(size - 46)) for i in range(n)]


@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_same_frames_as_tcpdump_w(adapter: str, veth: netns.VethPair, tmp_path: Path) -> None:
    """efvi capture -w and tcpdump -w of the same traffic: same bytes, lengths,
    protocols and order in tshark; snaplen keeps the wire length."""
    _need(adapter)
    ours, ref = tmp_path / "efvi.pcapng", tmp_path / "tcpdump.pcap"
    n = 300
    sent = udp_frames(veth, n, 300)
    # tcpdump on the sending side (an xdp capture steals the frames on b before any tap)
    td = veth.a.popen("tcpdump", "-i", veth.a.ifname, "-Q", "out", "-U", "-w", str(ref),
                      "-c", str(n), "udp", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    p = efvi("-i", f"{adapter}:{veth.b.ifname}", "-w", str(ours), "-c", str(n), "-s", "200",
             "--duration", "20", "-q", "udp port 5000", side=veth.b, stderr=subprocess.PIPE)
    try:
        wait_listening(p)
        assert td.stderr is not None
        deadline = time.monotonic() + 10
        while b"listening" not in td.stderr.readline() and time.monotonic() < deadline:
            pass
        with raw_sender(veth.a) as tx:
            for f in sent:
                tx.send(f)
        assert p.wait(30) == 0, p.stderr.read() if p.stderr else b""
        assert td.wait(30) == 0
    finally:
        for proc in (p, td):
            if proc.poll() is None:
                proc.kill()
    mine = records(ours)
    assert [(d, ln) for d, ln in mine] == [(f[:200], len(f)) for f in sent]
    fields = "-Tfields -e frame.len -e ip.src -e ip.dst -e udp.srcport -e udp.dstport " \
             "-e frame.protocols".split()
    a = subprocess.run(["tshark", "-r", str(ours), *fields], capture_output=True, text=True)
    b = subprocess.run(["tshark", "-r", str(ref), *fields], capture_output=True, text=True)
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout.splitlines()) == n
    assert [d for d, _ in records(ref)] == sent


def test_write_to_stdout_pipes_into_tcpdump(veth: netns.VethPair) -> None:
    """efvi capture -w - | tcpdump -r - : the frames arrive live, then a clean exit."""
    _need("xdp")
    p = efvi("-i", f"xdp:{veth.b.ifname}", "-w", "-", "-c", "50", "--duration", "20",
             "udp", side=veth.b, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.Popen(["tcpdump", "-r", "-", "-n", "-tt"], stdin=p.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.close()
    try:
        wait_listening(p)
        with raw_sender(veth.a) as tx:
            for f in udp_frames(veth, 50):
                tx.send(f)
        out, _ = reader.communicate(timeout=30)
        assert p.wait(30) == 0
    finally:
        for proc in (p, reader):
            if proc.poll() is None:
                proc.kill()
    lines = out.decode().splitlines()
    assert len(lines) == 50 and all("198.18.0.1.400" in ln and "UDP" in ln for ln in lines)


def test_rotation_by_size_uses_tcpdumps_names(veth: netns.VethPair, tmp_path: Path) -> None:
    """-C 1 -W 3: a ring of file0..file2; every file is readable and has an ISB."""
    _need("packet")
    base = tmp_path / "ring"
    n = 3500
    p = efvi("-i", f"packet:{veth.b.ifname}", "-w", str(base), "-C", "1", "-W", "3",
             "-c", str(n), "--duration", "30", "-q", "udp", side=veth.b, stderr=subprocess.PIPE)
    try:
        wait_listening(p)
        with raw_sender(veth.a) as tx:
            for f in udp_frames(veth, n, 1400):
                tx.send(f)
                time.sleep(0.0002) if n % 64 == 0 else None
        assert p.wait(40) == 0
    finally:
        if p.poll() is None:
            p.kill()
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == ["ring0", "ring1", "ring2"]
    total = 0
    for name in names:
        recs = records(tmp_path / name)
        assert recs and os.path.getsize(tmp_path / name) < 1_000_000 + 1500
        total += len(recs)
        info = subprocess.run(["tshark", "-r", str(tmp_path / name), "-q", "-z", "io,stat,0"],
                              capture_output=True, text=True)
        assert info.returncode == 0
    assert total < n  # the ring kept the last three files only


def test_rotation_by_time_strftime_names(veth: netns.VethPair, tmp_path: Path) -> None:
    _need("packet")
    p = efvi("-i", f"packet:{veth.b.ifname}", "-w", str(tmp_path / "t-%H%M%S.pcap"),
             "--format", "pcap", "-G", "1", "--duration", "3.5", "-q", "udp",
             side=veth.b, stderr=subprocess.PIPE)
    try:
        wait_listening(p)
        with raw_sender(veth.a) as tx:
            end = time.monotonic() + 3.2
            while time.monotonic() < end:
                for f in udp_frames(veth, 5):
                    tx.send(f)
                time.sleep(0.05)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
    names = sorted(x.name for x in tmp_path.iterdir())
    assert len(names) >= 3 and all(n.startswith("t-") and len(n) == len("t-000000.pcap")
                                   for n in names)
    assert all(records(tmp_path / n) for n in names)


def test_direction_out_and_inout_on_packet(veth: netns.VethPair) -> None:
    """-Q out sees what the host sends (ping from b), -Q in what it receives, inout both."""
    _need("packet")
    got = {}
    for d in ("in", "out", "inout"):
        with netns.enter(veth.b.netns):
            cap = Capture(f"packet:{veth.b.ifname}", expression="icmp", direction=d)
        try:
            veth.b.run("ping", "-c", "2", "-i", "0.2", "-W", "1", veth.a.ip)
            seen = []
            for b in cap.batches(duration_s=0.3):
                seen += [(b.frame(i)[34], bool(b.outgoing[i])) for i in range(len(b))]
            got[d] = seen
        finally:
            cap.close()
    assert got["out"] == [(8, True), (8, True)]  # echo requests, marked outgoing
    assert got["in"] == [(0, False), (0, False)]  # echo replies
    assert sorted(got["inout"]) == [(0, False), (0, False), (8, True), (8, True)]
    with pytest.raises(Exception, match="received frames only"):
        Capture(f"xdp:{veth.b.ifname}", direction="out")


def test_sigkill_leaves_every_written_record_readable(veth: netns.VethPair,
                                                      tmp_path: Path) -> None:
    _need("packet")
    out = tmp_path / "killed.pcapng"
    p = efvi("-i", f"packet:{veth.b.ifname}", "-w", str(out), "-q", "udp", side=veth.b,
             stderr=subprocess.PIPE)
    try:
        wait_listening(p)
        with raw_sender(veth.a) as tx:
            for f in udp_frames(veth, 500):
                tx.send(f)
        time.sleep(0.5)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    recs = records(out)
    assert len(recs) == 500
    td = subprocess.run(["tcpdump", "-r", str(out), "-n"], capture_output=True, text=True)
    assert td.returncode == 0 and len(td.stdout.splitlines()) == 500


def test_full_disk_keeps_whole_records(veth: netns.VethPair, tmp_path: Path) -> None:
    """A 256 KiB tmpfs fills up: exit 1 with one line, the file reads back whole."""
    _need("packet")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "full.pcapng"
        p = efvi("-i", f"packet:{veth.b.ifname}", "-w", str(out), "-q", "--duration", "20",
                 "udp", side=veth.b, stderr=subprocess.PIPE)
        try:
            wait_listening(p)
            with raw_sender(veth.a) as tx:
                for f in udp_frames(veth, 600, 1000):
                    tx.send(f)
                    if p.poll() is not None:
                        break
            rc = p.wait(30)
            err = p.stderr.read().decode() if p.stderr else ""
        finally:
            if p.poll() is None:
                p.kill()
        assert rc == 1 and "disk full" in err and "Traceback" not in err
        recs = records(out)
        assert 100 < len(recs) < 600
        assert subprocess.run(["tcpdump", "-r", str(out)], capture_output=True).returncode == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_usage_and_runtime_errors(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "efvi.cli.main", "capture", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    r = run("-i", "sim:x?wire=e1", "tcp", "porty", "80")
    assert r.returncode == 2 and "syntax error" in r.stderr and "Traceback" not in r.stderr
    r = run("-i", "packet:no-such-if0", "-c", "1")
    assert r.returncode == 1 and "no-such-if0" in r.stderr and "Traceback" not in r.stderr
    notcap = tmp_path / "notes.txt"
    notcap.write_text("precious\n")
    r = run("-i", "sim:x?wire=e1", "-w", str(notcap), "-c", "1")
    assert r.returncode == 1 and "not a capture file" in r.stderr
    assert notcap.read_text() == "precious\n"
    r = run("-i", "sim:x?wire=e1", "-w", str(tmp_path / "nodir" / "x.pcapng"), "-c", "1",
            "--duration", "0.2")
    assert r.returncode == 1 and "cannot write" in r.stderr
    r = run("-i", "sim:x?wire=e1", "-W", "3", "-w", str(tmp_path / "a"))
    assert r.returncode == 2


def test_multiqueue_every_queue_workers_and_merge(tmp_path: Path) -> None:
    """A 4-queue veth: one capture VI gets every queue; --workers 4 spreads the queues
    over a VI set (one file each); --merge writes one file in timestamp order."""
    _need("xdp")
    from efvi.wire.build import udp_frame
    with netns.veth_pair(queues=4, subnet=57) as pair:
        a, b = pair.a, pair.b
        sent = [udp_frame(b.mac, a.mac, a.ip, b.ip, 20000 + flow, 5000, bytes([k]) * 30)
                for flow in range(48) for k in range(4)]

        def capture(**kw: object) -> list[CaptureBatch]:
            with netns.enter(b.netns):
                cap = Capture(f"xdp:{b.ifname}", expression="udp dst port 5000", nbuf=4096,
                              rxq=1024, **kw)  # type: ignore[arg-type]
            try:
                assert sum(m.vi.stats()["queues"] for m in cap.members) == 4
                with raw_sender(a) as tx:
                    for f in sent:
                        tx.send(f)
                return list(cap.batches(count=len(sent), duration_s=5))
            finally:
                cap.close()

        one = capture()
        assert sorted(x.frame(i) for x in one for i in range(len(x))) == sorted(sent)
        per = capture(workers=4)
        by_worker = {x.worker for x in per if len(x)}
        assert sorted(x.frame(i) for x in per for i in range(len(x))) == sorted(sent)
        assert len(by_worker) >= 2, "the flows did not spread over the queues"
        merged = capture(workers=4, merge=True)
        assert sum(len(x) for x in merged) == len(sent)
        assert all((np.diff(x.ts_ns) >= 0).all() for x in merged)
        # the CLI: one file per worker
        base = tmp_path / "w"
        p = efvi("-i", f"xdp:{b.ifname}", "-w", str(base), "--workers", "4", "-c",
                 str(len(sent)), "--duration", "20", "-q", "udp dst port 5000", side=b,
                 stderr=subprocess.PIPE)
        try:
            wait_listening(p)
            with raw_sender(a) as tx:
                for f in sent:
                    tx.send(f)
            assert p.wait(30) == 0
        finally:
            if p.poll() is None:
                p.kill()
        counts = [len(records(f"{base}.{i}")) for i in range(4)]
        assert sum(counts) == len(sent) and sum(1 for c in counts if c) >= 2


def test_sigterm_closes_the_file_with_its_statistics(veth: netns.VethPair,
                                                     tmp_path: Path) -> None:
    _need("packet")
    out = tmp_path / "term.pcapng"
    p = efvi("-i", f"packet:{veth.b.ifname}", "-w", str(out), "udp", side=veth.b,
             stderr=subprocess.PIPE)
    try:
        wait_listening(p)
        with raw_sender(veth.a) as tx:
            for f in udp_frames(veth, 100):
                tx.send(f)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        err = p.stderr.read().decode() if p.stderr else ""
    finally:
        if p.poll() is None:
            p.kill()
    assert "100 packets captured" in err and "100 packets received by filter" in err
    from efvi.pcap.pcapng import PcapNgReader
    with PcapNgReader(out) as r:
        assert len(list(r)) == 100
        assert [(s.recv, s.drop) for s in r.stats] == [(100, 0)]
