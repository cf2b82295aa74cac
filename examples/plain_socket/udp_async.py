"""The plain-socket twin of examples/udp_async.py (for the README's comparison).
asyncio's datagram transport hands out no kernel timestamps: read the clock instead."""
import asyncio
import sys
import time


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, src: tuple[str, int]) -> None:
        print(time.time_ns(), src, len(data), flush=True)
        self.transport.sendto(data, src)  # type: ignore[attr-defined]


async def main(ip: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=(ip, port))
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
