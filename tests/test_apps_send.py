"""``efvi send`` defaults: the batch comes from the TX ring; ``-B 1`` is efsend's
per-packet mode (``transmit`` + ``transmit_unbundle``) and sends the same stream."""

from __future__ import annotations

import itertools
import os

from efvi.apps.send import Sender
from efvi.apps.sink import Sink
from efvi.filters import FilterSpec, format_mac

_ids = itertools.count()


def _pair(batch: int | None) -> tuple[int, int, list[bytes], int]:
    n = next(_ids)
    wire = f"sd{os.getpid()}_{n}"
    with Sink(f"sim:sdrx{n}?wire={wire}&ip=198.18.9.2",
              [FilterSpec.ip4_local("udp", "198.18.9.2", 7001)]) as sink, \
            Sender(f"sim:sdtx{n}?wire={wire}&ip=198.18.9.1", "198.18.9.2", 7001,
                   dmac=format_mac(sink.driver.interface.mac)) as snd:
        auto = snd.auto_batch()
        st = snd.run(300, batch=batch)
        seen: list[bytes] = []
        got = sink.run(count=300, duration_s=10, on_packet=lambda ts, f, fl: seen.append(f[42:50]))
    assert st.completed == st.tx_packets == 300 and st.out_of_order == 0, st
    return auto, got.rx_packets, seen, st.rejected


def test_send_default_batch_is_a_quarter_of_the_ring() -> None:
    auto, got, seen, rejected = _pair(None)
    assert auto == 1024  # default TX ring 4096
    assert got == 300 and rejected == 0
    assert [int.from_bytes(s, "big") for s in seen] == list(range(300))


def test_send_per_packet_mode_sends_the_same_stream() -> None:
    _, got, seen, rejected = _pair(1)
    assert got == 300 and rejected == 0
    assert [int.from_bytes(s, "big") for s in seen] == list(range(300))
