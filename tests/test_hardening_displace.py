"""Issue 9 case 2: ``xdp:IF?force=1`` over a foreign XDP program puts it back.

A foreign XDP_PASS program (loaded here through efvi.bpf, attached over netlink, its
fd closed so that only the interface holds it) is displaced by efvi with ``force=1``;
on close, on SIGTERM and on SIGINT the same program id is attached again in its mode,
efvi warned on stderr when it took over, and ``efvi info`` named the displaced program
while efvi ran.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from efvi import Driver
from efvi.adapters.xdp import netlink as xnl
from efvi.apps import info
from efvi.bpf import ebpf as asm
from efvi.bpf import syscall as bpf
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp

pytestmark = pytest.mark.integration

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
_MODE_WORD = {"skb": "xdpgeneric", "drv": "xdpdrv"}
_IP_MODE = {1: "drv", 2: "skb"}  # ip -j link's xdp "mode" numbers (XDP_ATTACHED_*)


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=93) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _foreign(side: netns.Side, mode: str) -> int:
    """Attach a foreign XDP_PASS program in ``mode``; only the interface holds it."""
    prog = asm.Asm()
    prog.ret(asm.XDP_PASS)
    fd = bpf.prog_load(prog.assemble(), name="foreign_pass")
    try:
        with netns.enter(side.netns):
            xnl.attach(socket.if_nametoindex(side.ifname), fd, mode)
        return int(bpf.prog_info(fd)["id"])
    finally:
        os.close(fd)


def _attached(side: netns.Side) -> tuple[str, int, str]:
    """(mode, prog id, prog name) on the side's interface, read with ``ip -j link``."""
    out = json.loads(side.run("ip", "-j", "link", "show", "dev", side.ifname).stdout)[0]
    xdp = out.get("xdp")
    if not xdp or "prog" not in xdp:
        return ("", 0, "")
    return (_IP_MODE.get(xdp["mode"], str(xdp["mode"])), int(xdp["prog"]["id"]),
            str(xdp["prog"].get("name", "")))


def _remove(side: netns.Side, mode: str) -> None:
    side.run("ip", "link", "set", "dev", side.ifname, _MODE_WORD[mode], "off")


@pytest.mark.parametrize("mode", ["skb", "drv"])
def test_2_force_restores_the_displaced_program_on_close(
        pair: netns.VethPair, mode: str, capfd: pytest.CaptureFixture[str]) -> None:
    a = pair.a
    pid = _foreign(a, mode)
    assert _attached(a) == (mode, pid, "foreign_pass")
    try:
        with netns.enter(a.netns):
            d = Driver.open(f"xdp:{a.ifname}?force=1&mode={mode}")
        try:
            err = capfd.readouterr().err
            assert (f"efvi: replacing XDP program id {pid} (foreign_pass) on {a.ifname} "
                    f"in {mode} mode; it will be restored on exit") in err
            now = _attached(a)
            assert now[1] != pid and now[2].startswith("efvi_")
            with netns.enter(a.netns):  # efvi info names the program efvi displaced
                rep = info.report(a.ifname, with_packet=False)["interfaces"][0]
            assert rep["xdp_program"]["displaced"] == [
                {"id": pid, "name": "foreign_pass", "mode": mode}]
            text = a.run(sys.executable, "-m", "efvi.cli.main", "info", "--no-packet",
                         a.ifname, env={**os.environ, "PYTHONPATH": _SRC}).stdout
            assert f"displaced by it (force=1): 'foreign_pass' id {pid}, {mode} mode" in text
        finally:
            d.close()
        assert _attached(a) == (mode, pid, "foreign_pass")
    finally:
        _remove(a, mode)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_2_force_restores_the_displaced_program_on_signals(
        pair: netns.VethPair, sig: signal.Signals) -> None:
    a = pair.a
    pid = _foreign(a, "skb")
    env = {**os.environ, "PYTHONPATH": _SRC}
    try:
        # a library user without the CLI's signal handling: SIGTERM kills by default
        code = ("import sys, time\n"
                "from efvi import Driver\n"
                f"d = Driver.open('xdp:{a.ifname}?force=1&mode=skb')\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n")
        proc = a.popen(sys.executable, "-c", code, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            assert _attached(a)[2].startswith("efvi_")
            proc.send_signal(sig)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode != 0  # it was stopped by the signal
        assert f"replacing XDP program id {pid} (foreign_pass)" in err.decode()
        assert "Traceback" not in err.decode() or sig == signal.SIGINT
        assert _attached(a) == ("skb", pid, "foreign_pass")
    finally:
        _remove(a, "skb")


def test_2_cli_sink_sigterm_restores(pair: netns.VethPair) -> None:
    a = pair.a
    pid = _foreign(a, "skb")
    env = {**os.environ, "PYTHONPATH": _SRC}
    try:
        proc = a.popen(sys.executable, "-m", "efvi.cli.main", "sink",
                       f"xdp:{a.ifname}?force=1&mode=skb", "unicast-all", env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = b""
        try:
            assert proc.stderr is not None
            while b"pkt-rate" not in seen:  # the sink is running (its progress header)
                line = proc.stderr.readline()
                if not line:
                    break
                seen += line
            assert _attached(a)[2].startswith("efvi_"), seen
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = seen + err
        # 0: the CLI's handler stopped it with its summary; 143: the signal came in the
        # moment before the CLI installed it, and the adapter's own handler ran
        assert proc.returncode in (0, 143), err.decode()
        assert f"replacing XDP program id {pid}" in err.decode()
        assert _attached(a) == ("skb", pid, "foreign_pass")
    finally:
        _remove(a, "skb")
