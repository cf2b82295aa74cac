"""Real kernel UDP sockets accept the frames our builder makes, and drop broken ones.

A child process enters a fresh network namespace (``unshare --net``), creates a TAP
device there with addresses from the benchmarking ranges (198.18.0.0/15 and
2001:2::/48), binds UDP sockets, and writes frames into the TAP: the kernel receives
them exactly as if they came off a wire (``CHECKSUM_NONE``, so it verifies the IPv4
header and UDP checksums). Nothing leaves the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    r"""
    import fcntl, os, select, socket, struct, subprocess, sys
    from efvi.wire.build import udp_frame

    TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"efvitap0", IFF_TAP | IFF_NO_PI))
    def ip(*a):
        subprocess.run(["ip", *a], check=True)
    ip("link", "set", "lo", "up")
    ip("link", "set", "efvitap0", "up")
    ip("addr", "add", "198.18.0.1/24", "dev", "efvitap0")
    ip("-6", "addr", "add", "2001:2::1/64", "dev", "efvitap0", "nodad")
    SIOCGIFHWADDR = 0x8927    # /sys still shows the parent namespace: ask the kernel
    q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mac = fcntl.ioctl(q.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", b"efvitap0"))[18:24]
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.bind(("198.18.0.1", 30001))
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.bind(("2001:2::1", 30001))
    peer = "02:00:00:00:00:99"

    def recv(sock):
        r, _, _ = select.select([sock], [], [], 5.0)
        return sock.recvfrom(2048) if r else None

    for sock, src, dst in ((s4, "198.18.0.2", "198.18.0.1"),
                           (s6, "2001:2::2", "2001:2::1")):
        v = "v6" if sock is s6 else "v4"
        good = udp_frame(mac, peer, src, dst, 4000, 30001, b"good " + v.encode())
        bad_udp = bytearray(udp_frame(mac, peer, src, dst, 4000, 30001, b"badu"))
        bad_udp[-5] ^= 0x40          # flip a payload bit: UDP checksum now wrong
        os.write(fd, bytes(bad_udp))
        if sock is s4:
            bad_ip = bytearray(udp_frame(mac, peer, src, dst, 4000, 30001, b"badi"))
            bad_ip[14 + 8] ^= 1      # TTL changed, IPv4 header checksum now wrong
            os.write(fd, bytes(bad_ip))
        odd = udp_frame(mac, peer, src, dst, 4001, 30001, b"odd length!")
        os.write(fd, odd)
        os.write(fd, good)
        got = [recv(sock), recv(sock)]
        print(v, [(g[0], g[1][1]) if g else None for g in got], flush=True)
    """
)


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (netns + TAP device)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} program"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_kernel_udp_sockets_accept_our_frames_and_drop_bad_checksums() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", CHILD],
                          capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("unshare --net not permitted here: " + proc.stderr.strip()[-200:])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # The corrupted frames never arrive; the odd-length and the good ones do, in order.
    assert lines == [
        "v4 [(b'odd length!', 4001), (b'good v4', 4000)]",
        "v6 [(b'odd length!', 4001), (b'good v6', 4000)]",
    ], proc.stdout + proc.stderr
