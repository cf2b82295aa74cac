"""The conformance suite on the ``packet`` adapter: over veth between two test
namespaces, and on ``lo`` inside a test namespace (sniff semantics: the suite adds
filters as sniff filters because ``Capabilities.steal`` is False)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator

import pytest

from efvi import Driver
from efvi.filters import format_mac
from efvi.testing import netns
from efvi.testing.conformance import AdapterConformance, Link

pytestmark = pytest.mark.integration


def _rx_packets(ns: str, ifname: str) -> int:
    out = subprocess.run(["ip", "-j", "-s", "-n", ns, "link", "show", "dev", ifname],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def _skip_unless_possible() -> None:
    reason = netns.why_unavailable()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def veth_link(query: str = "", subnet: int = 40) -> Iterator[Link]:
    _skip_unless_possible()
    with netns.veth_pair(subnet=subnet) as pair:
        a, b = pair.a, pair.b
        with netns.enter(a.netns):
            tx = Driver.open(f"packet:{a.ifname}{query}")
        try:
            with netns.enter(b.netns):
                rx = Driver.open(f"packet:{b.ifname}{query}")
            try:
                yield Link(tx, rx, a.mac, b.mac, a.ip, b.ip,
                           kernel_rx_count=lambda: _rx_packets(b.netns, b.ifname))
            finally:
                rx.close()
        finally:
            tx.close()


@contextlib.contextmanager
def lo_link() -> Iterator[Link]:
    """Both drivers on ``lo`` of a fresh namespace (198.18.41.1/32 on it)."""
    _skip_unless_possible()
    with netns.veth_pair(subnet=41) as pair:
        ns = pair.a.netns
        subprocess.run(["ip", "-n", ns, "addr", "add", "198.18.41.10/32", "dev", "lo"],
                       check=True, capture_output=True)
        with netns.enter(ns):
            tx = Driver.open("packet:lo")
            rx = Driver.open("packet:lo")
        try:
            mac = format_mac(rx.interface.mac)
            yield Link(tx, rx, mac, mac, "198.18.41.10", "198.18.41.10",
                       kernel_rx_count=lambda: _rx_packets(ns, "lo"))
        finally:
            rx.close()
            tx.close()


class TestPacketVethConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with veth_link() as lk:
            yield lk


class TestPacketV3Conformance(AdapterConformance):
    """Every VI on TPACKET_V3 block rings (RX and TX), blocks retired after 2 ms."""

    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with veth_link("?rx_ring=v3&retire_ms=2", subnet=42) as lk:
            yield lk


class TestPacketLoConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with lo_link() as lk:
            yield lk
