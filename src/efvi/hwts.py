"""Hardware timestamping controls (support layer): what ``ethtool -T`` reports
(``ETHTOOL_GET_TS_INFO``), the device's ``hwtstamp_config`` (``SIOC[GS]HWTSTAMP``) and
the PTP hardware clock as a POSIX clock id. Used by the packet adapter (enables RX
stamps), the xdp adapter and ``efvi info`` (reports whether the driver has them).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["HWTSTAMP_FILTER_ALL", "SOF_TIMESTAMPING_RAW_HARDWARE",
           "SOF_TIMESTAMPING_RX_HARDWARE", "TsInfo", "hwtstamp", "phc_clock_id", "ts_info"]

SOF_TIMESTAMPING_RX_HARDWARE = 1 << 2
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
SIOCETHTOOL = 0x8946
ETHTOOL_GET_TS_INFO = 0x41
SIOCSHWTSTAMP = 0x89B0
SIOCGHWTSTAMP = 0x89B1
HWTSTAMP_FILTER_ALL = 1


@dataclass(frozen=True)
class TsInfo:
    """``ethtool -T``: SOF_TIMESTAMPING_* capabilities and the PTP clock index."""

    so_timestamping: int
    phc_index: int

    @property
    def hw_rx(self) -> bool:
        need = SOF_TIMESTAMPING_RX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE
        return self.so_timestamping & need == need and self.phc_index >= 0


def ts_info(ifname: str) -> TsInfo:
    """Timestamping capabilities of ``ifname`` (no hardware if the ioctl is refused)."""
    data = array.array("B", struct.pack("=IIi", ETHTOOL_GET_TS_INFO, 0, -1) + bytes(36))
    addr, _ = data.buffer_info()
    ifr = struct.pack("16sP", ifname.encode()[:15], addr) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
        except OSError:
            return TsInfo(0, -1)
    _cmd, caps, phc = struct.unpack_from("=IIi", data.tobytes())
    return TsInfo(caps, phc)


def hwtstamp(ifname: str, config: bytes | None) -> bytes | None:
    """Read (``config=None``) or set the device's ``hwtstamp_config``; None if refused."""
    data = array.array("B", config if config is not None else bytes(12))
    addr, _ = data.buffer_info()
    ifr = struct.pack("16sP", ifname.encode()[:15], addr) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCGHWTSTAMP if config is None else SIOCSHWTSTAMP, ifr)
        except OSError:
            return None
    return data.tobytes()


def phc_clock_id(phc_index: int) -> tuple[int, int] | None:
    """(fd, clockid) for ``/dev/ptpN`` (``FD_TO_CLOCKID``), or None."""
    try:
        fd = os.open(f"/dev/ptp{phc_index}", os.O_RDONLY)
    except OSError:
        return None
    return fd, ((~fd) << 3) | 3
