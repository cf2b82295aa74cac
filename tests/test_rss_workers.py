"""efvi rss --workers: one process per VI, the parent joins their counts and stops
them all (signals, a failing or killed worker); xdp and packet on a 4-queue veth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from efvi.apps.rss_workers import RssWorkers, Supervisor, WorkerError
from efvi.errors import UnsupportedError
from efvi.testing import netns

from test_rss import SEND, SRC


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _loop(i: int, report: Callable[[dict[str, Any]], None], stop: list[bool]) -> None:
    report({"t": "ready"})
    while not stop[0]:
        time.sleep(0.01)
    report({"t": "done", "i": i})


def test_supervisor_stops_every_worker_on_stop() -> None:
    sup = Supervisor(3, _loop)
    sup.start()
    pids = [w.pid for w in sup.workers]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    sup.finish()
    assert not sup.failure and all(w.done for w in sup.workers)
    assert not any(_alive(p) for p in pids)


def test_a_failing_worker_stops_the_others_and_names_itself() -> None:
    def body(i: int, report: Callable[[dict[str, Any]], None], stop: list[bool]) -> None:
        report({"t": "ready"})
        if i == 1:
            time.sleep(0.2)
            raise RuntimeError("queue 1 went away")
        _loop(i, report, stop)

    sup = Supervisor(3, body)
    sup.start()
    pids = [w.pid for w in sup.workers]
    deadline = time.monotonic() + 20
    while sup.running and time.monotonic() < deadline:
        sup.pump(0.05)
    assert sup.failure == f"worker 1 (pid {pids[1]}): queue 1 went away"
    assert [w.done for w in sup.workers] == [True, False, True]  # 0, 2 stopped cleanly
    sup.finish()
    assert not any(_alive(p) for p in pids)


def test_a_killed_worker_is_reported() -> None:
    sup = Supervisor(2, _loop)
    sup.start()
    pids = [w.pid for w in sup.workers]
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while sup.running and time.monotonic() < deadline:
        sup.pump(0.05)
    sup.finish()
    assert sup.failure == f"worker 0 (pid {pids[0]}): died: killed by SIGKILL"
    assert sup.workers[1].done and not any(_alive(p) for p in pids)


def test_a_worker_failing_at_start_fails_start() -> None:
    def body(i: int, report: Callable[[dict[str, Any]], None], stop: list[bool]) -> None:
        if i == 0:
            raise OSError("no memory for the ring")
        _loop(i, report, stop)

    sup = Supervisor(2, body)
    with pytest.raises(WorkerError, match=r"worker 0 \(pid \d+\): no memory for the ring"):
        sup.start()
    assert not sup.running


def test_sim_has_no_workers() -> None:
    with pytest.raises(UnsupportedError, match="xdp or packet"):
        RssWorkers(f"sim:w{os.getpid()}", 2)


@pytest.mark.integration
@pytest.mark.parametrize("adapter", ["xdp", "packet"])
def test_workers_on_a_4_queue_veth(adapter: str) -> None:
    """Flows spread over more than one worker, each flow on one worker, every frame
    counted once; on xdp `efvi info` names each worker as its queue's holder; SIGTERM
    to the parent stops every worker and still prints the summary."""
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair(queues=4, subnet=48 if adapter == "xdp" else 49) as p:
        a, b = p.a, p.b
        env = dict(os.environ, PYTHONPATH=SRC)
        rss = a.popen(sys.executable, "-m", "efvi.cli.main", "rss", f"{adapter}:{a.ifname}",
                      "-n", "4", "--workers", "--duration", "60", "--json",
                      "--filter", f"udp:{a.ip}:7000" + (",sniff" if adapter == "packet" else ""),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        assert rss.stderr is not None
        line = rss.stderr.readline()
        assert line.startswith("# rss") and "in workers" in line, line + rss.stderr.read()
        pids = [int(x) for x in line.split("in workers ")[1].split(";")[0].split(", ")]
        assert len(set(pids)) == 4 and rss.pid not in pids
        if adapter == "xdp":
            r = a.run(sys.executable, "-m", "efvi.cli.main", "info", a.ifname, "--json",
                      "--no-packet", env=env)
            prog = json.loads(r.stdout)["interfaces"][0]["xdp_program"]
            assert prog["efvi_pid"] == rss.pid
            assert [(h["queue"], h["pid"]) for h in prog["queue_holders"]] == \
                list(enumerate(pids))
        b.run(sys.executable, "-c", SEND, a.ip, "32", "30", env=env)
        time.sleep(1.5)  # the workers report within 0.2 s
        rss.send_signal(signal.SIGTERM)
        out, err = rss.communicate(timeout=30)
        assert rss.returncode == 0, err
        res = json.loads(out)
        assert res["workers"] == pids and res["stopped_by"] == "signal"
        assert res["packets"] == 32 * 30 and sum(res["per_vi"]) == 32 * 30, res
        assert res["flows"] == 32 and res["split_flows"] == 0, res
        assert sum(res["flows_per_vi"]) == 32
        assert sum(1 for c in res["per_vi"] if c) >= 2, res
        assert not any(_alive(p) for p in pids)


@pytest.mark.integration
def test_a_killed_worker_ends_the_run_with_its_name() -> None:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair(queues=2, subnet=50) as p:
        a = p.a
        env = dict(os.environ, PYTHONPATH=SRC)
        rss = a.popen(sys.executable, "-m", "efvi.cli.main", "rss", f"packet:{a.ifname}",
                      "-n", "2", "--workers", "--duration", "60",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        assert rss.stderr is not None
        line = rss.stderr.readline()
        pids = [int(x) for x in line.split("in workers ")[1].split(";")[0].split(", ")]
        os.kill(pids[1], signal.SIGKILL)
        out, err = rss.communicate(timeout=30)
        assert rss.returncode == 1
        assert f"worker 1 (pid {pids[1]}): died: killed by SIGKILL" in err
        assert "Traceback" not in err
        assert not any(_alive(p) for p in pids)
