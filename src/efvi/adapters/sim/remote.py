"""Sim wires between processes (``sim:PORT?wire=@NAME``)."""

from __future__ import annotations

import errno
import select
import socket
import struct
import time

from efvi.errors import SetupError


class RemoteWire:
    """One end of a wire between processes: a Unix datagram socket in the abstract
    namespace (``@efvi-sim-wire/NAME/0`` or ``/1``). A datagram carries up to 16 kB of
    frames, each as its sender's int-ns wire timestamp (8 bytes), its length (4 bytes)
    and its bytes.
    """

    _HDR = struct.Struct("<qI")
    MAX_DGRAM = 16_000
    PAUSE_S = 1.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (0, 1):
            try:
                self.sock.bind(f"\0efvi-sim-wire/{name}/{end}")
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    self.sock.close()
                    raise
        else:
            self.sock.close()
            raise SetupError(f"sim wire @{name} already has two ends (two processes use it)",
                             errno=errno.EADDRINUSE,
                             hint="close one of them, or pick another wire name")
        self.end = end
        self.peer = f"\0efvi-sim-wire/{name}/{1 - end}"
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
            try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE pass the sysctl cap (root)
                self.sock.setsockopt(socket.SOL_SOCKET, force, 16 << 20)
            except OSError:
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
                except OSError:
                    pass
        self.sock.setblocking(False)

    def send(self, frames: list[bytes], stamps: list[int]) -> dict[str, int]:
        """Send frames; return drop counts by cause ("no_peer", "wire_stalled")."""
        drops: dict[str, int] = {}
        wait_s = self.PAUSE_S
        pack = self._HDR.pack
        chunk: list[bytes] = []
        size = count = 0
        items = list(zip(stamps, frames))
        for i, (t, f) in enumerate(items):
            chunk.append(pack(t, len(f)))
            chunk.append(f)
            size += 12 + len(f)
            count += 1
            if size >= self.MAX_DGRAM or i == len(items) - 1:
                cause = self._send(b"".join(chunk), wait_s)
                if cause:
                    drops[cause] = drops.get(cause, 0) + count
                    wait_s = 0.0  # the rest of this doorbell does not wait again
                chunk, size, count = [], 0, 0
        return drops

    def _send(self, data: bytes, wait_s: float) -> str | None:
        # A full peer queue pauses the sender (as Ethernet pause frames would) for up to
        # ``wait_s``; a peer stuck longer than that loses the frames, counted.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.sock.sendto(data, self.peer)
                return None
            except (ConnectionRefusedError, FileNotFoundError):
                return "no_peer"
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "wire_stalled"
                select.select([], [self.sock], [], min(left, 0.01))

    def recv(self, max_frames: int) -> tuple[list[bytes], list[int]]:
        frames: list[bytes] = []
        stamps: list[int] = []
        unpack = self._HDR.unpack_from
        while len(frames) < max_frames:
            try:
                d = self.sock.recv(1 << 17)
            except BlockingIOError:
                break
            pos = 0
            while pos + 12 <= len(d):
                t, ln = unpack(d, pos)
                stamps.append(t)
                frames.append(d[pos + 12:pos + 12 + ln])
                pos += 12 + ln
        return frames, stamps

    def wait(self, timeout_s: float) -> None:
        select.select([self.sock], [], [], timeout_s)

    def close(self) -> None:
        self.sock.close()
