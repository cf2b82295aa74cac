"""asyncio: echo datagrams to their sender while other tasks run (the endpoint's
fileno() wakes the event loop).

    python examples/udp_async.py URL IP PORT       e.g. xdp:eth1 198.18.0.1 5000
"""
import asyncio
import sys

from efvi import udp


async def main(url: str, ip: str, port: int) -> None:
    with udp.open(url, (ip, port)) as ep:
        async for payload, ts_ns, src in ep:
            print(ts_ns, src, len(payload), flush=True)
            ep.sendto(payload, src)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
