"""CI's per-area gate (.ci/gate.py + tests/areas.py): per-area counts, and a failure
when an area whose feature this machine has skipped a test (by-design skips aside)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from areas import FEATURES, area_of, feature_missing

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / ".ci" / "gate.py"


def _gate_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ci_gate", GATE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _area(passed: int = 0, skipped: int = 0, by_design: int = 0, missing: str | None = None,
          skips: list[str] | None = None) -> dict[str, object]:
    return {"passed": passed, "failed": 0, "skipped": skipped, "by_design": by_design,
            "skips": skips or [], "missing": missing}


def test_a_skip_in_an_area_the_machine_has_fails_the_gate() -> None:
    gate = _gate_module().gate
    # every xdp test skipped while packet passed: the old gate (passed > 0) was green
    lines, fails = gate({"areas": {"xdp": _area(skipped=57, skips=["t::x: no AF_XDP"]),
                                   "packet": _area(passed=63)}})
    assert len(fails) == 1 and fails[0].startswith("area xdp: 57 test(s) skipped")
    assert "t::x: no AF_XDP" in fails[0]
    assert any(ln.split()[:4] == ["xdp", "0", "0", "57"] for ln in lines)
    assert any(ln.split()[:2] == ["packet", "63"] for ln in lines)


def test_by_design_skips_and_missing_features_pass_the_gate() -> None:
    gate = _gate_module().gate
    _, fails = gate({"areas": {
        "packet": _area(passed=63, by_design=2,
                        skips=["t::dup: by design: packet declares capabilities.steal = False"]),
        "xdp": _area(skipped=5, missing="cannot open AF_XDP sockets")}})
    assert fails == []
    _, fails = gate({"areas": {"xdp": _area()}})  # present, but nothing ran
    assert fails == ["area xdp: no test ran"]
    _, fails = gate({"areas": {}})
    assert fails and "no integration area" in fails[0]


def test_areas_come_from_markers_or_file_names() -> None:
    assert area_of("tests/test_xdp_info.py", [], True) == "xdp"
    assert area_of("tests/test_interop_packet.py", [], True) == "packet"
    assert area_of("tests/test_forward_integration.py", [], True) == "forward"
    assert area_of("tests/test_wire_kernel.py", [], True) == "netns"
    assert area_of("tests/test_new_tool.py", [], True) == "netns"  # the default
    assert area_of("tests/test_xdp_program.py", [], False) is None  # pure tests: no area
    assert area_of("tests/test_interop_pcap.py", [pytest.mark.area("interop").mark],
                   False) == "interop"
    assert feature_missing("no-such-area") == feature_missing("netns")


def _run_suite(tmp: Path, body: str) -> tuple[int, str, dict[str, object]]:
    """Run a tiny suite with the project's recorder; then the gate on its report."""
    (tmp / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from areas import Recorder
        _r = Recorder()
        def pytest_collection_modifyitems(items):
            _r.collected(items)
        def pytest_runtest_logreport(report):
            _r.report(report)
        def pytest_sessionfinish(session, exitstatus):
            _r.write({str(tmp / 'report.json')!r})
        def pytest_configure(config):
            config.addinivalue_line("markers", "integration: x")
            config.addinivalue_line("markers", "area(name): x")
    """))
    (tmp / "test_xdp_fake.py").write_text(textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("EFVI_INTEGRATION_REPORT", None)
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(tmp)], check=False, capture_output=True, text=True, cwd=tmp,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    g = subprocess.run([sys.executable, str(GATE), str(tmp / "report.json")],
                       check=False, capture_output=True, text=True, timeout=60)
    return g.returncode, g.stdout + g.stderr, json.loads((tmp / "report.json").read_text())


@pytest.mark.skipif(FEATURES["xdp"]() is not None, reason="needs a machine with AF_XDP")
def test_end_to_end_an_xdp_skip_here_fails_ci(tmp_path: Path) -> None:
    rc, out, rep = _run_suite(tmp_path, """
        import pytest
        pytestmark = pytest.mark.integration
        def test_ok(): pass
        def test_hidden(): pytest.skip("pretend AF_XDP is missing")
        def test_declared(): pytest.skip("by design: xdp declares capabilities.sniff = False")
    """)
    assert rep["areas"]["xdp"]["skipped"] == 1 and rep["areas"]["xdp"]["by_design"] == 1  # type: ignore[index]
    assert rc == 1 and "area xdp: 1 test(s) skipped" in out and "pretend AF_XDP" in out
    rc, out, _ = _run_suite(tmp_path, """
        import pytest
        pytestmark = pytest.mark.integration
        def test_ok(): pass
        def test_declared(): pytest.skip("by design: xdp declares capabilities.sniff = False")
    """)
    assert rc == 0, out
    assert "xdp" in out and "present" in out
