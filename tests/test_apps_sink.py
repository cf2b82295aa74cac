"""``Sink.run(count=N)`` stops at exactly N packets even when one poll returns more."""

from __future__ import annotations

import itertools
import os

from efvi import Driver
from efvi.apps.sink import Sink
from efvi.filters import FilterSpec, format_mac
from efvi.testing.conformance import Endpoint, send
from efvi.wire.build import udp_frame

_ids = itertools.count()


def test_sink_n5_fed_one_batch_of_20_counts_5() -> None:
    n = next(_ids)
    wire = f"sl{os.getpid()}_{n}"
    tx_drv = Driver.open(f"sim:sltx{n}?wire={wire}&ip=198.18.9.1")
    try:
        with Sink(f"sim:slrx{n}?wire={wire}&ip=198.18.9.2",
                  [FilterSpec.ip4_local("udp", "198.18.9.2", 7000)]) as sink:
            rx_mac = format_mac(sink.driver.interface.mac)
            tx_mac = format_mac(tx_drv.interface.mac)
            ep = Endpoint(tx_drv)
            frames = [udp_frame(rx_mac, tx_mac, "198.18.9.1", "198.18.9.2", 40000, 7000,
                                b"seq-%04d" % i) for i in range(20)]
            send(ep, frames)  # one transmit batch: one poll on the sink sees all 20
            seen: list[bytes] = []
            st = sink.run(count=5, duration_s=10,
                          on_packet=lambda ts, f, fl: seen.append(f[42:]))
            ep.close()
    finally:
        tx_drv.close()
    assert st.rx_packets == 5, st
    assert st.rx_bytes == sum(len(f) for f in frames[:5])
    assert seen == [b"seq-%04d" % i for i in range(5)]
    assert st.rx_after_limit == 15  # harvested with the 5th, reported, not counted
