"""Receive a multicast group in batches: datagrams, bytes and the newest arrival time
per batch, as numpy columns (no Python object per datagram).

    python examples/udp_batch.py URL GROUP PORT    e.g. xdp:eth1 239.1.2.3 5000
"""
import sys

from efvi import udp

url, group, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with udp.open(url, (None, port), groups=[group]) as ep:
    while True:
        b = ep.recv_batch(256)
        if len(b):
            print(len(b), int(b.length.sum()), int(b.ts_ns.max()), flush=True)
