"""The conformance suite on the ``xdp`` adapter over a veth pair between two test
namespaces, in generic (skb) and native (drv) XDP mode.

Both ends are xdp drivers; ``kernel_rx_count`` counts UDP datagrams the receiving
namespace's kernel got (``/proc/net/snmp``: delivered + no-port), i.e. frames the XDP
program passed instead of stealing. The multicast-replication test skips by design:
XDP redirects a frame to one socket (the adapter raises UnsupportedError).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from efvi import Driver
from efvi.testing import netns
from efvi.testing.conformance import AdapterConformance, Link

from xdp_helpers import no_xdp_left, skip_unless_xdp, udp_kernel_count

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def xdp_link(mode: str, subnet: int) -> Iterator[Link]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=subnet) as pair:
        a, b = pair.a, pair.b
        try:
            with netns.enter(a.netns):
                tx = Driver.open(f"xdp:{a.ifname}?mode={mode}")
            try:
                with netns.enter(b.netns):
                    rx = Driver.open(f"xdp:{b.ifname}?mode={mode}")
                try:
                    yield Link(tx, rx, a.mac, b.mac, a.ip, b.ip,
                               kernel_rx_count=lambda: udp_kernel_count(b.netns))
                finally:
                    rx.close()
            finally:
                tx.close()
        finally:
            no_xdp_left(a, b)


class TestXdpSkbConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with xdp_link("skb", 50) as lk:
            yield lk


class TestXdpDrvConformance(AdapterConformance):
    @pytest.fixture
    def link(self) -> Iterator[Link]:
        with xdp_link("drv", 51) as lk:
            yield lk
