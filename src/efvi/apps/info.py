"""What ``efvi info`` reports: interfaces, queues, drivers, XDP support, capabilities.

For each interface of the current network namespace (or just one): ifindex, MAC, MTU,
state, driver, RX/TX queues, addresses, the XDP program attached (if any, and whether
efvi owns it), the driver's XDP features (native mode, AF_XDP zero-copy) and what each
adapter would offer on it. Read-only: nothing is attached or changed (the ``xdp``
entry is derived from the interface's facts, not by opening the adapter; ``packet``
and ``sim`` are opened and closed again to read their capabilities).
"""

from __future__ import annotations

import os
from typing import Any

from efvi import netutil
from efvi.errors import EfviError

__all__ = ["describe", "report"]


def _xdp_caps(li: netutil.LinkInfo, feats: netutil.XdpFeatures, rxq: int) -> dict[str, Any]:
    from efvi.adapters.xdp.adapter import MAX_RX_FRAME
    usable = li.up and len(li.mac) == 6 and li.mtu + 22 <= MAX_RX_FRAME
    why = ""
    if not li.up:
        why = "interface is down"
    elif len(li.mac) != 6:
        why = "not an Ethernet interface (use packet)"
    elif li.mtu + 22 > MAX_RX_FRAME:
        why = f"MTU {li.mtu} exceeds an AF_XDP buffer (max {MAX_RX_FRAME - 22})"
    return {
        "adapter": "xdp", "usable": usable, "why_not": why, "steal": True, "sniff": False,
        "zero_copy": feats.zero_copy, "native_xdp": feats.native if feats.known else None,
        "modes": (["drv", "skb"] if (feats.native or not feats.known) else ["skb"]),
        "rx_timestamps": "xdp-sw", **_hw_ts(li, feats),
        "pio": True, "vi_sets": True, "multi_region": False,
        "rx_queues": rxq, "multicast_replication": False,
    }


def _hw_ts(li: netutil.LinkInfo, feats: netutil.XdpFeatures) -> dict[str, Any]:
    """Whether the xdp adapter's RX-timestamp kfunc program can give hardware stamps."""
    from efvi.hwts import ts_info
    from efvi.bpf.syscall import VMLINUX_BTF, btf_find_func
    from efvi.adapters.xdp.program import RX_TS_KFUNC
    why = ""
    if btf_find_func(RX_TS_KFUNC) is None:
        why = f"kernel has no {RX_TS_KFUNC} kfunc in {VMLINUX_BTF}: software stamps only"
    elif feats.known and not feats.native:
        why = "no native XDP (the kfunc needs a device-bound drv-mode program)"
    elif not ts_info(li.name).hw_rx:
        why = "driver reports no raw hardware RX timestamps (ethtool -T)"
    return {"hw_timestamps": not why, "hw_timestamps_why_not": why}


def _adapter_caps(url: str) -> dict[str, Any]:
    from efvi import Driver
    try:
        d = Driver.open(url)
    except EfviError as exc:
        return {"usable": False, "why_not": str(exc)}
    try:
        return {"usable": True, **d.capabilities.as_dict()}
    finally:
        d.close()


def _owner(prog_id: int) -> dict[str, Any] | None:
    if not prog_id:
        return None
    try:
        from efvi.bpf.syscall import prog_name_by_id
        name = prog_name_by_id(prog_id)
    except EfviError:
        name = None
    info: dict[str, Any] = {"id": prog_id, "name": name}
    if name and name.startswith("efvi_") and name[5:].isdigit():
        pid = int(name[5:])
        info["efvi_pid"] = pid
        info["owner_alive"] = os.path.exists(f"/proc/{pid}")
        info["queue_holders"] = _queue_holders(prog_id)
        from efvi.adapters.xdp.link import displaced_of
        info["displaced"] = displaced_of(prog_id)  # foreign programs it put aside (force=1)
    return info


def _queue_holders(prog_id: int) -> list[dict[str, Any]] | None:
    """Which process holds which RX queue (AF_XDP allows one fill ring, so one
    socket, per queue): the owner records in efvi's program's config map. None when
    they cannot be read (an older efvi's program, or no CAP_BPF here)."""
    from efvi.adapters.xdp.link import queue_holders
    held = queue_holders(prog_id)
    if held is None:
        return None
    out = []
    for q, pid in sorted(held.items()):
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                comm: str | None = f.read().strip()
        except OSError:
            comm = None
        out.append({"queue": q, "pid": pid, "alive": comm is not None, "comm": comm})
    return out


def describe(li: netutil.LinkInfo, with_packet: bool = True) -> dict[str, Any]:
    """Everything ``efvi info`` reports about one interface."""
    ch = netutil.channels(li.name)
    rxq = ch.rx_queues if ch and ch.rx_queues else li.num_rx_queues
    txq = ch.tx_queues if ch and ch.tx_queues else li.num_tx_queues
    feats = netutil.xdp_features(li.ifindex)
    out: dict[str, Any] = {
        "name": li.name, "ifindex": li.ifindex,
        "mac": ":".join(f"{b:02x}" for b in li.mac), "mtu": li.mtu,
        "state": "up" if li.up else "down", "running": li.running,
        "driver": netutil.driver_name(li.name), "kind": li.kind,
        "rx_queues": rxq, "tx_queues": txq,
        "addresses": [str(a) for a in netutil.addresses(li.ifindex)],
        "xdp_attached": li.xdp_attached, "xdp_program": _owner(li.xdp_prog_id),
        "xdp_features": list(feats.names) if feats.known else None,
        "adapters": {"xdp": _xdp_caps(li, feats, rxq)},
    }
    if with_packet:
        out["adapters"]["packet"] = _adapter_caps(f"packet:{li.name}")
    return out


def report(ifname: str | None = None, *, with_packet: bool = True) -> dict[str, Any]:
    """``{"interfaces": [describe(...) ...], "sim": {...}}`` for one or every interface.

    Raises SetupError (ENODEV) when ``ifname`` does not exist."""
    links = [netutil.link_info(ifname)] if ifname else netutil.links()
    sim = _adapter_caps("sim")
    return {"interfaces": [describe(li, with_packet=with_packet) for li in links], "sim": sim,
            "access": access()}


def access() -> dict[str, Any]:
    """How this process reaches the kernel adapters: ``direct`` (it holds the
    capabilities) or ``broker`` (through efvid: its socket, and whether it answers)."""
    import socket as _socket

    from efvi.broker.client import socket_path, use_broker

    path = socket_path()
    try:
        with _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET) as s:
            s.connect(path)
        running = True
    except OSError:
        running = False
    from efvi.caps import missing

    return {"xdp": "broker" if use_broker("xdp", "auto") else "direct",
            "packet": "broker" if use_broker("packet", "auto") else "direct",
            "missing_capabilities": {a: missing(a) for a in ("xdp", "packet")},
            "broker_socket": path, "broker_running": running}
