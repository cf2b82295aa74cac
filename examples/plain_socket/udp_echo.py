"""The plain-socket twin of examples/udp_echo.py (for the README's comparison)."""
import socket
import struct
import sys

ip, port = sys.argv[1], int(sys.argv[2])
SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name it
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.bind((ip, port))
while True:
    data, anc, _flags, src = s.recvmsg(65535, socket.CMSG_SPACE(16))
    ts_ns = 0
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", cdata)
            ts_ns = sec * 1_000_000_000 + nsec
    print(ts_ns, src, len(data), flush=True)
    s.sendto(data, src)
