"""The conformance suite on the reference adapter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from efvi.testing.conformance import AdapterConformance, Link, sim_link


class TestSimConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with sim_link() as lk:
            yield lk
