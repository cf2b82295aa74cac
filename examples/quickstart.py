"""The ef_vi model in 30 lines: two sim ports on a wire, a filter, a batch TX, RX events."""

import numpy as np

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface)
from efvi.wire.build import udp_frame

with Driver.open("sim:exchange?wire=w&ip=198.18.0.1") as tx_nic, \
        Driver.open("sim:trader?wire=w&ip=198.18.0.2") as rx_nic:
    tx_pd, rx_pd = ProtectionDomain(tx_nic), ProtectionDomain(rx_nic)
    tx_mem = MemoryRegion(tx_pd, 64 * 2048)          # 64 registered 2 KiB buffers
    rx_mem = MemoryRegion(rx_pd, 64 * 2048)
    tx_vi = VirtualInterface(tx_pd, rxq=0, txq=64)
    rx_vi = VirtualInterface(rx_pd, rxq=64, txq=0)
    rx_vi.filter_add(FilterSpec.ip4_local("udp", "239.1.2.3", 5000))   # steer one flow
    rx_vi.receive_post_batch(rx_mem.dma_addrs()[:63], np.arange(63, dtype=np.uint32))

    frame = udp_frame("01:00:5e:01:02:03", tx_nic.interface.mac, "198.18.0.1",
                      "239.1.2.3", 40000, 5000, b"hello, ef_vi")
    for i in range(8):
        tx_mem.mv[i * 2048:i * 2048 + len(frame)] = frame
    sent = tx_vi.transmit_batch(tx_mem.dma_addrs()[:8], np.full(8, len(frame)), np.arange(8))
    print("sent", sent)

    for ev in rx_vi.eventq_poll(16):                   # one Event per packet
        if ev.type == EventType.RX:
            data = rx_mem.read(rx_mem.dma_addr(ev.rq_id * 2048) + ev.ofs, ev.len)
            print(f"RX rq_id={ev.rq_id} len={ev.len} ts_ns={ev.ts_ns} payload={data[42:]!r}")
    done = tx_vi.transmit_completed(tx_vi.poll())      # batch form: numpy columns
    print("TX completed ids", done.tolist())
    print("rx stats", {k: v for k, v in rx_vi.stats().items() if v})   # counters
    print("rx fill level", rx_vi.receive_fill_level())                 # ring state
