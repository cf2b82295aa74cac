"""Protocol numbers shared by the codecs, the classifier and the pcap layer.

Plain ``int`` constants (dpkt's UPPER_CASE naming), so they can be used in ``struct``
packing, numpy comparisons and ``match`` statements alike.
"""

from __future__ import annotations

from typing import Final

# Ethertypes (IEEE 802 numbers) ------------------------------------------------------
ETH_P_IP: Final = 0x0800
ETH_P_ARP: Final = 0x0806
ETH_P_8021Q: Final = 0x8100
ETH_P_8021AD: Final = 0x88A8  # QinQ service tag (S-tag)
ETH_P_QINQ_OLD: Final = 0x9100  # pre-standard QinQ S-tag, still seen in the wild
ETH_P_IPV6: Final = 0x86DD

#: Tag protocol identifiers treated as a VLAN tag, in either the outer or inner position.
VLAN_TPIDS: Final = frozenset({ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD})

ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
ETH_ALEN: Final = 6
#: Minimum Ethernet frame length without FCS; shorter frames are padded on transmit.
ETH_ZLEN: Final = 60

# IP protocol / IPv6 next-header numbers (IANA) --------------------------------------
IPPROTO_HOPOPTS: Final = 0
IPPROTO_ICMP: Final = 1
IPPROTO_IGMP: Final = 2
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ROUTING: Final = 43
IPPROTO_FRAGMENT: Final = 44
IPPROTO_ESP: Final = 50
IPPROTO_AH: Final = 51
IPPROTO_ICMPV6: Final = 58
IPPROTO_NONE: Final = 59
IPPROTO_DSTOPTS: Final = 60

#: IPv6 extension headers the classifier and :mod:`efvi.wire.ipv6` walk past.
#: ESP (50) is not walkable (its payload is encrypted) and ends the chain.
IPV6_EXT_HEADERS: Final = frozenset(
    {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS}
)
#: At most this many extension headers are walked; a longer chain stops the walk with
#: ``proto`` set to the next header that was not walked (and no L4 header).
IPV6_MAX_EXT_HEADERS: Final = 8

# ARP ---------------------------------------------------------------------------------
ARPHRD_ETHER: Final = 1
ARPOP_REQUEST: Final = 1
ARPOP_REPLY: Final = 2

# ICMP ---------------------------------------------------------------------------------
ICMP_ECHOREPLY: Final = 0
ICMP_ECHO: Final = 8
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129
