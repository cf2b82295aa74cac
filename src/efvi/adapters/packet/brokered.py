"""The ``packet`` adapter through ``efvid``.

An unprivileged process cannot open AF_PACKET sockets (CAP_NET_RAW). Through the
broker, each VI's socket is made by ``efvid``: ring set, the classic-BPF program
compiled from the VI's filter specs attached and **locked** (``SO_LOCK_FILTER``), then
bound and passed back; this process maps its rings. Because the filter is locked, a
filter change (``filter_add``/``filter_del``) makes a new socket with the new program,
which the VI switches to (:meth:`PacketVIBase._swap_socket`): frames still waiting in
the old ring are counted in ``rx_swap_drops``. Add a VI's filters before traffic
starts, as ef_vi applications do.

Not through the broker: promiscuous/all-multicast memberships and the
``*-mismatch`` kinds (they need other clients' filters); both raise
UnsupportedError naming the way out (run as root).

Control path only.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
from typing import TYPE_CHECKING, Any

from efvi.adapters.packet.filter_prog import compile_filters
from efvi.adapters.packet.ring import PacketSocket
from efvi.broker.client import BrokerClient
from efvi.broker.specs import spec_to_wire
from efvi.errors import SetupError

if TYPE_CHECKING:
    from efvi.filters import FilterSpec

_MAX_SLOTS = 1 << 22


class PacketBroker:
    """This process's connection to efvid for one ``packet:IFNAME`` driver."""

    def __init__(self, iface: str, options: dict[str, Any], path: str | None = None) -> None:
        self.client = BrokerClient(path)
        try:
            res, _ = self.client.call("packet.open", iface=iface,
                                      options={k: str(v) for k, v in options.items()})
        except BaseException:
            self.client.close()
            raise
        self.handle: int = res["adapter"]

    def socket(self, specs: "list[FilterSpec]", *, rx_slots: int, rx_frame: int,
               tx_slots: int, tx_frame: int,
               blocks: tuple[int, int, int] | None,
               replaces: PacketSocket | None = None) -> PacketSocket:
        """A bound socket whose locked filter passes exactly ``specs`` (the broker
        closes its copy of ``replaces``, the socket it supersedes)."""
        res, fds = self.client.call(
            "packet.socket", adapter=self.handle, rx_slots=rx_slots, rx_frame=rx_frame,
            tx_slots=tx_slots, tx_frame=tx_frame,
            blocks=list(blocks) if blocks else None,
            filters=[spec_to_wire(s) for s in specs], fanout=None,
            replaces=getattr(replaces, "broker_id", None))
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SetupError("efvid answered packet.socket without a socket",
                             errno=_errno.EPROTO)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0, fileno=fds[0])
        ps = PacketSocket("", rx_slots, rx_frame, tx_slots, tx_frame, blocks=blocks,
                          configured=sock)
        ps.broker_id = int(res["socket"])
        return ps

    def close(self) -> None:
        if self.client.sock.fileno() >= 0:
            try:
                self.client.call("close", adapter=self.handle)
            except SetupError:
                pass
            self.client.close()


def make_locked_socket(adapter: Any, specs: "list[FilterSpec]",
                       args: dict[str, Any]) -> socket.socket:
    """Broker side: the socket for ``packet.socket`` — ring, locked filter, bound.

    Returns the socket object (the broker keeps it; its descriptor goes to the client)."""
    rx_slots, tx_slots = args["rx_slots"], args["tx_slots"]
    rx_frame, tx_frame = args["rx_frame"], args["tx_frame"]
    for name, v in (("rx_slots", rx_slots), ("tx_slots", tx_slots)):
        if not 0 <= v <= _MAX_SLOTS:
            raise SetupError(f"{name}={v} is outside 0..{_MAX_SLOTS}", errno=_errno.EINVAL)
    for name, v in (("rx_frame", rx_frame), ("tx_frame", tx_frame)):
        if not 0 <= v <= 65535 + 18:
            raise SetupError(f"{name}={v} is outside 0..65553", errno=_errno.EINVAL)
    blocks = None
    b = args["blocks"]
    if b is not None:
        if len(b) != 3 or not all(isinstance(x, int) and x > 0 for x in b) \
                or b[0] > 1 << 24 or b[1] > 1 << 16 or b[2] > 1000:
            raise SetupError(f"blocks={b} is not (block_size, block_nr, retire_ms)",
                             errno=_errno.EINVAL)
        blocks = (b[0], b[1], b[2])
    prog = compile_filters(specs, snaplen=adapter.snaplen, direction=adapter.direction)
    with adapter._ns.enter():
        s = PacketSocket(adapter.iface, rx_slots, rx_frame, tx_slots, tx_frame,
                         qdisc_bypass=adapter.qdisc_bypass, hw_timestamps=adapter.hw_ts,
                         reject_all=compile_filters([]), blocks=blocks, unmapped=True,
                         locked_filter=prog)
    assert s.sock is not None
    sock = s.sock
    s.sock = None  # the broker keeps the socket object; nothing is mapped here
    return sock
