"""Issue 9 (hardening): each numbered case of the issue reproduced, plus the front
end's general promises — bad input is one line naming the value and the way out,
never a traceback, never lost data.

Commands run in-process through ``efvi.cli.main.main`` (fast); an uncaught exception
there fails the test with its traceback, which is exactly the fault class checked.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from efvi import Driver, MemoryRegion, ProtectionDomain, VirtualInterface
from efvi.adapters.options import check_url
from efvi.apps.sink import Sink
from efvi.cli.main import main
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterSpec, parse_filter
from efvi.pcap import PcapNgWriter, open_capture
from efvi.apps.pcap import convert
from efvi.wire.build import udp_frame
from efvi.wire.ethernet import VlanTag

DMAC = "02:00:00:00:00:09"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``efvi ARGV`` run in this process."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage(rc: int, err: str, *names: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    for n in names:
        assert n in err, (n, err)


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """A 2.3 MB pcapng (over the 1 MiB chunk that truncation used to hit)."""
    p = tmp_path / "in.pcapng"
    f = udp_frame(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
                  "198.18.0.1", "198.18.0.2", 1000, 2000, bytes(64))
    with PcapNgWriter(str(p)) as w:
        w.add_interface()
        for i in range(20_000):
            w.write(i * 1000, f)
    assert p.stat().st_size > 2 << 20
    return p


# ---- 1: pcap convert must not destroy its input ------------------------------------
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_1_convert_refuses_to_overwrite_its_input(capture: Path, how: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    before = capture.read_bytes()
    out = capture
    if how == "symlink":
        out = capture.with_name("link.pcapng")
        out.symlink_to(capture.name)
    elif how == "hardlink":
        out = capture.with_name("hard.pcapng")
        os.link(capture, out)
    rc, _, err = run(capsys, "pcap", "convert", str(capture), str(out))
    assert rc in (1, 2) and "is the input file" in err and "Traceback" not in err
    assert capture.read_bytes() == before


def test_1_failed_convert_leaves_no_half_file(capture: Path, tmp_path: Path) -> None:
    # a truncated input fails mid-way: the target keeps its old content, no temp is left
    bad = tmp_path / "cut.pcapng"
    bad.write_bytes(capture.read_bytes()[:1_500_000])
    target = tmp_path / "out.pcap"
    target.write_bytes(b"precious")
    with pytest.raises(Exception, match="truncated"):
        convert(str(bad), str(target), "pcap")
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pcapng", "in.pcapng", "out.pcap"]
    # success replaces it, through a symlink to the file it names, with the old mode
    target.chmod(0o640)
    link = tmp_path / "via-link.pcap"
    link.symlink_to(target.name)
    assert convert(str(capture), str(link), "pcap") == 20_000
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o640
    with open_capture(str(target)) as r:
        assert sum(1 for _ in r) == 20_000


# ---- 3: filter fields -----------------------------------------------------------------
@pytest.mark.parametrize("text,what", [
    ("udp:198.18.0.1:5000,vid=abc", "vid 'abc'"),
    ("udp:198.18.0.1:5000,vid=", "vid ''"),
    ("eth:vid=,02:00:00:00:00:01", "vid ''"),
    ("ipproto:vid=x,17", "vid 'x'"),
    ("unicast-all:vid=", "vid ''"),
    ("multicast-mis:vid=q", "vid 'q'"),
    ("udp:198.18.0.1:5000,vid=4096", "vid=4096"),
    ("udp:198.18.0.1:5000,vid=1,vid=2", "twice"),
    ("udp:198.18.0.1:70000", "port 70000"),
    ("udp:198.18.0.1:-1", "port -1"),
    ("udp:198.18.0.1:5000,198.18.0.2:99999", "port 99999"),
    ("tcp:198.18.0.1:0x10", "port '0x10'"),
    ("unicast-all:junk", "junk"),
    ("sniff:promisc,junk", "promisc or no-promisc"),
])
def test_3_bad_filter_fields(text: str, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SetupError, match="bad filter spec") as ei:
        parse_filter(text)
    assert what in str(ei.value)
    rc, _, err = run(capsys, "sink", "sim", text)
    assert_usage(rc, err, "FILTER", what)


# ---- 4: efvi send arguments -----------------------------------------------------------
@pytest.mark.parametrize("args,flag", [
    (["-s", "-1"], "-s"), (["-l", "70000"], "-l"), (["-l", "-1"], "-l"),
    (["-B", "0"], "-B"), (["-B", "-3"], "-B"), (["-n", "0"], "-n"), (["-n", "-2"], "-n"),
    (["-m", "7"], "-m"), (["--src-ip", "1.2.3"], "--src-ip"), (["--dmac", "zz"], "--dmac"),
])
def test_4_send_bad_flags(args: list[str], flag: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "send", "--dmac", DMAC, *args, "sim", "198.18.0.2", "5000")
    assert_usage(rc, err, f"argument {flag}", "expected")


@pytest.mark.parametrize("dest,port,says", [
    ("198.18.0.2", "70000", "1..65535"), ("198.18.0.2", "-1", "1..65535"),
    ("198.18.0.300", "5000", "not an IPv4 address"), ("localhost", "5000", "not resolved"),
    ("::1", "5000", "IPv4 only"),
])
def test_4_send_bad_destination(dest: str, port: str, says: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "send", "--dmac", DMAC, "sim", dest, port)
    assert_usage(rc, err, "argument", says)


def test_4_sender_library_validates_too() -> None:
    from efvi.apps.send import Sender
    for kw in ({"dport": 70000}, {"sport": 0}, {"dst_ip": "::1"}, {"dst_ip": "nohost"},
               {"src_ip": "1.2.3"}):
        args = {"url": "sim", "dst_ip": "198.18.0.2", "dport": 5000, "dmac": DMAC, **kw}
        with pytest.raises(SetupError):
            Sender(**args)  # type: ignore[arg-type]
    with Sender("sim", "198.18.0.2", 5000, dmac=DMAC) as s, pytest.raises(SetupError):
        s.run(1, sleep_us=-1)


# ---- 5: files -------------------------------------------------------------------------
def test_5_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["pcap", "info"], ["pcap", "convert"]):
        for path, says in ((tmp_path / "nope.pcap", "No such file"), (tmp_path, "directory")):
            extra = [str(tmp_path / "o.pcap")] if cmd[1] == "convert" else []
            rc, _, err = run(capsys, *cmd, str(path), *extra)
            assert rc in (1, 2) and says in err and str(path) in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pcap").exists()


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and util-linux setpriv to drop CAP_DAC_OVERRIDE")
def test_5_unreadable_input_and_unwritable_output(capture: Path, tmp_path: Path) -> None:
    capture.chmod(0)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m",
            "efvi.cli.main"]
    for argv, says in ((["pcap", "info", str(capture)], "Permission denied"),
                       (["pcap", "convert", str(tmp_path / "x"), str(ro / "o.pcap")],
                        "No such file"),
                       (["demo", "-n", "10", "-w", str(ro / "d.pcapng")], "Permission denied")):
        r = subprocess.run(drop + argv, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode in (1, 2) and says in r.stderr and "Traceback" not in r.stderr, \
            r.stderr
    capture.chmod(0o644)
    r = subprocess.run(drop + ["pcap", "convert", str(capture), str(ro / "o.pcap")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode in (1, 2) and "Permission denied" in r.stderr and "ls -l" in r.stderr
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("out,says", [
    ("/nonexistent-dir-efvi/o.pcap", "does not exist"), ("DIR", "not a directory"),
    ("/proc/efvi-test.pcap", "does not take new files"), ("/dev/full", "No space left"),
])
def test_5_unwritable_outputs(capture: Path, tmp_path: Path, out: str, says: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    if out == "DIR":
        out, says = str(tmp_path), "Is a directory"
    rc, _, err = run(capsys, "pcap", "convert", str(capture), out)
    assert rc in (1, 2) and says in err and "Traceback" not in err, err
    rc, _, err = run(capsys, "demo", "-n", "20", "-w", out)
    assert rc in (1, 2) and says in err and "Traceback" not in err, err


@pytest.mark.parametrize("snaplen", ["-1", "0", "99999999999", "x"])
def test_5_snaplen_out_of_range_leaves_no_file(capture: Path, tmp_path: Path, snaplen: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.pcapng"
    rc, _, err = run(capsys, "pcap", "convert", "--snaplen", snaplen, str(capture), str(out))
    assert_usage(rc, err, "--snaplen")
    assert not out.exists()
    with pytest.raises(SetupError, match="snaplen"):
        convert(str(capture), str(out), "pcapng", int(snaplen) if snaplen != "x" else -5)
    assert not out.exists()


# ---- 7: sink -j on sim -----------------------------------------------------------------
def test_7_join_needs_a_real_interface(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedError, match="needs a real interface"):
        Sink("sim", [parse_filter("udp:239.1.2.3:5000")], join=True)
    rc, _, err = run(capsys, "sink", "-j", "--duration", "0.1", "sim", "udp:239.1.2.3:5000")
    assert rc in (1, 2) and "-j" in err and "real interface" in err


# ---- 8, 9: sim options are checked at open, named in the message ------------------------
@pytest.mark.parametrize("query,name", [
    ("mtu=0", "mtu"), ("mtu=-5", "mtu"), ("mtu=abc", "mtu"), ("mtu=", "mtu"),
    ("mac=zz", "mac"), ("mac=01:00:5e:00:00:01", "mac"), ("ip=1.2.3", "ip"),
    ("loopback=2", "loopback"), ("clock=fast", "clock"), ("wire=@", "wire"), ("mtu", "mtu"),
    ("mtu=1500&mtu=9000", "mtu"), ("bogus=1", "bogus"),
])
def test_8_9_bad_sim_options_fail_at_open(query: str, name: str) -> None:
    with pytest.raises(SetupError) as ei:
        Driver.open(f"sim:hz?{query}")
    msg = str(ei.value)
    assert name in msg and "int()" not in msg and "fromhex" not in msg
    assert "expected" in msg or "takes" in msg or "write" in msg or "once" in msg


def test_8_smallest_mtu_never_raises_on_the_data_path() -> None:
    with Driver.open("sim:hz8?mtu=68&loopback=1") as d, ProtectionDomain(d) as pd:
        mr = MemoryRegion(pd, 8 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=8, txq=8)
        vi.filter_add(FilterSpec.unicast_all())
        vi.receive_post_batch(mr.dma_addrs()[:4], np.arange(4, dtype=np.uint32))
        f = udp_frame(d.interface.mac, d.interface.mac, "198.18.0.1", "198.18.0.2", 1, 2,
                      bytes(200))  # longer than the MTU: dropped and counted, no raise
        mr.buf[4 * PKT_BUF_SIZE:4 * PKT_BUF_SIZE + len(f)] = np.frombuffer(f, np.uint8)
        assert vi.transmit(mr.dma_addr(4 * PKT_BUF_SIZE), len(f), 4) == 0
        for _ in range(4):
            vi.poll()
        assert vi.stats()["drops"] >= 1


# ---- 10: values accepted silently ------------------------------------------------------
@pytest.mark.parametrize("args,flag", [
    (["-F", "-1"], "-F"), (["-F", "0"], "-F"), (["--duration", "0"], "--duration"),
    (["--duration", "-1"], "--duration"), (["--duration", "nan"], "--duration"),
    (["--duration", "inf"], "--duration"), (["-n", "0"], "-n"),
])
def test_10_sink_flags(args: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "sink", *args, "sim", "unicast-all")
    assert_usage(rc, err, f"argument {flag}")


def test_10_sink_library_refuses_empty_fill_and_zero_duration() -> None:
    with pytest.raises(SetupError, match="fill"):
        Sink("sim", [FilterSpec.unicast_all()], fill=-1)
    with Sink("sim", [FilterSpec.unicast_all()]) as s, pytest.raises(SetupError,
                                                                       match="duration"):
        s.run(duration_s=0)


@pytest.mark.parametrize("url,name", [
    ("packet:lo?bogus=1", "bogus"), ("packet:lo?qdisc=7", "qdisc"), ("packet:lo@1", "@1"),
    ("packet:lo?ring=1", "ring"), ("packet:lo?snaplen=abc", "snaplen"),
    ("xdp:lo?force=2", "force"), ("xdp:lo?mode=fast", "mode"), ("xdp:lo@x", "'x'"),
    ("sim:a@1", "@1"), ("sim:a?loopback=maybe", "loopback"),
])
def test_10_one_option_parser_for_every_adapter(url: str, name: str) -> None:
    with pytest.raises(SetupError) as ei:
        check_url(url)
    assert name in str(ei.value)
    with pytest.raises(SetupError) as ei2:
        Driver.open(url)
    assert str(ei2.value) == str(ei.value)


# ---- 11: dropped options, swapped fields -------------------------------------------------
def test_11_mcastloop_rx_is_refused_not_dropped() -> None:
    with pytest.raises(SetupError, match="mcastloop-rx.*loopback=1"):
        parse_filter("udp:239.1.1.1:5000,mcastloop-rx")


def test_11_vlantag_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="vid 33024 outside 0..4095.*from_tci"):
        VlanTag(0x8100, 5)
    for bad in ({"vid": 1, "pcp": 8}, {"vid": 1, "dei": 2}, {"vid": 1, "tpid": 0x0800},
                {"vid": -1}):
        with pytest.raises(ValueError):
            VlanTag(**bad)
    assert VlanTag.from_tci(0x88A8, 0xFFFF) == VlanTag(4095, 7, 1, 0x88A8)


def test_errno_of_file_errors(tmp_path: Path) -> None:
    from efvi.apps.pcap import summarize
    with pytest.raises(SetupError) as ei:
        summarize(str(tmp_path / "none"))
    assert ei.value.errno == errno.ENOENT


# ---- 18: stats() counters only; one query convention; named VI flags -------------------
def test_18_stats_are_counters_and_ring_state_is_its_own_call() -> None:
    from efvi import ViFlags
    with Driver.open("sim:hz18") as d, ProtectionDomain(d) as pd:
        mr = MemoryRegion(pd, 8 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=8, txq=8, flags=ViFlags.RX_TIMESTAMPS)
        vi.receive_post_batch(mr.dma_addrs()[:5], np.arange(5, dtype=np.uint32))
        assert not any("fill" in k or "space" in k for k in vi.stats())
        st = vi.ring_state()
        assert st["rx_fill_level"] == 5 == vi.receive_fill_level()
        assert st["tx_space"] == vi.transmit_space() == 7
        assert vi.receive_buffer_len() == st["rx_buffer_len"] == PKT_BUF_SIZE
        assert vi.receive_prefix_len() == 0
        assert vi.flags == ViFlags.RX_TIMESTAMPS
        with pytest.raises(SetupError, match="unknown bits.*ViFlags.RX_TIMESTAMPS"):
            VirtualInterface(pd, rxq=8, txq=8, flags=0x1)
