"""Facts about real Linux network interfaces, read in the caller's network namespace.

Adapter-neutral (the ``xdp`` and ``packet`` adapters and ``efvi info`` use it). Every
query goes through rtnetlink, generic netlink or an ethtool ioctl on a socket created
by the calling thread, so it sees the namespace that thread is in (``/sys`` and
``/proc/net`` would show the namespace that mounted them instead).

Control path only: each call opens a netlink socket, costs a few syscalls and may
raise :class:`~efvi.errors.SetupError`.

Main entry points:

* :func:`link_info` — ifindex, MAC, MTU, flags (up/running), kind, queue counts,
  attached XDP program;
* :func:`addresses` — IPv4/IPv6 addresses of an interface;
* :func:`driver_name` — ethtool driver name (``veth``, ``mlx5_core``, ...);
* :func:`channels` — RX/TX queue counts the driver really uses;
* :func:`xdp_features` — NETDEV_XDP_ACT_* bits (native XDP, zero-copy, ...);
* :func:`neighbour` — MAC of an IP from the neighbour (ARP/NDP) table;
* :func:`interface_info` — an :class:`efvi.adapters.base.InterfaceInfo`.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import ctypes.util
import errno as _errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from efvi._types import InterfaceInfo
from efvi.errors import SetupError

# ---- netlink constants --------------------------------------------------------------
NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_GETADDR = 22
RTM_GETNEIGH = 30

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_OPERSTATE = 16
IFLA_PROMISCUITY = 30
IFLA_NUM_TX_QUEUES = 31
IFLA_NUM_RX_QUEUES = 32
IFLA_XDP = 43
IFLA_XDP_FD = 1
IFLA_XDP_ATTACHED = 2
IFLA_XDP_FLAGS = 3
IFLA_XDP_PROG_ID = 4
IFLA_XDP_DRV_PROG_ID = 5
IFLA_XDP_SKB_PROG_ID = 6
IFLA_XDP_HW_PROG_ID = 7
IFLA_XDP_EXPECTED_FD = 8

IFA_ADDRESS = 1
IFA_LOCAL = 2
NDA_DST = 1
NDA_LLADDR = 2
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

#: IFLA_XDP_ATTACHED values
XDP_ATTACHED_NAMES = {0: "none", 1: "drv", 2: "skb", 3: "hw", 4: "multi"}

# generic netlink: nlctrl, netdev family
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX = 1
NETDEV_A_DEV_XDP_FEATURES = 3
NETDEV_A_DEV_XDP_ZC_MAX_SEGS = 4

#: NETDEV_XDP_ACT_* bits (uapi linux/netdev.h)
XDP_FEATURE_NAMES = {
    1: "basic", 2: "redirect", 4: "ndo-xmit", 8: "xsk-zerocopy", 16: "hw-offload",
    32: "rx-sg", 64: "ndo-xmit-sg",
}
NETDEV_XDP_ACT_BASIC = 1
NETDEV_XDP_ACT_XSK_ZEROCOPY = 8

# ethtool
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x3
ETHTOOL_GCHANNELS = 0x3C

_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_NLA = struct.Struct("=HH")
_GENL = struct.Struct("=BBH")


# ---- netlink plumbing ---------------------------------------------------------------------
def nla(attr_type: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (``len`` excludes the padding)."""
    n = _NLA.size + len(data)
    return _NLA.pack(n, attr_type) + data + b"\0" * ((4 - n % 4) % 4)


def nla_u32(attr_type: int, value: int) -> bytes:
    return nla(attr_type, struct.pack("=I", value & 0xFFFFFFFF))


def nla_s32(attr_type: int, value: int) -> bytes:
    return nla(attr_type, struct.pack("=i", value))


def parse_attrs(buf: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """Attributes in ``buf[offset:]`` → {type (flags stripped): payload}. Last one wins."""
    out: dict[int, bytes] = {}
    mv = memoryview(buf)
    end = len(mv)
    while offset + _NLA.size <= end:
        ln, typ = _NLA.unpack_from(mv, offset)
        if ln < _NLA.size or offset + ln > end:
            break
        out[typ & NLA_TYPE_MASK] = bytes(mv[offset + _NLA.size:offset + ln])
        offset += (ln + 3) & ~3
    return out


def _u32(b: bytes | None, default: int = 0) -> int:
    return struct.unpack_from("=I", b)[0] if b is not None and len(b) >= 4 else default


class NetlinkError(OSError):
    """A netlink request failed; ``strerror`` carries the kernel's extended ack text."""


class Netlink:
    """A netlink socket of ``protocol`` in the calling thread's namespace (control path)."""

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        except OSError as exc:
            raise SetupError(f"cannot open a netlink socket: {exc.strerror}",
                             errno=exc.errno or _errno.EPERM) from None
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass
        self.sock.bind((0, 0))
        self.seq = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return [(type, body)] of every reply up to DONE or the ACK.

        Raises :class:`NetlinkError` (errno, kernel message) on an error reply.
        """
        self.seq += 1
        seq = self.seq
        msg = _NLMSG.pack(_NLMSG.size + len(payload), msg_type, flags, seq, 0) + payload
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        dump = bool(flags & NLM_F_DUMP == NLM_F_DUMP)
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _NLMSG.size <= len(data):
                ln, typ, fl, rseq, _ = _NLMSG.unpack_from(data, off)
                if ln < _NLMSG.size:
                    break
                body = data[off + _NLMSG.size:off + ln]
                off += (ln + 3) & ~3
                if rseq != seq:
                    continue
                if typ == NLMSG_DONE:
                    return out
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err == 0:
                        return out
                    text = ""
                    if fl & NLM_F_ACK_TLVS:
                        echo = 16 if fl & NLM_F_CAPPED else struct.unpack_from("=I", body, 4)[0]
                        attrs = parse_attrs(body, 4 + ((echo + 3) & ~3))
                        text = attrs.get(NLMSGERR_ATTR_MSG, b"").split(b"\0")[0].decode(
                            "utf-8", "replace")
                    raise NetlinkError(err, text or os.strerror(err))
                out.append((typ, body))
                if not dump and not flags & NLM_F_ACK:
                    return out


# ---- links ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkInfo:
    """What rtnetlink says about one interface."""

    name: str
    ifindex: int
    mac: bytes
    mtu: int
    flags: int
    arptype: int
    kind: str  # IFLA_INFO_KIND: "veth", "bond", "macvlan", ... ("" for physical NICs)
    num_rx_queues: int
    num_tx_queues: int
    xdp_attached: str  # none | drv | skb | hw | multi
    xdp_prog_id: int
    xdp_drv_prog_id: int = 0
    xdp_skb_prog_id: int = 0
    promiscuity: int = 0

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def running(self) -> bool:
        return bool(self.flags & IFF_RUNNING)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)


def _parse_link(body: bytes) -> LinkInfo:
    _fam, arptype, index, flags, _chg = _IFINFO.unpack_from(body)
    a = parse_attrs(body, _IFINFO.size)
    kind = ""
    if IFLA_LINKINFO in a:
        li = parse_attrs(a[IFLA_LINKINFO])
        kind = li.get(IFLA_INFO_KIND, b"").split(b"\0")[0].decode()
    xdp = parse_attrs(a[IFLA_XDP]) if IFLA_XDP in a else {}
    attached = xdp.get(IFLA_XDP_ATTACHED, b"\0")[0]
    return LinkInfo(
        name=a.get(IFLA_IFNAME, b"").split(b"\0")[0].decode(),
        ifindex=index, mac=a.get(IFLA_ADDRESS, b""), mtu=_u32(a.get(IFLA_MTU), 0),
        flags=flags, arptype=arptype, kind=kind,
        num_rx_queues=_u32(a.get(IFLA_NUM_RX_QUEUES), 1),
        num_tx_queues=_u32(a.get(IFLA_NUM_TX_QUEUES), 1),
        xdp_attached=XDP_ATTACHED_NAMES.get(attached, str(attached)),
        xdp_prog_id=_u32(xdp.get(IFLA_XDP_PROG_ID)),
        xdp_drv_prog_id=_u32(xdp.get(IFLA_XDP_DRV_PROG_ID)),
        xdp_skb_prog_id=_u32(xdp.get(IFLA_XDP_SKB_PROG_ID)),
        promiscuity=_u32(a.get(IFLA_PROMISCUITY)),
    )


def ifindex(name: str) -> int:
    """ifindex of ``name`` in the caller's namespace; SetupError(ENODEV) if missing."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise SetupError(f"no network interface named {name!r} in this namespace",
                         errno=_errno.ENODEV,
                         hint="list interfaces with `ip link` (or `efvi info`)") from None


def link_info(name_or_index: str | int) -> LinkInfo:
    """:class:`LinkInfo` of one interface (by name or ifindex)."""
    idx = name_or_index if isinstance(name_or_index, int) else ifindex(name_or_index)
    with Netlink() as nl:
        try:
            replies = nl.request(RTM_GETLINK, NLM_F_REQUEST,
                                 _IFINFO.pack(0, 0, idx, 0, 0))
        except NetlinkError as exc:
            raise SetupError(f"cannot query interface {name_or_index!r}: {exc.strerror}",
                             errno=exc.errno or _errno.ENODEV) from None
    for typ, body in replies:
        if typ == RTM_NEWLINK:
            return _parse_link(body)
    raise SetupError(f"no reply about interface {name_or_index!r}", errno=_errno.ENODEV)


def links() -> list[LinkInfo]:
    """Every interface of the caller's namespace, in ifindex order."""
    with Netlink() as nl:
        replies = nl.request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP,
                             _IFINFO.pack(0, 0, 0, 0, 0))
    out = [_parse_link(b) for t, b in replies if t == RTM_NEWLINK]
    return sorted(out, key=lambda li: li.ifindex)


# ---- addresses and neighbours -------------------------------------------------------
@dataclass(frozen=True)
class Address:
    """One interface address: ``ip`` as text, ``prefixlen``, ``version``."""

    ip: str
    prefixlen: int
    version: int

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


def addresses(name_or_index: str | int) -> list[Address]:
    """IPv4 then IPv6 addresses of the interface."""
    idx = name_or_index if isinstance(name_or_index, int) else ifindex(name_or_index)
    out: list[Address] = []
    with Netlink() as nl:
        replies = nl.request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                             _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    for _typ, body in replies:
        fam, plen, _fl, _scope, index = _IFADDR.unpack_from(body)
        if index != idx:
            continue
        a = parse_attrs(body, _IFADDR.size)
        raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
        if raw is None:
            continue
        if fam == socket.AF_INET and len(raw) == 4:
            out.append(Address(socket.inet_ntop(socket.AF_INET, raw), plen, 4))
        elif fam == socket.AF_INET6 and len(raw) == 16:
            out.append(Address(socket.inet_ntop(socket.AF_INET6, raw), plen, 6))
    out.sort(key=lambda x: x.version)
    return out


def neighbours(name_or_index: str | int | None = None) -> Iterator[tuple[str, bytes, int]]:
    """(ip, mac, nud_state) of usable neighbour entries (optionally of one interface)."""
    idx = None
    if name_or_index is not None:
        idx = name_or_index if isinstance(name_or_index, int) else ifindex(name_or_index)
    with Netlink() as nl:
        replies = nl.request(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP,
                             _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    for _typ, body in replies:
        fam, index, state, _fl, _t = _NDMSG.unpack_from(body)
        if (idx is not None and index != idx) or state & (NUD_INCOMPLETE | NUD_FAILED) \
                or state == 0:
            continue
        a = parse_attrs(body, _NDMSG.size)
        dst, mac = a.get(NDA_DST), a.get(NDA_LLADDR)
        if dst is None or mac is None or len(mac) != 6 or mac == bytes(6):
            continue
        af = socket.AF_INET if fam == socket.AF_INET else socket.AF_INET6
        yield socket.inet_ntop(af, dst), mac, state


def neighbour(ip: str, name_or_index: str | int | None = None) -> bytes | None:
    """MAC of ``ip`` from the neighbour table (None if unknown). Does not send ARP."""
    want = ipaddress.ip_address(ip)
    for addr, mac, _state in neighbours(name_or_index):
        if ipaddress.ip_address(addr) == want:
            return mac
    return None


# ---- ethtool ---------------------------------------------------------------------------
def _ethtool(name: str, data: bytearray) -> bool:
    """Run one SIOCETHTOOL ioctl with ``data`` as the command struct; False if refused."""
    buf = array.array("B", data)
    addr, _ = buf.buffer_info()
    ifr = struct.pack("16sP", name.encode()[:15], addr) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
        except OSError:
            return False
    data[:] = buf.tobytes()
    return True


def driver_name(name: str) -> str:
    """The driver (``ethtool -i``), or the link kind (``veth``), or ``""``."""
    data = bytearray(struct.pack("=I", ETHTOOL_GDRVINFO) + bytes(192))
    if _ethtool(name, data):
        drv = bytes(data[4:36]).split(b"\0")[0].decode("utf-8", "replace")
        if drv:
            return drv
    try:
        return link_info(name).kind
    except SetupError:
        return ""


@dataclass(frozen=True)
class Channels:
    """ethtool channel counts (``ethtool -l``); ``rx_queues`` = RX + combined."""

    rx: int
    tx: int
    combined: int
    max_rx: int
    max_tx: int
    max_combined: int

    @property
    def rx_queues(self) -> int:
        return self.rx + self.combined

    @property
    def tx_queues(self) -> int:
        return self.tx + self.combined


def channels(name: str) -> Channels | None:
    """The queue counts the driver really uses, or None if it does not say."""
    data = bytearray(struct.pack("=I", ETHTOOL_GCHANNELS) + bytes(32))
    if not _ethtool(name, data):
        return None
    _cmd, mrx, mtx, _mo, mco, rx, tx, _o, co = struct.unpack("=9I", bytes(data))
    return Channels(rx, tx, co, mrx, mtx, mco)


def rx_queue_count(name: str) -> int:
    """RX queues an AF_XDP socket may bind to (ethtool channels, else rtnetlink)."""
    ch = channels(name)
    if ch is not None and ch.rx_queues > 0:
        return ch.rx_queues
    return max(1, link_info(name).num_rx_queues)


# ---- generic netlink: XDP features ------------------------------------------------------
def genl_family_id(nl: Netlink, family: str) -> int | None:
    payload = _GENL.pack(CTRL_CMD_GETFAMILY, 1, 0) + nla(CTRL_ATTR_FAMILY_NAME,
                                                         family.encode() + b"\0")
    try:
        replies = nl.request(GENL_ID_CTRL, NLM_F_REQUEST, payload)
    except NetlinkError:
        return None
    for _typ, body in replies:
        a = parse_attrs(body, _GENL.size)
        if CTRL_ATTR_FAMILY_ID in a:
            return int(struct.unpack_from("=H", a[CTRL_ATTR_FAMILY_ID])[0])
    return None


@dataclass(frozen=True)
class XdpFeatures:
    """NETDEV_XDP_ACT_* bits of a device (kernel ≥ 6.3), ``known`` False if unavailable."""

    bits: int = 0
    zc_max_segs: int = 0
    known: bool = False
    names: tuple[str, ...] = field(default=())

    @property
    def native(self) -> bool:
        return bool(self.bits & NETDEV_XDP_ACT_BASIC)

    @property
    def zero_copy(self) -> bool:
        return bool(self.bits & NETDEV_XDP_ACT_XSK_ZEROCOPY)


def xdp_features(name_or_index: str | int) -> XdpFeatures:
    """What XDP the driver supports natively, from the ``netdev`` genetlink family."""
    idx = name_or_index if isinstance(name_or_index, int) else ifindex(name_or_index)
    with Netlink(NETLINK_GENERIC) as nl:
        fam = genl_family_id(nl, "netdev")
        if fam is None:
            return XdpFeatures()
        try:
            replies = nl.request(fam, NLM_F_REQUEST,
                                 _GENL.pack(NETDEV_CMD_DEV_GET, 1, 0)
                                 + nla_u32(NETDEV_A_DEV_IFINDEX, idx))
        except NetlinkError:
            return XdpFeatures()
    for _typ, body in replies:
        a = parse_attrs(body, _GENL.size)
        raw = a.get(NETDEV_A_DEV_XDP_FEATURES)
        if raw is None:
            continue
        bits = struct.unpack_from("=Q", raw.ljust(8, b"\0"))[0]
        names = tuple(n for b, n in sorted(XDP_FEATURE_NAMES.items()) if bits & b)
        return XdpFeatures(bits, _u32(a.get(NETDEV_A_DEV_XDP_ZC_MAX_SEGS)), True, names)
    return XdpFeatures()


# ---- the adapter-facing summary ------------------------------------------------------------
def interface_info(name: str) -> InterfaceInfo:
    """:class:`~efvi._types.InterfaceInfo` of a real interface."""
    li = link_info(name)
    addrs = addresses(li.ifindex)
    return InterfaceInfo(
        name=li.name or name, ifindex=li.ifindex, mac=li.mac if len(li.mac) == 6 else bytes(6),
        ipv4=tuple(a.ip for a in addrs if a.version == 4),
        ipv6=tuple(a.ip for a in addrs if a.version == 6),
        mtu=li.mtu, driver=driver_name(li.name or name),
    )


def multicast_macs(name: str) -> list[bytes]:
    """Link-layer multicast addresses the interface accepts (``ip maddr``), best effort.

    Read from ``/proc/net/dev_mcast`` through the calling thread's namespace view.
    """
    out: list[bytes] = []
    try:
        with open("/proc/thread-self/net/dev_mcast") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[1] == name and len(parts[4]) == 12:
                    out.append(bytes.fromhex(parts[4]))
    except OSError:
        pass
    return out


# ---- network namespaces ---------------------------------------------------------------
_CLONE_NEWNET = 0x40000000


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def current_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class NetnsHandle:
    """The namespace an adapter was opened in; control-path calls run inside it
    (``with handle.enter(): ...``), so a driver opened in one namespace keeps working
    from a thread that has since moved."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Run the block in this namespace (a no-op if the thread is already there)."""
        if current_netns_inode() == self.inode:
            yield
            return
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _LIBC.setns(self.fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise SetupError("cannot enter the adapter's network namespace", errno=err,
                                 hint="needs CAP_SYS_ADMIN")
            try:
                yield
            finally:
                _LIBC.setns(own, _CLONE_NEWNET)
        finally:
            os.close(own)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
