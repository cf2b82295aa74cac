"""The ``xdp`` adapter through ``efvid``: the interface program lives in the broker.

:class:`BrokeredProgram` stands in for :class:`~efvi.adapters.xdp.link.InterfaceProgram`
when the process lacks the privileges to load programs, create AF_XDP sockets or pin
memory (see :func:`efvi.broker.client.use_broker`). Every call that changes the
interface — UMEM registration, socket creation and bind, XSKMAP slots, filter-table
entries, classic-BPF filters — is one request to the broker, which checks it against
its policy and the caller's credentials and does it; sockets come back as descriptors
(``SCM_RIGHTS``) whose rings this process maps. The UMEM is the region's ``memfd``,
sent to the broker and registered there, so the data path (rings and buffers) never
crosses the broker.

Control path only. A refused request raises SetupError with the broker's reason.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from efvi.adapters.xdp.program import MAX_QUEUES
from efvi.adapters.xdp.xsk import AF_XDP, XskSocket
from efvi.broker.client import BrokerClient
from efvi.broker.specs import spec_to_wire
from efvi.errors import SetupError

if TYPE_CHECKING:
    from efvi.filters import FilterSpec
    from efvi.adapters.base import RegisteredRegion


class BrokeredProgram:
    """The broker-side interface program, as the PD and VIs of this process see it."""

    def __init__(self, iface: str, queue: int | None, options: dict[str, Any],
                 path: str | None = None) -> None:
        self.client = BrokerClient(path)
        try:
            res, _ = self.client.call("xdp.open", iface=iface, queue=queue,
                                      options={k: str(v) for k, v in options.items()})
        except BaseException:
            self.client.close()
            raise
        self.handle: int = res["adapter"]
        self.mode: str = res["mode"]
        self.hw_kfunc: bool = res["hw_kfunc"]
        self.hw_note: str = res["hw_note"]
        self.frags: bool = res["frags"]
        self.broker_pid: int = int(self.client.info.get("pid", 0))
        #: this process's view (the broker holds the interface-wide tables)
        self.filters: dict[bytes, tuple[int, bool]] = {}
        self.bpf_filters: dict[int, tuple[Sequence[object], int]] = {}
        self.queue_owner: dict[int, Any] = {}
        self._sock_ids: dict[int, int] = {}  # our socket fd -> the broker's socket id
        self._specs: dict[bytes, dict[str, Any]] = {}
        self._umems: dict[int, int] = {}  # id(region mapping) -> broker UMEM id

    # ---- memory and sockets ------------------------------------------------------------
    def register_umem(self, region: "RegisteredRegion", umem_addr: int, umem_len: int) -> int:
        """Send the region's memfd; the broker maps and later registers it."""
        fd = region.memfd
        if fd is None:
            raise SetupError("this memory region is not shareable with efvid",
                             errno=_errno.EINVAL,
                             hint="allocate it after opening the driver through the broker")
        base = region.headroom_address or region.address
        res, _ = self.client.call("xdp.umem", fds=[fd], adapter=self.handle,
                                  size=region.headroom + region.nbytes,
                                  umem_offset=umem_addr - base, umem_len=umem_len)
        umem: int = res["umem"]
        return umem

    def open_socket(self, umem: int, queue: int, *, rx_size: int, tx_size: int,
                    fill_size: int, comp_size: int, sg: bool) -> XskSocket:
        """An AF_XDP socket the broker created, registered and bound; rings mapped here."""
        res, fds = self.client.call("xdp.socket", adapter=self.handle, umem=umem, queue=queue,
                                    rx_size=rx_size, tx_size=tx_size, fill_size=fill_size,
                                    comp_size=comp_size, sg=sg)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SetupError("efvid answered xdp.socket without a socket", errno=_errno.EPROTO)
        sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0, fileno=fds[0])
        s = XskSocket(0, queue, umem_addr=0, umem_len=0, rx_size=rx_size, tx_size=tx_size,
                      fill_size=fill_size, comp_size=comp_size, configured=sock)
        s.broker_id = int(res["socket"])
        s.zerocopy = bool(res.get("zerocopy", s.zerocopy))
        self._sock_ids[s.fd] = s.broker_id
        return s

    def hold_queue(self, queue: int, pid: int) -> None:
        """No-op: efvid records its clients' queues itself (with their pids)."""

    # ---- targets and XSKMAP slots ------------------------------------------------------
    def alloc_target(self) -> int:
        t: int = self.client.call("xdp.target", adapter=self.handle)[0]["target"]
        return t

    def free_target(self, t: int) -> None:
        if self.client.sock.fileno() >= 0:
            self.client.call("xdp.target_free", adapter=self.handle, target=t)

    def set_slot(self, slot: int, sock_fd: int) -> None:
        self.client.call("xdp.slot", adapter=self.handle, target=slot // MAX_QUEUES,
                         queue=slot % MAX_QUEUES, socket=self._sock_ids[sock_fd])

    def clear_slot(self, slot: int) -> None:
        if self.client.sock.fileno() >= 0:
            self.client.call("xdp.slot", adapter=self.handle, target=slot // MAX_QUEUES,
                             queue=slot % MAX_QUEUES, socket=None)

    # ---- filters -----------------------------------------------------------------------
    def insert(self, key: bytes, bit: int, target: int, multicast: bool,
               spec: "FilterSpec | None" = None) -> None:
        if spec is None:
            raise SetupError("a brokered filter needs its spec", errno=_errno.EINVAL)
        wire = spec_to_wire(spec)
        self.client.call("xdp.filter_add", adapter=self.handle, spec=json.dumps(wire),
                         target=target)
        self.filters[key] = (target, multicast)
        self._specs[key] = wire

    def remove(self, key: bytes, bit: int, spec: "FilterSpec | None" = None) -> None:
        wire = self._specs.pop(key, None)
        if self.filters.pop(key, None) is None or wire is None:
            return
        if self.client.sock.fileno() >= 0:
                self.client.call("xdp.filter_del", adapter=self.handle, spec=json.dumps(wire))

    def add_bpf(self, program: Sequence[object], target: int) -> int:
        insns = [[int(x) for x in i] for i in program]  # type: ignore[attr-defined]
        token: int = self.client.call("xdp.bpf_add", adapter=self.handle, program=insns,
                                      target=target)[0]["token"]
        self.bpf_filters[token] = (program, target)
        return token

    def remove_bpf(self, token: int) -> None:
        if self.bpf_filters.pop(token, None) is not None and self.client.sock.fileno() >= 0:
            self.client.call("xdp.bpf_del", adapter=self.handle, token=token)

    def refresh_kernel_macs(self, own_mac: bytes) -> None:
        self.client.call("xdp.kernel_macs", adapter=self.handle)

    # ---- lifetime ----------------------------------------------------------------------
    def release(self) -> None:
        """Close the connection: the broker removes our filters, slots and sockets."""
        if self.client.sock.fileno() >= 0:
            try:
                self.client.call("close", adapter=self.handle)
            except SetupError:
                pass
            self.client.close()
