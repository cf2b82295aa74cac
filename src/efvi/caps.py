"""The Linux capabilities each adapter's direct path needs, in one place.

``efvi info`` prints which of them this process lacks; adapters name the missing
ones in their EPERM/EACCES errors; :mod:`efvi.broker.client` uses the same table to
decide whether to go through ``efvid`` (docs/security.md).
"""

from __future__ import annotations

#: capability name -> bit number in /proc/PID/status CapEff
CAPS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_SYS_ADMIN": 21,
        "CAP_PERFMON": 38, "CAP_BPF": 39}

#: adapter -> (capability, why) for every step of its direct path
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "xdp": (("CAP_NET_ADMIN", "attach the XDP program"),
            ("CAP_BPF", "create maps and load the program"),
            ("CAP_PERFMON", "the verifier allows the program's packet-pointer arithmetic"),
            ("CAP_NET_RAW", "create AF_XDP sockets"),
            ("CAP_IPC_LOCK", "pin the UMEM beyond RLIMIT_MEMLOCK")),
    "packet": (("CAP_NET_RAW", "create AF_PACKET sockets, promiscuous memberships"),),
    "sim": (),
}

#: CAP_SYS_ADMIN stands in for these (kernels before 5.8, and the kernel's own rule)
_ADMIN_COVERS = frozenset({"CAP_BPF", "CAP_PERFMON", "CAP_IPC_LOCK"})


def effective() -> int:
    """This process's effective capability set (``CapEff`` of /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing(adapter: str, caps: int | None = None) -> list[str]:
    """The capabilities ``adapter``'s direct path needs that ``caps`` (default: this
    process's effective set) lacks, in the order of :data:`NEEDS`."""
    have = effective() if caps is None else caps
    admin = bool(have >> CAPS["CAP_SYS_ADMIN"] & 1)
    out = []
    for name, _ in NEEDS.get(adapter, ()):
        if have >> CAPS[name] & 1 or (admin and name in _ADMIN_COVERS):
            continue
        out.append(name)
    return out


def hint(adapter: str) -> str:
    """A hint naming what is missing for ``adapter`` and the ways out (empty if none)."""
    gone = missing(adapter)
    if not gone:
        return ""
    return (f"this process lacks {', '.join(gone)} for the {adapter} adapter: run as root, "
            "or start the broker (systemctl enable --now efvid) so ordinary users get VIs")
