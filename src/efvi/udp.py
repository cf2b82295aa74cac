"""``efvi.udp``: accelerated UDP endpoints with a socket-like API.

    from efvi import udp
    with udp.open("xdp:eth1", ("198.18.0.1", 5000)) as ep:
        for payload, ts_ns, (ip, port) in ep:
            ep.sendto(payload, (ip, port))

See :mod:`efvi.apps.udp` for the whole story (demultiplexing, multicast, fileno,
asyncio, batches, jumbo frames, drops).
"""

from __future__ import annotations

from efvi.apps.udp import UdpBatch as UdpBatch
from efvi.apps.udp import UdpEndpoint as UdpEndpoint
from efvi.apps.udp import UdpStack as UdpStack
from efvi.apps.udp import multicast_mac as multicast_mac
from efvi.apps.udp import open_endpoint as open

__all__ = ["UdpBatch", "UdpEndpoint", "UdpStack", "multicast_mac", "open"]
