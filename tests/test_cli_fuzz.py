"""Issue 9: random and boundary values for every CLI flag and every URL option.

For every sub-command ``efvi --help`` lists (found by introspecting the parser, so
commands added later are covered) and every flag or positional that takes a value,
each value from a boundary list plus seeded random strings is put in place of a
known-good one. The promise checked: no traceback (no exception escapes ``main``),
exit status 0 (a valid value), 1 or 2, and on failure a one-line message naming the
flag or the value. Commands with a known-good command line are also *run* with the
values the parser accepted (bounded by a watchdog SIGINT, which they must treat as
a clean stop); commands without one are checked at the parser.

URL options: every option of every adapter's table gets the same values; the
checker either accepts (and a sim URL then opens, polls and transmits without an
exception) or raises SetupError naming the option.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from efvi import Driver, EfviError, MemoryRegion, PKT_BUF_SIZE, ProtectionDomain
from efvi import VirtualInterface
from efvi.adapters.options import SCHEMAS, check_url
from efvi.cli.common import UsageError
from efvi.cli.main import build_parser, main
from efvi.errors import SetupError

BOUNDARY = ["", " ", "abc", "-1", "0", "1", "-0", "1.5", "nan", "inf", "-inf", "1e309",
            "99999999999999999999", "-99999999999", "0x10", "65536", "4096", "198.18.0.300",
            "::1", "02:00:00:00:00:01", "/nonexistent-efvi/x", "-", "sim:?mtu=0", "\x7f",
            "a" * 300]
_rng = random.Random(9)
RANDOM = ["".join(_rng.choice("0123456789-.:,=?@abcxyz/ ") for _ in range(_rng.randint(1, 12)))
          for _ in range(6)] + [str(_rng.randint(-2**40, 2**40)) for _ in range(4)]
VALUES = BOUNDARY + RANDOM


try:  # imported once here: a watchdog SIGINT in the middle of its first import (as
    import matplotlib.pyplot  # noqa: F401  # --plot does) would leave it half-initialised
except ImportError:
    pass


def _commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of every leaf command (``pcap info`` as ``pcap info``)."""
    def walk(prefix: str,
             p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix.strip(), p
            return
        for a in subs:
            for name, sp in a.choices.items():
                yield from walk(f"{prefix} {name}", sp)
    yield from walk("", build_parser())


def _takes_value(a: argparse.Action) -> bool:
    return not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction,
                              argparse._StoreFalseAction, argparse._StoreConstAction,
                              argparse._CountAction, argparse._VersionAction,
                              argparse._SubParsersAction))


def _name(a: argparse.Action) -> str:
    return a.option_strings[0] if a.option_strings else (a.metavar or a.dest)  # type: ignore[return-value]


def _flag_names(a: argparse.Action) -> list[str]:
    return list(a.option_strings) or [str(a.metavar or a.dest), a.dest]


@pytest.fixture(scope="module")
def tiny_pcap(tmp_path_factory: pytest.TempPathFactory) -> str:
    from efvi.pcap import PcapWriter
    from efvi.wire.build import udp_frame
    p = tmp_path_factory.mktemp("fuzz") / "t.pcap"
    f = udp_frame(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
                  "198.18.0.1", "198.18.0.2", 1000, 2000, b"x" * 20)
    with PcapWriter(str(p)) as w:
        for i in range(5):
            w.write(i * 1000, f)
    return str(p)


def _good(cmd: str, pcap: str, out: str) -> list[list[str]] | None:
    """Known-good command lines, split into [positionals..., --flag value...] pieces
    that finish within a fraction of a second; None: check at the parser only."""
    table: dict[str, list[list[str]]] = {
        "demo": [["-n", "50"], ["-b", "16"], ["-g", "239.1.1.1"], ["-p", "5000"],
                 ["-w", out]],
        "sink": [["--duration", "0.05"], ["-n", "1"], ["-F", "8"], ["sim:fz"],
                 ["unicast-all"]],
        "send": [["-n", "3"], ["-m", "28"], ["-s", "0"], ["-l", "1234"], ["-B", "4"],
                 ["--dmac", "02:00:00:00:00:09"], ["--src-ip", "198.18.0.1"], ["sim:fz"],
                 ["198.18.0.2"], ["5000"]],
        "pcap info": [[pcap]],
        "pcap convert": [["--snaplen", "100"], [pcap], [out]],
        "info": [["lo"]],
        "replay": [["-i", "sim:fzr"], ["-x", "1000"], ["-l", "1"], ["--loopdelay-ms", "0"],
                   ["-L", "5"], ["--duration", "0.5"], ["--enet-dmac", "02:00:00:00:00:09"],
                   ["--enet-smac", "02:00:00:00:00:08"], [pcap]],
        "station": [["--ip", "198.18.0.1"], ["--ipv6", "fd00::1"], ["--mac", "02:00:00:00:00:07"],
                    ["--udp-echo", "7"], ["--rate", "100"], ["--duration", "0.05"], ["sim:fzs"]],
        "latency": [["-n", "20"], ["-s", "0"], ["--warm", "0"], ["-p", "8999"], ["ping"],
                    ["sim:fzl"]],
        "forward": [["--filter", "unicast-all"], ["-c", "10"], ["--duration", "0.05"],
                    ["--idle", "0.05"], ["--rxq", "64"], ["--txq", "64"], ["sim:fza"],
                    ["sim:fzb"]],
    }
    return table.get(cmd)


def _positional_values(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not a.option_strings and _takes_value(a)]


def _argv(cmd: str, good: list[list[str]], p: argparse.ArgumentParser,
          target: argparse.Action, value: str) -> list[str]:
    """The good command line with ``target``'s value replaced by ``value``."""
    opts: list[str] = []
    pos: list[str] = []
    positionals = _positional_values(p)
    pi = 0
    for piece in good:
        if piece[0].startswith("-") and len(piece) == 2:
            if piece[0] in target.option_strings:
                continue
            opts += piece
        else:
            a = positionals[pi]
            pi += 1
            pos.append(value if a is target else piece[0])
    if target.option_strings:
        opts += [target.option_strings[0], value]
    return cmd.split() + opts + ["--"] + pos if pos and any(v.startswith("-") for v in pos) \
        else cmd.split() + opts + pos


def _run(argv: list[str], capsys: pytest.CaptureFixture[bytes]) -> tuple[int, str]:
    fired = threading.Event()

    def watchdog() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Timer(0.4, watchdog)
    t.start()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))  # '-' reads an empty stdin
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        rc = 130
    finally:
        t.cancel()
        sys.stdin = saved
    err = capsys.readouterr().err.decode("utf-8", "replace")
    if fired.is_set() and rc in (0, 130):
        rc = 0  # a valid value that runs long: stopped by the watchdog, cleanly
    return rc, err


def _cases() -> list[tuple[str, str]]:
    out = []
    for cmd, p in _commands():
        for a in p._actions:
            if _takes_value(a):
                out.append((cmd, _name(a)))
    return out


@pytest.mark.parametrize("cmd,flag", _cases())
def test_every_flag_takes_any_value_without_a_traceback(
        cmd: str, flag: str, tiny_pcap: str, tmp_path: Path,
        capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    capsys = capsysbinary
    monkeypatch.chdir(tmp_path)  # values used as output names land here, not in the tree
    p = dict(_commands())[cmd]
    target = next(a for a in p._actions if _takes_value(a) and _name(a) == flag)
    good = _good(cmd, tiny_pcap, str(tmp_path / "out.pcapng"))
    for value in VALUES:
        if good is None:
            # parser only: a bad value must be a usage error naming the flag
            argv = cmd.split() + ([flag, value] if target.option_strings else [value])
            try:
                p.parse_args(argv[len(cmd.split()):])
                continue
            except SystemExit as exc:  # --help and the like
                assert exc.code in (0, None), exc
                continue
            except UsageError as exc:
                err = str(exc)
            assert "Traceback" not in err
            if "argument" in err and any(n in err for n in _flag_names(target)):
                continue
            # another argument is missing or was displaced: argparse judged the line
            assert "required" in err or err.startswith("argument "), err
            continue
        argv = _argv(cmd, good, p, target, value)
        rc, err = _run(argv, capsys)
        assert rc in (0, 1, 2), (argv, rc, err)
        assert "Traceback" not in err, (argv, err)
        if rc:
            lines = [ln for ln in err.strip().splitlines()
                     if ln.strip() and not ln.startswith("#") and not ln.startswith(" ")]
            assert lines and lines[-1].startswith(f"efvi {cmd.split()[0]}"), (argv, err)
            lines = lines[-1:]  # the error: the last line (progress lines may precede it)
            names = _flag_names(target)
            if value == "-":
                names += ["<stdin>", "<stdout>"]
            assert any(n in lines[0] for n in names) or repr(value) in lines[0] or \
                (value.strip() and value in lines[0]), \
                (argv, err)


def _url_cases() -> list[tuple[str, str]]:
    return [(scheme, o.name) for scheme, opts in SCHEMAS.items() for o in opts]


@pytest.mark.parametrize("scheme,option", _url_cases())
def test_every_url_option_takes_any_value(scheme: str, option: str) -> None:
    base = {"sim": "sim:fzu", "xdp": "xdp:fz0", "packet": "packet:fz0"}[scheme]
    for value in VALUES + ["auto", "hw", "sw", "drv", "skb", "real", "@w", "1", "9000"]:
        url = f"{base}?{option}={value}"
        try:
            check_url(url)
        except SetupError as exc:
            assert option in str(exc), (url, str(exc))
            with pytest.raises(SetupError):
                Driver.open(url)
            continue
        if scheme != "sim":
            continue
        try:
            d = Driver.open(url)
        except EfviError as exc:  # a valid form that cannot be set up (e.g. a wire)
            assert str(exc), url
            continue
        with d, ProtectionDomain(d) as pd:
            mr = MemoryRegion(pd, 4 * PKT_BUF_SIZE)
            vi = VirtualInterface(pd, rxq=4, txq=4)
            vi.receive_post_batch(mr.dma_addrs()[:2], __import__("numpy").arange(2, dtype="u4"))
            assert vi.transmit(mr.dma_addr(2 * PKT_BUF_SIZE), 1500, 1) in (0, -11, -22)
            vi.poll()
            vi.poll()


@pytest.mark.parametrize("url", ["sim:@", "sim:x@-1", "xdp:e@99999", "packet:e@0x1", ":", "?",
                                 "sim:?&&", "sim:?=1", "sim:?%zz=1", "xdp:" + "e" * 20,
                                 "packet:a/b", "SIM:x", "sim:x?mtu=1500&&loopback=1"])
def test_url_shapes(url: str) -> None:
    try:
        check_url(url)
    except SetupError as exc:
        assert str(exc)
