"""Shared fixtures; records per-area integration outcomes for .ci/run (see areas.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from areas import Recorder
from efvi.testing import netns

_recorder = Recorder()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _recorder.collected(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _recorder.report(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("EFVI_INTEGRATION_REPORT")
    if path and not hasattr(session.config, "workerinput"):  # the xdist controller writes
        _recorder.write(path)


@pytest.fixture
def veth() -> Iterator[netns.VethPair]:
    """A veth pair between two fresh namespaces (skips without root)."""
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair() as pair:
        yield pair
