"""The ``xdp`` adapter: ef_vi over AF_XDP (``xdp:IFNAME[@QUEUE][?mode=&zerocopy=&force=&ts=]``).

Model mapping:

* **PD ↔ UMEM.** A PD's one memory region is the UMEM (``multi_region=False``),
  registered in unaligned-chunk mode so TX may start anywhere. The region's mapping
  starts with a 128 KiB headroom (``XdpAdapter.region_headroom``: the core maps it
  in the same mapping, right below the region) registered as part of the UMEM: its
  first 64 KiB hold the VIs' PIO areas (pre-staged frames sent straight from UMEM),
  the other 64 KiB the TX *bounce frames* (32 × 2048 bytes, :data:`BOUNCE_PER_VI` per
  VI) that gathered packets are copied into; so DMA address = UMEM offset and the
  region's DMA base is 128 KiB.
* **VI ↔ AF_XDP sockets.** A VI on ``xdp:IF`` gets one socket per RX queue (one merged
  event queue; ``q_id`` of an RX event is the hardware queue), ``xdp:IF@Q`` or
  ``VirtualInterface(queue=Q)`` one socket on queue Q; VISet member *i* binds queue
  *i*. Sockets are created on first use (first post, transmit, or filter once memory
  is registered) — that call may raise SetupError. Sockets of one PD share its UMEM
  (``XDP_SHARED_UMEM``), each with its own FILL/COMPLETION pair.
* **One VI per RX queue per process.** AF_XDP has one FILL ring per (device, queue), so
  two VIs receiving on one queue would take each other's buffers; a second VI that
  needs a socket on a busy queue gets SetupError(EBUSY). Use ``@Q``/VI sets on a
  multi-queue interface for several VIs.
* **Modules.** This one holds :class:`XdpAdapter` (setup and attach); ``pd.py`` the
  UMEM and filters; ``vibase.py`` a VI's sockets (control path); ``rx.py`` and
  ``tx.py`` the data path; ``vi.py`` assembles the VI; ``link.py``/``program.py`` the
  interface program; ``xsk.py`` the AF_XDP socket and rings.
* **Filters** are entries of the interface program's BPF hash table
  (:mod:`efvi.adapters.xdp.program`); ``bpf`` filters (classic BPF, e.g. a tcpdump
  expression) are translated to eBPF inside the program itself, after the table's
  levels, so adding or removing one loads a new program and swaps it in through the
  bpf_link (the maps, sockets and other filters stay). Steal only (sniff → UnsupportedError naming
  ``packet``). An identical filter already installed → FilterExistsError; for a
  multicast destination held by another VI → UnsupportedError: XDP redirects a frame
  to exactly one socket, so **multicast replication across VIs is not supported** on
  xdp (use one VI per group, or the sim adapter).
* **RX** events come from the RX rings: ``ofs`` = 256 (the kernel's headroom),
  ``ts_ns`` = the program's ``bpf_ktime_get_ns`` converted to CLOCK_REALTIME
  (clock source ``xdp-sw``). **Hardware RX timestamps** (``ts=auto``, the default, or
  ``ts=hw``): in native mode the program is loaded device-bound with the
  ``bpf_xdp_metadata_rx_timestamp`` kfunc (:mod:`efvi.adapters.xdp.link`); a frame the
  driver stamped carries the NIC clock's ns (raw, not converted: a PHC, usually kept
  on TAI/UTC by ptp4l) and the per-event flag :data:`RX_FLAG_HW_TS` in ``flags``;
  other frames keep the software stamp. The VI's ``clock_source`` turns ``hw`` at the
  first hardware-stamped frame (per VI; the flag is per event) and stays ``xdp-sw``
  on drivers that implement the kfunc without a clock (veth) or when the kfunc
  program could not be used (skb mode, old kernel, driver refusal: the plain program
  is loaded silently, ``capabilities.hw_timestamps`` is False and
  ``XdpAdapter.rx_timestamp_info`` says why). Drivers such as mlx5/ice only stamp
  when RX hardware timestamping is enabled on the interface (ptp4l or
  ``hwstamp_ctl -r 1``); efvi does not change that global setting. Frames longer
  than a buffer (2048 − 256): when the interface's MTU allows them and the driver
  reports ``rx-sg`` (veth does), the program is loaded frags-aware
  (``BPF_F_XDP_HAS_FRAGS``), sockets bind with ``XDP_USE_SG`` and such a frame arrives
  as a chain of buffers — RX events SOP|CONT, CONT…, then the last without CONT,
  ``len`` cumulative (ef_vi's jumbo convention; ``poll_rx1`` leaves chains to
  ``poll``); without rx-sg the VI is refused (EMSGSIZE). Frames the kernel still
  cannot place are dropped and counted (``rx_trunc_drops``). TX stays one chunk per
  frame (≤ 2048 bytes).
* **TX** descriptors go to the TX ring; ``sendto`` kicks when the kernel sets
  need_wakeup (always, in copy mode). Completions come back in order and become TX
  events (≤ 64 descriptors each, ``rq_id`` = cumulative count). A packet of several
  descriptors (``transmitv``, gather) is sent as one AF_XDP descriptor: in place when
  the pieces are adjacent in memory, else copied into one of the VI's bounce frames
  (``tx_bounced`` counts them), which is reused once the kernel completed it; its ids
  complete in order with the other sends. A packet longer than 2048 bytes completes
  as TX_ERROR (TOO_BIG); so does a gathered one when the PD has no bounce frames (no
  reserve area could be mapped, or 4+ VIs took them all) or the VI's are all still in
  flight after a kick (BUS); both count in ``tx_error_drops``.
"""

from __future__ import annotations
import errno as _errno
import platform
import time

from efvi import netutil
from efvi.adapters.base import Adapter, Capabilities, HwProtectionDomain, InterfaceInfo
from efvi.adapters.xdp._common import (MAX_RX_FRAME, RESERVE, RX_FLAG_HW_TS, _OPTIONS)
from efvi.adapters.xdp.brokered import BrokeredProgram
from efvi.adapters.xdp.link import InterfaceProgram
from efvi.adapters.xdp.pd import XdpPD
from efvi.adapters.xdp.program import MAX_QUEUES
from efvi.adapters.xdp.vi import XdpVI
from efvi.broker.client import use_broker
from efvi.linkstate import LinkProbe
from efvi.errors import SetupError, UnsupportedError
from efvi.filters import FilterKind
from efvi.netutil import NetnsHandle

NETDEV_XDP_ACT_RX_SG = 32

__all__ = ["MAX_RX_FRAME", "RX_FLAG_HW_TS", "XdpAdapter", "XdpPD", "XdpVI"]


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("1", "true", "yes", "on")


class XdpAdapter(Adapter):
    """An interface driven through AF_XDP (see the module doc)."""

    name = "xdp"
    region_headroom = RESERVE

    def __init__(self, iface: str, queue: int | None, options: dict[str, str]) -> None:
        super().__init__(iface, queue, options)
        self._closed = True
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise SetupError(
                f"the xdp adapter needs x86-64 (found {platform.machine()})",
                errno=_errno.EOPNOTSUPP,
                hint="AF_XDP rings need memory barriers pure Python cannot emit on this "
                     "architecture; use the packet adapter")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise SetupError(f"unknown xdp option(s) {sorted(unknown)}", errno=_errno.EINVAL,
                             hint="options: mode=auto|drv|skb, zerocopy=auto|0|1, force=1, "
                                  "ts=auto|sw|hw, busy_poll=USEC, busy_budget=N")
        if not iface:
            raise SetupError("xdp needs an interface: xdp:IFNAME[@QUEUE]", errno=_errno.EINVAL)
        self.mode = options.get("mode", "auto").lower()
        self.busy_poll = int(options.get("busy_poll", "0"))
        self.busy_budget = int(options.get("busy_budget", "64"))
        zc = options.get("zerocopy", "auto").lower()
        self.zerocopy: bool | None = None if zc in ("auto", "") else _truthy(zc)
        force = _truthy(options.get("force"))
        self.netns = NetnsHandle()
        self._probe: LinkProbe | None = None
        try:
            li = netutil.link_info(iface)
            if not li.up:
                raise SetupError(f"interface {iface} is down", errno=_errno.ENETDOWN,
                                 hint=f"run: ip link set {iface} up")
            if len(li.mac) != 6:
                raise SetupError(f"{iface} is not an Ethernet interface", errno=_errno.EINVAL,
                                 hint=f"use packet:{iface}")
            self.ifindex = li.ifindex
            self.mac = li.mac
            self.mtu = li.mtu
            self.nqueues = min(netutil.rx_queue_count(iface), MAX_QUEUES)
            if queue is not None and queue >= self.nqueues:
                raise SetupError(
                    f"{iface} has {self.nqueues} RX queue(s) (0..{self.nqueues - 1}); "
                    f"queue {queue} does not exist", errno=_errno.EINVAL,
                    hint=f"use xdp:{iface}@0..{self.nqueues - 1}, or add queues: "
                         f"ethtool -L {iface} combined {queue + 1}")
            self.features = netutil.xdp_features(iface)
            self._info = netutil.interface_info(iface)
            # jumbo MTU: frames span several UMEM chunks (multi-buffer AF_XDP, XDP_USE_SG,
            # a frags-aware program) where the driver reports rx-sg (veth does)
            self.sg = self.mtu + 22 > MAX_RX_FRAME
            self.sg_ok = bool(self.features.bits & NETDEV_XDP_ACT_RX_SG) \
                or not self.features.known
            #: the efvid connection's program when this process lacks the privileges
            #: (URL option broker=auto|0|1, EFVI_BROKER); None: direct
            self.broker: BrokeredProgram | None = None
            self.program: InterfaceProgram | BrokeredProgram
            if use_broker("xdp", options.get("broker", "auto")):
                self.broker = BrokeredProgram(iface, queue, {
                    k: v for k, v in options.items() if k != "broker"})
                self.program = self.broker
                # the UMEM is a memfd the broker registers (and pins) for us
                self.shared_memory = True
                self.requires_locked_memory = False
            else:
                self.program = InterfaceProgram.acquire(iface, self.ifindex, self.netns,
                                                        self.mode, force,
                                                        options.get("ts", "auto").lower(),
                                                        frags=self.sg and self.sg_ok)
            self._ts_hw_rx = _driver_hw_rx(iface)
            if options.get("ts", "auto").lower() == "hw" and not self._ts_hw_rx:
                self.program.release()
                raise UnsupportedError(
                    f"{iface} gives no raw hardware RX timestamps (see `ethtool -T {iface}`): "
                    f"xdp:{iface}?ts=hw refuses rather than stamping in software; use ts=auto "
                    "or ts=sw, or a NIC with a PTP clock")
        except BaseException:
            self.netns.close()
            raise
        self._closed = False

    @property
    def capabilities(self) -> Capabilities:
        zc = self.features.zero_copy and self.zerocopy is not False
        kinds = frozenset(k.name.lower() for k in FilterKind
                          if k not in (FilterKind.NONE, FilterKind.ALL))
        # tx_timestamps: AF_XDP gives them only through TX metadata (XDP_TX_METADATA,
        # tx_metadata_len in the UMEM registration, XDP_TXMD_FLAGS_TIMESTAMP), which
        # needs driver support (mlx5, stmmac, igc...); veth and generic (skb) mode have
        # none, and we do not implement the metadata path: declared absent
        return Capabilities(
            adapter="xdp", steal=True, sniff=False, zero_copy=bool(zc), rx_timestamps=True,
            tx_timestamps=False, hw_timestamps=self.program.hw_kfunc and self._ts_hw_rx,
            pio=True, vi_sets=True,
            multi_region=False, mcast_replicate=False,
            rx_queues=1 if self.queue is not None else self.nqueues, filter_kinds=kinds)

    def interface_info(self) -> InterfaceInfo:
        return self._info

    @property
    def rx_timestamp_info(self) -> dict[str, object]:
        """How RX frames are stamped: ``kfunc`` (device-bound program calling
        ``bpf_xdp_metadata_rx_timestamp``, software stamp when the driver has none) or
        ``ktime`` (software only), whether the driver reports hardware RX stamps
        (``ethtool -T``), and why hardware stamps are not possible (``why_not``)."""
        p = self.program
        why = p.hw_note
        if p.hw_kfunc and not self._ts_hw_rx:
            why = (f"{self.iface}'s driver reports no raw hardware RX timestamps "
                   "(ethtool -T); frames keep software stamps")
        return {"path": "kfunc" if p.hw_kfunc else "ktime", "driver_hw_rx": self._ts_hw_rx,
                "hw_timestamps": p.hw_kfunc and self._ts_hw_rx, "why_not": why}

    def resolve_neighbour(self, ip: str) -> bytes | None:
        with self.netns.enter():
            return netutil.neighbour(ip, self.ifindex)

    def alloc_pd(self) -> HwProtectionDomain:
        if self._closed:
            raise SetupError("adapter is closed", errno=_errno.EBADF)
        return XdpPD(self)

    def now_ns(self) -> int:
        """CLOCK_REALTIME in int ns (RX timestamps are converted to it)."""
        return time.clock_gettime_ns(time.CLOCK_REALTIME)

    @property
    def attach_mode(self) -> str:
        return self.program.mode

    def link_state(self) -> str:
        """``up`` | ``no-carrier`` | ``down`` | ``gone`` (two ioctls; see the base)."""
        if self._closed:
            return "gone"
        if self._probe is None:
            with self.netns.enter():
                self._probe = LinkProbe(self.ifindex)
        return self._probe.state()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._probe is not None:
            self._probe.close()
        self.program.release()
        self.netns.close()


def _driver_hw_rx(iface: str) -> bool:
    """The driver lists raw hardware RX timestamps and a PHC (``ethtool -T``)."""
    from efvi.hwts import ts_info
    return ts_info(iface).hw_rx

