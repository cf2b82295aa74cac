"""Capture-file numbers (libpcap ``pcap-savefile(5)``, ``sf-pcap.c``, ``sf-pcapng.c``,
and the pcapng specification, draft-ietf-opsawg-pcapng)."""

from __future__ import annotations

from typing import Final

# Classic pcap magics, as read in the file's own byte order --------------------------
PCAP_MAGIC_US: Final = 0xA1B2C3D4
PCAP_MAGIC_NS: Final = 0xA1B23C4D
PCAP_VERSION: Final = (2, 4)
#: Variants libpcap recognises but no tool here writes; reported, not read.
PCAP_MAGIC_VARIANTS: Final = {
    0xA1B2CD34: "Kuznetzov modified pcap",
    0xA1B234CD: "Fmesquita pcap variant",
    0xA12B3C4D: "Navtel pcap variant",
    0xA1E2CB12: "netsniff-ng (Borkmann) pcap variant",
}

# Link types -------------------------------------------------------------------------
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_NAMES: Final = {
    0: "NULL", 1: "EN10MB", 101: "RAW", 105: "IEEE802_11", 113: "LINUX_SLL",
    127: "IEEE802_11_RADIOTAP", 228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2",
}

#: Records longer than this are treated as corrupt (libpcap's own ceiling is 256 KiB).
MAX_RECORD: Final = 256 * 1024
#: Default snapshot length written (tcpdump's -s 0).
DEFAULT_SNAPLEN: Final = 262144

# pcapng block types ------------------------------------------------------------------
BT_SHB: Final = 0x0A0D0D0A
BT_IDB: Final = 0x00000001
BT_PB: Final = 0x00000002  # obsolete packet block
BT_SPB: Final = 0x00000003
BT_NRB: Final = 0x00000004
BT_ISB: Final = 0x00000005
BT_EPB: Final = 0x00000006
BT_DSB: Final = 0x0000000A
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
#: Largest pcapng block accepted (libpcap uses 16 MiB).
MAX_BLOCK: Final = 16 * 1024 * 1024

# Options ------------------------------------------------------------------------------
OPT_ENDOFOPT: Final = 0
OPT_COMMENT: Final = 1
SHB_HARDWARE: Final = 2
SHB_OS: Final = 3
SHB_USERAPPL: Final = 4
IF_NAME: Final = 2
IF_DESCRIPTION: Final = 3
IF_IPV4ADDR: Final = 4
IF_IPV6ADDR: Final = 5
IF_MACADDR: Final = 6
IF_EUIADDR: Final = 7
IF_SPEED: Final = 8
IF_TSRESOL: Final = 9
IF_TZONE: Final = 10
IF_FILTER: Final = 11
IF_OS: Final = 12
IF_FCSLEN: Final = 13
IF_TSOFFSET: Final = 14
IF_HARDWARE: Final = 15
EPB_FLAGS: Final = 2
EPB_HASH: Final = 3
EPB_DROPCOUNT: Final = 4
EPB_PACKETID: Final = 5
EPB_QUEUE: Final = 6
EPB_VERDICT: Final = 7
ISB_STARTTIME: Final = 2
ISB_ENDTIME: Final = 3
ISB_IFRECV: Final = 4
ISB_IFDROP: Final = 5
ISB_FILTERACCEPT: Final = 6
ISB_OSDROP: Final = 7
ISB_USRDELIV: Final = 8
