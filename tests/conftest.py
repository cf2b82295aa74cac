"""Shared fixtures; records how integration tests ended for .ci/run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from efvi.testing import netns

_outcomes: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "integration" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[report.outcome] = _outcomes.get(report.outcome, 0) + 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("EFVI_INTEGRATION_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f)


@pytest.fixture
def veth() -> Iterator[netns.VethPair]:
    """A veth pair between two fresh namespaces (skips without root)."""
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair() as pair:
        yield pair
