"""The plain-socket twin of examples/udp_batch.py (for the README's comparison)."""
import socket
import struct
import sys

import numpy as np

group, port, if_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name it
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.bind((group, port))
mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(if_ip))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.setblocking(False)
while True:
    lens, stamps = [], []
    while len(lens) < 256:
        try:
            data, anc, _flags, _src = s.recvmsg(65535, socket.CMSG_SPACE(16))
        except BlockingIOError:
            break
        lens.append(len(data))
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", cdata)
                stamps.append(sec * 1_000_000_000 + nsec)
    if lens:
        print(len(lens), int(np.sum(lens)), int(np.max(stamps)), flush=True)
