"""``efvi lab up|down|status`` (issue 9, #19): two namespaces joined by a veth pair.

Unit tests check the plan (names only from the ``efvi`` prefix, addresses only from
198.18.0.0/15, commands only inside the lab's namespaces) and the refusal without
root; integration tests make a lab of this process's own name, check it is up as
planned and reachable, that ``up`` is idempotent and repairs a half-made lab, that
the root namespace's interfaces are untouched, and run the commands ``up`` prints.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from efvi import netns
from efvi.apps import lab
from efvi.cli.main import main
from efvi.errors import SetupError

ROOT = Path(__file__).resolve().parent.parent
BENCH = ipaddress.ip_network("198.18.0.0/15")


# ---- the plan ---------------------------------------------------------------------------
@pytest.mark.parametrize("subnet", [0, 1, 77, 255, 256, 300, 511])
def test_plan_addresses_stay_in_198_18_0_0_15(subnet: int) -> None:
    p = lab.plan("efvi", subnet)
    for end in (p.a, p.b):
        assert ipaddress.ip_address(end.ip) in BENCH
        assert end.netns in ("efvi-a", "efvi-b") and end.ifname in ("veth-a", "veth-b")
        assert end.mac.startswith("02:")  # locally administered
    assert ipaddress.ip_network(p.network).subnet_of(BENCH)  # type: ignore[arg-type]
    assert p.a.ip != p.b.ip and p.a.mac != p.b.mac


@pytest.mark.parametrize("subnet", [-1, 512, 10**9])
def test_plan_refuses_subnets_outside_the_range(subnet: int) -> None:
    with pytest.raises(SetupError, match="198.18.0.0/15"):
        lab.plan("efvi", subnet)


@pytest.mark.parametrize("name", ["", "lab", "eth0", "efvi_x", "EFVI", "efvi a", "efvi/../x",
                                  "efvi-", "xefvi", "efvi" + "x" * 30, "efvi;rm"])
def test_names_only_from_the_efvi_prefix(name: str) -> None:
    with pytest.raises(SetupError, match="starting with 'efvi'"):
        lab.plan(name)


def test_printed_commands_run_only_inside_the_lab() -> None:
    p = lab.plan("efvi7", 3)
    cmds = [c for _, c in p.commands()]
    for c in cmds[:-1]:
        assert re.match(r"ip netns exec efvi7-[ab] efvi ", c), c
        assert "eth0" not in c
    assert cmds[-1] == "efvi lab down --name efvi7"
    text = " ".join(cmds)
    for what in ("sink", "send", "capture"):  # sink/send/capture on xdp and packet
        for adapter in ("xdp", "packet"):
            assert re.search(rf"efvi {what} (-\S+ \S+ )*(-i )?{adapter}:veth-[ab]", text) or \
                (what == "send" and f"{adapter}:veth-b" in text), (what, adapter)
    for ip in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text):
        assert ipaddress.ip_address(ip) in BENCH, ip


def test_refuses_without_root_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    for action in ("up", "down", "status"):
        assert main(["lab", action]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("efvi lab: the lab needs root"), err
        assert "sudo efvi lab" in err[0]


def test_bad_name_or_subnet_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "up", "--name", "prod"]) == 2
    assert "--name" in capsys.readouterr().err
    assert main(["lab", "up", "--subnet", "512"]) == 2
    assert "--subnet" in capsys.readouterr().err
    assert main(["lab"]) == 2


# ---- a real lab -------------------------------------------------------------------------
def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return sorted(ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines())


@pytest.fixture
def name() -> Iterator[str]:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    n = f"efvil{os.getpid()}"
    try:
        yield n
    finally:
        lab.down(n)


@pytest.mark.integration
def test_up_is_idempotent_repairs_and_leaves_the_root_namespace_alone(name: str) -> None:
    before = _root_links()
    made, created = lab.up(name, subnet=9)
    assert created and lab.status(name).state == "up"
    assert lab.status(name).lab == made  # the subnet is found from the addresses
    assert _root_links() == before
    ping = subprocess.run(["ip", "netns", "exec", made.a.netns, "ping", "-c", "1", "-W", "2",
                           made.b.ip], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert lab.up(name, subnet=9) == (made, False)
    with pytest.raises(SetupError, match="lab down"):  # up as something else: refused
        lab.up(name, subnet=10)
    netns.ip("-n", made.a.netns, "link", "del", "veth-a")  # half-made: remade
    assert lab.status(name).state == "partial"
    assert lab.up(name, subnet=9) == (made, True)
    assert lab.status(name).state == "up"
    assert _root_links() == before
    assert sorted(lab.down(name)) == [made.a.netns, made.b.netns]
    assert lab.down(name) == [] and lab.status(name).state == "down"
    assert _root_links() == before


def _efvi_env(tmp: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import docblocks
    return docblocks.scratch(tmp)


@pytest.mark.integration
def test_the_commands_up_prints_run(name: str, tmp_path: Path) -> None:
    env = _efvi_env(tmp_path)
    res = subprocess.run(["efvi", "lab", "up", "--name", name, "--json"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["created"] and rep["a"]["netns"] == f"{name}-a"
    cmds = [c["command"] for c in rep["commands"]]
    assert all(c.startswith(("ip netns exec", "efvi lab down")) for c in cmds), cmds
    # receivers first (in the background), then their senders, as the comments say
    pairs = [(cmds[0], [cmds[1]]), (cmds[2], [cmds[3]]), (cmds[4], [cmds[6]]),
             (cmds[5], [cmds[6]])]
    for recv, senders in pairs:
        p = subprocess.Popen(["bash", "-c", recv], env=env, cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(2.0 if "xdp:" in recv else 1.0)  # attach
            for s in senders:
                r = subprocess.run(["bash", "-c", s], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, (s, r.stderr)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        assert p.returncode == 0, (recv, err)
        if " sink " in recv:
            assert re.search(r"received (\d+) packets", out), out
        else:
            assert "5 packets captured" in err, err
    assert (tmp_path / "lab.pcapng").stat().st_size > 0
    info = subprocess.run(["bash", "-c", cmds[7]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "veth-a" in info.stdout, info.stderr
    down = subprocess.run(["bash", "-c", cmds[8]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "deleted" in down.stdout, down.stdout + down.stderr
