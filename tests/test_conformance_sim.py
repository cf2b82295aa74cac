"""The conformance suite on the reference adapter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import pytest

from efvi import EfviError, FilterSpec, UnsupportedError
from efvi.adapters.base import Capabilities
from efvi.adapters.sim.adapter import SimAdapter, SimPD
from efvi.adapters.sim.vi import SimVI
from efvi.testing.conformance import AdapterConformance, Endpoint, Link, sim_link


class TestSimConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with sim_link() as lk:
            yield lk


# ---- the suite can fail: adapters that break a declared capability are caught ----------

def _outcome(fn: Callable[[], object]) -> str:
    try:
        fn()
    except pytest.skip.Exception:
        return "skipped"
    except (AssertionError, EfviError):
        return "failed"
    return "passed"


def _caps(**changes: object) -> property:
    real = SimAdapter.capabilities

    def caps(self: SimAdapter) -> Capabilities:
        return dataclasses.replace(real.fget(self), **changes)  # type: ignore[misc]
    return property(caps)


def test_an_adapter_without_sw_events_fails_unless_it_declares_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SimVI, "sw_event", lambda self, data: False)
    suite = AdapterConformance()
    with sim_link() as lk:
        assert _outcome(lambda: suite.test_sw_events_and_close(lk)) == "failed"
        assert _outcome(lambda: suite.test_declared_capabilities_hold(lk)) == "failed"
    monkeypatch.setattr(SimAdapter, "capabilities", _caps(sw_events=False))
    with sim_link() as lk:  # declared: the lack is asserted, no failure
        assert _outcome(lambda: suite.test_sw_events_and_close(lk)) == "passed"


def test_an_unsupported_error_is_a_skip_only_for_a_declared_lack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_add = SimPD.filter_add
    seen: set[str] = set()

    def no_replication(self: SimPD, spec: FilterSpec, targets: Sequence[object]) -> object:
        if spec.is_multicast and str(spec) in seen:
            raise UnsupportedError("no multicast replication here")
        seen.add(str(spec))
        return real_add(self, spec, targets)  # type: ignore[arg-type]

    monkeypatch.setattr(SimPD, "filter_add", no_replication)
    suite = AdapterConformance()
    with sim_link() as lk:  # sim declares mcast_replicate: refusing is a failure
        assert _outcome(lambda: suite.test_multicast_filter_replicates(lk)) == "failed"
    monkeypatch.setattr(SimAdapter, "capabilities", _caps(mcast_replicate=False))
    seen.clear()
    with sim_link() as lk:  # declared lack: asserted refusal, then a by-design skip
        with pytest.raises(pytest.skip.Exception, match="by design: .*mcast_replicate"):
            suite.test_multicast_filter_replicates(lk)


def test_declared_capabilities_that_do_not_hold_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = AdapterConformance()
    # PIO declared, but the adapter gives no PIO area and no second region for one
    monkeypatch.setattr(SimPD, "pio_area", lambda self, size: None)
    monkeypatch.setattr(SimAdapter, "capabilities", _caps(multi_region=False))
    with sim_link() as lk:
        assert _outcome(lambda: suite.test_declared_capabilities_hold(lk)) == "failed"
    monkeypatch.undo()
    # no RX timestamps declared, yet frames carry them: the values are checked
    monkeypatch.setattr(SimAdapter, "capabilities", _caps(rx_timestamps=False))
    with sim_link() as lk:
        tx, rx = Endpoint(lk.tx), Endpoint(lk.rx)
        try:
            assert _outcome(lambda: suite.test_udp_delivery_batch(lk, (tx, rx))) == "failed"
        finally:
            rx.close()
            tx.close()
