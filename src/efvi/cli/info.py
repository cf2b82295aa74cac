"""``efvi info [IFNAME] [--json]``: interfaces, queues, drivers, XDP support, capabilities.

For each interface of the current network namespace (or just IFNAME): ifindex, MAC,
MTU, state, driver, RX/TX queues, addresses, the XDP program attached (if any, and
whether efvi owns it), the driver's XDP features (native mode, AF_XDP zero-copy) and
what each adapter would offer on it. Read-only: nothing is attached or changed (the
``xdp`` column is derived from the interface's facts, not by opening the adapter).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from efvi import netutil
from efvi.cli.common import emit_json
from efvi.errors import EfviError


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
    from efvi.adapters.packet.ring import ts_info
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
    return info


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


def _print(d: dict[str, Any]) -> None:
    print(f"{d['name']} (ifindex {d['ifindex']}): {d['state']}, mac {d['mac']}, "
          f"mtu {d['mtu']}, driver {d['driver'] or d['kind'] or '?'}")
    print(f"  queues: {d['rx_queues']} rx / {d['tx_queues']} tx")
    if d["addresses"]:
        print(f"  addresses: {' '.join(d['addresses'])}")
    prog = d["xdp_program"]
    if prog:
        who = (f"efvi pid {prog['efvi_pid']}" + ("" if prog.get("owner_alive") else " (dead)")
               if "efvi_pid" in prog else "not efvi")
        print(f"  xdp program: {d['xdp_attached']} mode, {prog['name']!r} id {prog['id']} ({who})")
    else:
        print("  xdp program: none attached")
    feats = d["xdp_features"]
    print(f"  xdp features: {', '.join(feats) if feats else ('none' if feats == [] else 'unknown')}")
    for name, caps in d["adapters"].items():
        if not caps.get("usable"):
            print(f"  {name}: unusable — {caps.get('why_not')}")
            continue
        flags = [k for k in ("steal", "sniff", "zero_copy", "hw_timestamps", "pio", "vi_sets")
                 if caps.get(k)]
        extra = f", modes {'/'.join(caps['modes'])}" if "modes" in caps else ""
        print(f"  {name}: {' '.join(flags)}; rx queues {caps.get('rx_queues')}{extra}")
        if caps.get("hw_timestamps_why_not"):
            print(f"    no hardware RX timestamps: {caps['hw_timestamps_why_not']}")


def run(args: argparse.Namespace) -> int:
    if args.ifname:
        links = [netutil.link_info(args.ifname)]
    else:
        links = netutil.links()
    sim = _adapter_caps("sim")
    items = [describe(li, with_packet=not args.no_packet) for li in links]
    if args.json:
        emit_json({"interfaces": items, "sim": sim})
    else:
        for d in items:
            _print(d)
        print(f"sim: always available (steal sniff pio vi_sets; virtual clock)")
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser(
        "info", help="interfaces, queues, drivers, XDP support and adapter capabilities",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ifname", nargs="?", help="one interface (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--no-packet", action="store_true",
                   help="do not open the packet adapter to report its capabilities")
    p.set_defaults(func=run)
