"""The kernel's side of a :mod:`efvi.apps.udp` endpoint (control path).

The VI takes the endpoint's datagrams, but the kernel still does three things for it:

* **holds the port** — a kernel UDP socket bound to the endpoint's ``(ip, port)``, so
  the kernel answers nothing with ICMP port-unreachable and no other program takes
  the port;
* **joins the groups** — one such socket per multicast group with
  ``IP_ADD_MEMBERSHIP`` (IGMP) and ``IP_MULTICAST_ALL`` off; every kept socket has a
  drop-everything socket filter, so the kernel's copies die there (on ``packet``,
  which only sniffs, the kernel sees every datagram too);
* **resolves neighbours** — a missing MAC is asked of the kernel (netlink
  ``RTM_NEWNEIGH`` with ``NTF_USE``: the kernel ARPs, we send nothing ourselves).

Everything here runs in the adapter's network namespace when it has one.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from typing import TYPE_CHECKING

from efvi.errors import EfviError, SetupError

if TYPE_CHECKING:
    from efvi.apps.udp_stack import UdpStack

__all__ = ["arp_probe", "check_multicast_on", "drop_all", "hold_ports", "resolve_mac"]

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
SO_ATTACH_FILTER = 26
IFF_MULTICAST = 0x1000
_NTF_USE = 0x01
_NUD_NONE = 0x00
_RTM_NEWNEIGH = 28
_NDA_DST = 1


def drop_all(sock: socket.socket) -> None:
    """Attach a one-instruction classic BPF filter (``ret #0``): the socket keeps its port
    and group memberships but queues nothing."""
    import ctypes
    insn = ctypes.create_string_buffer(struct.pack("<HBBI", 0x06, 0, 0, 0), 8)
    prog = struct.pack("<HxxxxxxQ", 1, ctypes.addressof(insn))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def arp_probe(ip: str, ifindex: int) -> None:
    """Ask the kernel to resolve ``ip`` on ``ifindex`` (``ip neigh replace IP dev IF use``:
    RTM_NEWNEIGH with NTF_USE), without sending anything ourselves."""
    from efvi import netutil
    nd = struct.pack("=BxxxiHBB", socket.AF_INET, ifindex, _NUD_NONE, _NTF_USE, 0)
    nd += netutil.nla(_NDA_DST, socket.inet_aton(ip))
    try:
        with netutil.Netlink() as nl:
            nl.request(_RTM_NEWNEIGH, netutil.NLM_F_REQUEST | netutil.NLM_F_ACK
                       | 0x100 | 0x400, nd)  # NLM_F_REPLACE | NLM_F_CREATE
    except (EfviError, OSError):
        pass


def check_multicast_on(st: UdpStack) -> None:
    """SetupError unless the stack's interface has multicast on (not checked on sim)."""
    if st.caps.adapter == "sim":
        return
    from efvi.netutil import link_info
    info = st.info
    netns = getattr(st.adapter, "netns", None)
    if netns is not None:
        with netns.enter():
            li = link_info(info.name)
    else:
        li = link_info(info.name)
    if not li.flags & IFF_MULTICAST:
        raise SetupError(f"interface {info.name} has multicast turned off",
                         errno=errno.EADDRNOTAVAIL,
                         hint=f"run: ip link set dev {info.name} multicast on")


def hold_ports(st: UdpStack, port: int, lip: str | None, groups: list[int],
               out: list[socket.socket]) -> None:
    """The kept kernel sockets of one endpoint: ``lip:port`` (when ``lip``) and one per
    group, joined on the stack's interface. Each socket is appended to ``out`` as soon
    as it exists, so the caller closes what was made when a later one fails
    (SetupError: the port is held elsewhere, or a join failed). Nothing on sim."""
    if st.caps.adapter == "sim":
        return
    netns = getattr(st.adapter, "netns", None)
    ifindex = st.info.ifindex

    def make(bind_ip: str, reuse: bool) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.append(s)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        except OSError:
            pass
        drop_all(s)
        try:
            s.bind((bind_ip, port))
        except OSError as exc:
            raise SetupError(f"cannot bind UDP {bind_ip}:{port} in the kernel: "
                             f"{exc.strerror}", errno=exc.errno or errno.EADDRINUSE,
                             hint="another socket (or another process's endpoint) "
                                  "holds the port; close it or use another port"
                             ) from None
        return s

    def body() -> None:
        if lip is not None:
            make(lip, False)
        for g in groups:
            gtext = str(ipaddress.IPv4Address(g))
            s = make(gtext, True)
            mreqn = (socket.inet_aton(gtext) + socket.inet_aton("0.0.0.0")
                     + ifindex.to_bytes(4, "little"))
            try:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            except OSError as exc:
                raise SetupError(f"cannot join {gtext} on {st.info.name}: {exc.strerror}",
                                 errno=exc.errno or errno.EINVAL,
                                 hint="check the interface has multicast on and a "
                                      "route; net.ipv4.igmp_max_memberships") from None

    if netns is not None:
        with netns.enter():
            body()
    else:
        body()


def resolve_mac(st: UdpStack, ip: str) -> bytes:
    """The MAC of next hop ``ip``: the neighbour table, else ask the kernel to ARP and
    wait up to 1 s (SetupError naming the ways out when nothing answers)."""
    mac = st.adapter.resolve_neighbour(ip)
    if mac is not None:
        return mac
    if st.caps.adapter != "sim":
        netns = getattr(st.adapter, "netns", None)
        deadline = time.monotonic() + 1.0
        while mac is None and time.monotonic() < deadline:
            if netns is not None:
                with netns.enter():
                    arp_probe(ip, st.info.ifindex)
            else:
                arp_probe(ip, st.info.ifindex)
            time.sleep(0.02)
            mac = st.adapter.resolve_neighbour(ip)
    if mac is None:
        raise SetupError(f"no MAC address for {ip} on {st.info.name} (ARP got no answer)",
                         errno=errno.EHOSTUNREACH,
                         hint=f"check {ip} is on the link, or add it: ip neigh replace "
                              f"{ip} lladdr MAC dev {st.info.name} (or pass dst_mac=)")
    return mac
