"""Echo UDP datagrams to their sender, printing each one's arrival time (blocking loop).

    python examples/udp_echo.py URL IP PORT        e.g. xdp:eth1 198.18.0.1 5000
"""
import sys

from efvi import udp

url, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with udp.open(url, (ip, port)) as ep:
    for payload, ts_ns, src in ep:
        print(ts_ns, src, len(payload), flush=True)
        ep.sendto(payload, src)
