"""Fault injection on the xdp adapter's control paths (issue 16, item 7: ≥ 90 % covered).

Each test makes one thing fail the way a kernel, a driver or a user can make it fail —
a refused ``setsockopt``/``getsockopt``/``mmap``/``bind``, a kernel without AF_XDP or
bpf_links, a program another process left or holds, a full filter table — and
asserts the error (errno, message, the way out in the hint), that nothing is left
half made, and where it applies that the VI works once the fault is gone.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from xdp_helpers import no_xdp_left, skip_unless_xdp, xdp_attached

from efvi import (
    Driver,
    EventType,
    FilterSpec,
    MemoryRegion,
    ProtectionDomain,
    SetupError,
    UnsupportedError,
    VirtualInterface,
    VISet,
)
from efvi.adapters.xdp import link as xlink
from efvi.adapters.xdp import netlink as xnl
from efvi.adapters.xdp import xsk
from efvi.bpf import ebpf
from efvi.bpf import syscall as bpf
from efvi.constants import PKT_BUF_SIZE
from efvi.errors import FilterExistsError
from efvi.testing import netns
from efvi.testing.conformance import Endpoint, collect, send
from efvi.wire.build import udp_frame

pytestmark = pytest.mark.integration

SOL_XDP = xsk.SOL_XDP


@pytest.fixture(scope="module")
def pair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=98) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def _open(side: netns.Side, opts: str = "") -> Driver:
    with netns.enter(side.netns):
        return Driver.open(f"xdp:{side.ifname}{opts}")


def _frames(p: netns.VethPair, n: int, port: int = 7000) -> list[bytes]:
    """``n`` UDP frames b → a (sent by a VI on b) with their index in the payload."""
    return [udp_frame(p.a.mac, p.b.mac, p.b.ip, p.a.ip, 40000, port, b"f%05d" % i + bytes(20))
            for i in range(n)]


def _udp_to_a(p: netns.VethPair, port: int, n: int, flows: int = 1) -> None:
    """``n`` datagrams from kernel sockets on b to a:port (``flows`` source ports)."""
    with netns.enter(p.b.netns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    try:
        for i in range(n):
            socks[i % flows].sendto(b"d%05d" % i, (p.a.ip, port))
    finally:
        for s in socks:
            s.close()


def _rx(vi: VirtualInterface, want: int, timeout: float = 5.0) -> int:
    return len([g for g in collect(vi, want, timeout) if g[0] == int(EventType.RX)])


# ---- AF_XDP socket set-up refused by the kernel -------------------------------------

def _sockopt_fault(monkeypatch: pytest.MonkeyPatch, *, set_fail: dict[int, int] | None = None,
                   get: dict[int, Callable[[], bytes]] | None = None) -> None:
    """Make SOL_XDP setsockopt(opt) fail with errno, or getsockopt(opt) return/raise."""
    real_set, real_get = socket.socket.setsockopt, socket.socket.getsockopt

    def setsockopt(self: socket.socket, level: int, opt: int, *val: Any) -> None:
        if level in (SOL_XDP, socket.SOL_SOCKET) and set_fail and opt in set_fail:
            raise OSError(set_fail[opt], "injected")
        real_set(self, level, opt, *val)

    def getsockopt(self: socket.socket, level: int, opt: int, *a: Any) -> Any:
        if level == SOL_XDP and get and opt in get:
            return get[opt]()
        return real_get(self, level, opt, *a)

    monkeypatch.setattr(socket.socket, "setsockopt", setsockopt)
    monkeypatch.setattr(socket.socket, "getsockopt", getsockopt)


def _raise(err: int) -> Callable[[], bytes]:
    def f() -> bytes:
        raise OSError(err, "injected")
    return f


def _module_with(mod: types.ModuleType, **over: Any) -> types.SimpleNamespace:
    """A stand-in for ``mod`` whose attributes ``over`` replace the real ones."""
    return types.SimpleNamespace(**{**vars(mod), **over})


def _socket_fails(mp: pytest.MonkeyPatch) -> None:
    def no_af_xdp(*a: Any, **k: Any) -> socket.socket:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    mp.setattr(xsk, "socket", _module_with(socket, socket=no_af_xdp))


def _mmap_fails(mp: pytest.MonkeyPatch) -> None:
    import mmap

    def no_memory(*a: Any, **k: Any) -> mmap.mmap:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    mp.setattr(xsk, "mmap", _module_with(mmap, mmap=no_memory))


def _bind_fails(err: int) -> Callable[[pytest.MonkeyPatch], None]:
    def inject(mp: pytest.MonkeyPatch) -> None:
        def bind(fd: int, addr: object, n: int) -> int:
            ctypes.set_errno(err)
            return -1
        mp.setattr(xsk, "_libc", types.SimpleNamespace(bind=bind))
    return inject


SETUP_FAULTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], int, str, str]] = {
    # name: (inject, errno, in the message, in the hint)
    "no AF_XDP": (_socket_fails, errno.EAFNOSUPPORT, "AF_XDP socket failed",
                  "use the packet adapter"),
    "UMEM not pinned": (lambda mp: _sockopt_fault(mp, set_fail={xsk.XDP_UMEM_REG: errno.ENOBUFS}),
                        errno.ENOBUFS, "UMEM registration", "ulimit -l"),
    "ring refused": (lambda mp: _sockopt_fault(mp, set_fail={xsk.XDP_RX_RING: errno.EINVAL}),
                     errno.EINVAL, "ring setup failed", ""),
    "no mmap offsets": (lambda mp: _sockopt_fault(
        mp, get={xsk.XDP_MMAP_OFFSETS: _raise(errno.ENOPROTOOPT)}),
        errno.ENOPROTOOPT, "ring setup failed", ""),
    "pre-5.4 offsets": (lambda mp: _sockopt_fault(
        mp, get={xsk.XDP_MMAP_OFFSETS: lambda: bytes(96)}),
        errno.EOPNOTSUPP, "no flags field", "Linux ≥ 5.4"),
    "ring mmap": (_mmap_fails, errno.ENOMEM, "ring mmap failed", ""),
    "queue held": (_bind_fails(errno.EBUSY), errno.EBUSY, "bind to queue 0",
                   "another AF_XDP socket"),
    "no such queue": (_bind_fails(errno.EINVAL), errno.EINVAL, "bind to queue 0",
                      "may not exist"),
    "no privilege": (_bind_fails(errno.EPERM), errno.EPERM, "bind to queue 0",
                     "CAP_NET_RAW and CAP_NET_ADMIN"),
}


@pytest.mark.parametrize("fault", list(SETUP_FAULTS))
def test_socket_setup_fault_is_named_and_leaves_nothing(pair: netns.VethPair, fault: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    inject, err, what, hint = SETUP_FAULTS[fault]
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=64, txq=64)
        with monkeypatch.context() as mp:
            inject(mp)
            with pytest.raises(SetupError) as ei:
                vi.activate()
        assert ei.value.errno == err, (fault, ei.value)
        assert what in ei.value.message and hint in ei.value.hint, (fault, ei.value)
        hw: Any = vi._hw
        assert hw.socks == {} and hw.tx_sock is None and hw.pd.sockets == []
        assert hw.prog.queue_owner == {}  # the queue is free again
        vi.activate()  # the fault gone, the same VI opens its socket and works
        assert vi.stats()["queues"] == 1 and vi.stats()["zero_copy"] == 0
    finally:
        drv.close()


def test_zerocopy_required_on_veth_says_how_to_fall_back(pair: netns.VethPair) -> None:
    drv = _open(pair.a, "?zerocopy=1")
    try:
        vi = Endpoint(drv, 16, 16, 16).vi
        with pytest.raises(SetupError) as ei:
            vi.activate()
        assert ei.value.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)
        assert "drop ?zerocopy=1" in ei.value.hint
    finally:
        drv.close()


def test_optional_socket_options_refused_the_vi_still_works(pair: netns.VethPair,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """An older kernel: no TX skb budget, no XDP_OPTIONS, no XDP_STATISTICS, and busy
    polling refused. Each is optional: frames flow both ways, busy_poll reads 0 and
    the statistics simply lack the kernel's drop counters."""
    _sockopt_fault(monkeypatch, set_fail={xsk.XDP_MAX_TX_SKB_BUDGET: errno.ENOPROTOOPT,
                                          xsk.SO_PREFER_BUSY_POLL: errno.EPERM},
                   get={xsk.XDP_OPTIONS: _raise(errno.ENOPROTOOPT),
                        xsk.XDP_STATISTICS: _raise(errno.ENOPROTOOPT)})
    drv = _open(pair.a, "?mode=skb&zerocopy=0&busy_poll=20")
    peer = _open(pair.b, "?mode=skb")
    try:
        rx, tx = Endpoint(drv, 64, 64, 64), Endpoint(peer, 64, 64, 64)
        rx.vi.filter_add(FilterSpec.ip4_local("udp", pair.a.ip, 7001))
        assert rx.post(range(32)) == 32
        send(tx, _frames(pair, 10, 7001))
        assert _rx(rx.vi, 10) == 10
        st = rx.vi.stats()
        assert st["busy_poll"] == 0 and st["zero_copy"] == 0
        assert st["rx_packets"] == 10 and st["rx_nodesc_drops"] == 0
        assert not any(k.startswith("xdp_") for k in st), st
        deadline = time.monotonic() + 5
        while tx.vi.stats()["tx_packets"] < 10 and time.monotonic() < deadline:
            tx.vi.transmit_completed(tx.vi.poll())
        assert tx.vi.stats()["tx_packets"] == 10
    finally:
        peer.close()
        drv.close()


# ---- the interface program: leftovers, foreign programs, refused attaches ------------

def _pass_prog(name: str) -> int:
    a = ebpf.Asm()
    a.ret(ebpf.XDP_PASS)
    return bpf.prog_load(a.assemble(), name=name)


def _attached_name(side: netns.Side) -> str | None:
    """The name of the XDP program attached to the side's interface (None if none)."""
    from efvi.netutil import link_info
    with netns.enter(side.netns):
        pid = link_info(side.ifname).xdp_prog_id
    return bpf.prog_name_by_id(pid) if pid else None


def test_a_dead_efvi_runs_program_is_cleared(pair: netns.VethPair) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    fd = _pass_prog(f"efvi_{dead.pid}")  # as a killed efvi process leaves it (netlink)
    try:
        with netns.enter(pair.a.netns):
            xnl.attach(socket.if_nametoindex(pair.a.ifname), fd, "skb")
    finally:
        import os
        os.close(fd)
    assert _attached_name(pair.a) == f"efvi_{dead.pid}"
    drv = _open(pair.a, "?mode=skb")  # no force=1 needed: its owner is gone
    try:
        import os
        assert drv.adapter.program.prog_id != 0  # type: ignore[attr-defined]
        assert _attached_name(pair.a) == f"efvi_{os.getpid()}"
    finally:
        drv.close()
    assert xdp_attached(pair.a) == ""


def test_force_cannot_remove_a_program_held_by_a_bpf_link(pair: netns.VethPair) -> None:
    import os
    fd = _pass_prog("foreign")
    with netns.enter(pair.a.netns):
        lk = bpf.link_create(fd, socket.if_nametoindex(pair.a.ifname),
                             bpf.XDP_FLAGS_SKB_MODE)
    try:
        with pytest.raises(SetupError) as ei:
            _open(pair.a, "?force=1")
        assert ei.value.errno == errno.EBUSY, ei.value
        assert "cannot remove XDP program 'foreign'" in ei.value.message
        assert "held by a bpf_link" in ei.value.hint
    finally:
        os.close(lk)
        os.close(fd)
    assert xdp_attached(pair.a) == ""


def test_second_driver_must_agree_on_mode_and_timestamps(pair: netns.VethPair) -> None:
    first = _open(pair.a, "?mode=skb&ts=sw")
    try:
        with pytest.raises(SetupError) as ei:
            _open(pair.a, "?mode=drv")
        assert ei.value.errno == errno.EEXIST and "in skb mode" in ei.value.message
        with pytest.raises(UnsupportedError) as ui:
            _open(pair.a, "?ts=hw")
        assert "without hardware RX timestamps" in str(ui.value) and "ts=sw" in str(ui.value)
        same = _open(pair.a, "?mode=auto")  # auto joins what runs
        assert same.adapter.attach_mode == "skb"  # type: ignore[attr-defined]
        same.close()
    finally:
        first.close()
    assert xdp_attached(pair.a) == ""


def _link_create_fails(err: int) -> Callable[..., int]:
    def f(*a: Any, **k: Any) -> int:
        raise SetupError(f"link create (XDP attach): {errno.errorcode[err]}", errno=err)
    return f


def test_attach_refused_names_the_interface(pair: netns.VethPair,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a program already attached by someone else's link: EBUSY ends the search at once
    monkeypatch.setattr(bpf, "link_create", _link_create_fails(errno.EBUSY))
    with pytest.raises(SetupError) as ei:
        _open(pair.a, "?ts=sw")
    assert ei.value.errno == errno.EBUSY
    assert f"cannot attach the XDP program to {pair.a.ifname}" in ei.value.message
    # no bpf_link for XDP (old kernel) and netlink refuses too: the netlink error is kept
    monkeypatch.setattr(bpf, "link_create", _link_create_fails(errno.EINVAL))

    def nl_refuses(ifindex: int, fd: int, mode: str) -> None:
        raise SetupError("netlink XDP attach: Operation not permitted", errno=errno.EPERM,
                         hint="netlink says no")
    monkeypatch.setattr(xnl, "attach", nl_refuses)
    with pytest.raises(SetupError) as ei:
        _open(pair.a, "?ts=sw")
    assert ei.value.errno == errno.EPERM and ei.value.hint == "netlink says no"
    assert xlink._netlink_attached == {} and xdp_attached(pair.a) == ""


_NETLINK_RELOAD = textwrap.dedent("""
    import errno, json, sys
    from efvi.bpf import syscall as bpf
    from efvi.errors import SetupError
    def no_link(*a, **k):
        raise SetupError("link create (XDP attach): Invalid argument", errno=errno.EINVAL)
    bpf.link_create = no_link
    from efvi import Driver, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
    from efvi.adapters.xdp import netlink as xnl
    ifname = sys.argv[1]
    d = Driver.open(f"xdp:{ifname}?mode=skb")
    pd = ProtectionDomain(d)
    MemoryRegion(pd, 64 * 2048)
    vi = VirtualInterface(pd)
    prog = d.adapter.program
    out = {"via": prog.via, "id0": prog.prog_id}
    udp = [(0x28, 0, 0, 12), (0x15, 0, 3, 0x800), (0x30, 0, 0, 23), (0x15, 0, 1, 17),
           (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
    c = vi.filter_add(FilterSpec.bpf(udp))  # a reload: the new program through netlink
    out["id1"] = prog.prog_id
    real = xnl.set_xdp
    def refuse(*a, **k):
        raise SetupError("netlink XDP attach: Device or resource busy", errno=errno.EBUSY)
    xnl.set_xdp = refuse
    try:
        vi.filter_add(FilterSpec.bpf([(0x06, 0, 0, 0xFFFF)]))
    except SetupError as e:
        out["refused"] = e.errno
    out["id2"], out["filters"] = prog.prog_id, len(prog.bpf_filters)
    xnl.set_xdp = real
    vi.filter_del(c)
    out["id3"], out["left"] = prog.prog_id, len(prog.bpf_filters)
    d.close()
    print(json.dumps(out))
""")


def test_netlink_attached_program_reloads_and_keeps_the_old_on_refusal(
        pair: netns.VethPair) -> None:
    r = pair.a.run(sys.executable, "-c", _NETLINK_RELOAD, pair.a.ifname, check=False)
    assert r.returncode == 0, r.stderr
    import json
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["via"] == "netlink"
    assert out["id1"] != out["id0"]  # the bpf filter is in a new program, swapped in
    assert out["refused"] == errno.EBUSY
    assert out["id2"] == out["id1"] and out["filters"] == 1  # the running one stays
    assert out["id3"] not in (out["id1"], out["id0"]) and out["left"] == 0
    assert xdp_attached(pair.a) == ""


# ---- filters: groups (VI sets), mismatch, bpf, a full table --------------------------

@pytest.fixture(scope="module")
def mq() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(queues=2, subnet=99) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


def test_vi_set_filter_added_after_posting_and_deleted(mq: netns.VethPair) -> None:
    drv = _open(mq.a, "?mode=skb")
    try:
        pd = ProtectionDomain(drv)
        mr = MemoryRegion(pd, 256 * PKT_BUF_SIZE)
        vs = VISet(pd, 2, rxq=128, txq=0)
        for i, vi in enumerate(vs.vis):
            ids = np.arange(i * 100, i * 100 + 100, dtype=np.uint32)
            assert vi.receive_post_batch(mr.dma_base + ids.astype(np.uint64) * PKT_BUF_SIZE,
                                         ids) == 100
        prog: Any = drv.adapter.program  # type: ignore[attr-defined]
        targets = set(prog._targets)
        c = vs.filter_add(FilterSpec.ip4_local("udp", mq.a.ip, 7100))
        assert len(prog._targets) == len(targets) + 1  # a group target for the set
        _udp_to_a(mq, 7100, 40, flows=8)
        got = [_rx(vi, 1, 0.5) for vi in vs.vis]
        deadline = time.monotonic() + 5
        while sum(got) < 40 and time.monotonic() < deadline:
            got = [g + _rx(vi, 1, 0.2) for g, vi in zip(got, vs.vis)]
        assert sum(got) == 40, got
        vs.filter_del(c)
        assert set(prog._targets) == targets and prog.filters == {}
        with netns.enter(mq.a.netns):
            k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        k.bind((mq.a.ip, 7100))
        k.settimeout(5)
        _udp_to_a(mq, 7100, 3)
        assert [k.recv(64) for _ in range(3)] == [b"d%05d" % i for i in range(3)]  # kernel's
        k.close()
        assert sum(_rx(vi, 1, 0.2) for vi in vs.vis) == 0
    finally:
        drv.close()


def test_full_filter_table_refusal_rolls_back_the_group(mq: netns.VethPair,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    drv = _open(mq.a, "?mode=skb")
    try:
        pd = ProtectionDomain(drv)
        MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vs = VISet(pd, 2, rxq=64, txq=0)
        prog: Any = drv.adapter.program  # type: ignore[attr-defined]
        targets = set(prog._targets)
        real = bpf.map_update

        def ftable_full(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
            if fd == prog.fds["ftable"]:  # the kernel's map is full (E2BIG)
                raise SetupError("map update: Argument list too long", errno=errno.E2BIG)
            real(fd, key, value, flags)
        monkeypatch.setattr(bpf, "map_update", ftable_full)
        with pytest.raises(SetupError) as ei:
            vs.filter_add(FilterSpec.ip4_local("udp", mq.a.ip, 7200))
        assert ei.value.errno == errno.ENOSPC and "is full (4096 entries)" in ei.value.message
        assert set(prog._targets) == targets and prog.filters == {}
        assert all(not vi._hw.groups for vi in vs.vis)  # type: ignore[attr-defined]
        monkeypatch.undo()
        vs.filter_add(FilterSpec.ip4_local("udp", mq.a.ip, 7200))  # and then it fits
        assert len(prog.filters) == 1
    finally:
        drv.close()


def test_bpf_filters_sniff_duplicate_and_refused_for_a_set(mq: netns.VethPair,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    drv = _open(mq.a, "?mode=skb")
    try:
        pd = ProtectionDomain(drv)
        MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=32, txq=0)
        everything = [(0x06, 0, 0, 0xFFFF)]
        with pytest.raises(UnsupportedError) as ui:
            vi.filter_add(FilterSpec.bpf(everything, sniff=True))
        assert "cannot sniff" in str(ui.value) and "packet adapter" in str(ui.value)
        prog: Any = drv.adapter.program  # type: ignore[attr-defined]
        vi.filter_add(FilterSpec.bpf(everything))
        assert len(prog.bpf_filters) == 1
        with pytest.raises(FilterExistsError):
            vi.filter_add(FilterSpec.bpf(everything))
        vi.close()  # (it held both queues) its filter goes with it
        assert len(prog.bpf_filters) == 0
        vs = VISet(pd, 2, rxq=32, txq=0)
        vs.filter_add(FilterSpec.bpf(everything))
        targets, pid = set(prog._targets), prog.prog_id

        def verifier_says_no(*a: Any, **k: Any) -> int:
            raise SetupError("BPF_PROG_LOAD: Permission denied", errno=errno.EACCES)
        monkeypatch.setattr(bpf, "prog_load", verifier_says_no)
        with pytest.raises(SetupError) as ei:
            vs.filter_add(FilterSpec.bpf([(0x06, 0, 0, 64)]))
        assert ei.value.errno == errno.EACCES
        assert set(prog._targets) == targets and prog.prog_id == pid
        assert len(prog.bpf_filters) == 1  # only the set's first filter
    finally:
        drv.close()


def test_unicast_mismatch_takes_frames_for_other_macs(pair: netns.VethPair) -> None:
    drv = _open(pair.a, "?mode=skb")
    peer = _open(pair.b, "?mode=skb")
    try:
        rx, tx = Endpoint(drv, 64, 64, 64), Endpoint(peer, 64, 64, 64)
        rx.vi.filter_add(FilterSpec.unicast_mismatch())
        rx.post(range(32))
        prog: Any = drv.adapter.program  # type: ignore[attr-defined]
        other = udp_frame("02:00:00:00:00:99", pair.b.mac, pair.b.ip, "198.18.99.99", 1, 7300,
                          b"not-for-the-kernel")
        send(tx, [other] * 4)
        got = collect(rx.vi, 4, 5.0)
        assert len([g for g in got if g[0] == int(EventType.RX)]) == 4
        o = got[0][1] * PKT_BUF_SIZE + got[0][5]
        assert bytes(rx.mr.mv[o:o + len(other)]) == other
        # the kernel's MACs (own, broadcast) were loaded so the kernel keeps its frames
        from efvi.adapters.xdp.program import kmac_key
        for mac in (bytes.fromhex(pair.a.mac.replace(":", "")), b"\xff" * 6):
            assert bpf.map_lookup(prog.fds["kmacs"], kmac_key(mac), 4) == b"\1\0\0\0"
        assert bpf.map_lookup(prog.fds["kmacs"], kmac_key(bytes.fromhex("020000000099")),
                              4) is None
    finally:
        peer.close()
        drv.close()


# ---- the VI: too many, event queue full, TX-only waits, TX errors ---------------------

def test_vis_per_interface_are_limited_and_counted_back(pair: netns.VethPair) -> None:
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        vis = [VirtualInterface(pd, rxq=0, txq=64) for _ in range(63)]
        with pytest.raises(SetupError) as ei:
            VirtualInterface(pd, rxq=0, txq=64)
        assert ei.value.errno == errno.ENOSPC and "max 63" in ei.value.message
        vis[0].close()
        VirtualInterface(pd, rxq=0, txq=64)  # a closed VI's target is free again
    finally:
        drv.close()


def test_event_queue_overflow_and_tx_only_wait(pair: netns.VethPair) -> None:
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        mr = MemoryRegion(pd, 64 * PKT_BUF_SIZE)
        vi = VirtualInterface(pd, rxq=0, txq=64, evq=2)
        assert [vi.eventq_put(i) for i in range(4)] == [0, 0, -errno.EAGAIN, -errno.EAGAIN]
        assert [e.len for e in vi.eventq_poll(8)] == [0, 1]
        f = _frames(pair, 1)[0]
        mr.mv[:len(f)] = f
        assert vi.transmit(mr.dma_base, len(f), 11) == 0
        done: list[int] = []
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            vi.eventq_wait(100_000_000)  # no RX socket: a short sleep, a kick
            done += vi.transmit_completed(vi.poll()).tolist()
        assert done == [11]
    finally:
        drv.close()


def test_gathered_tx_without_a_free_bounce_frame_is_a_tx_error(
        pair: netns.VethPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel never completes (its TX wake-ups refused): once every bounce frame is
    in flight, a gathered packet fails with TX_ERROR, counted, and nothing hangs."""
    drv = _open(pair.a)
    try:
        ep = Endpoint(drv, 128, 64, 256)
        vi = ep.vi
        f = _frames(pair, 1)[0]
        for i in range(128):
            ep.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
        vi.activate()
        monkeypatch.setattr(xsk.XskSocket, "kick_tx", lambda self: errno.EAGAIN)
        from efvi.adapters.xdp._common import BOUNCE_PER_VI
        for i in range(BOUNCE_PER_VI + 3):  # two pieces 4 KiB apart: must be copied
            rc = vi.transmitv(((ep.addr(2 * (i % 60)), 30), (ep.addr(2 * (i % 60) + 1), 30)),
                              100 + i)
            assert rc == 0, (i, rc)
        assert vi.stats()["tx_bounced"] == BOUNCE_PER_VI
        # nothing completes while the kernel is not woken; the failed three wait behind
        # the eight in flight (completions are reported in submission order)
        assert [e for e in vi.eventq_poll(64) if e.type != EventType.SW] == []
        monkeypatch.undo()
        ok: list[int] = []
        errs: list[int] = []
        deadline = time.monotonic() + 5
        while len(ok) + len(errs) < BOUNCE_PER_VI + 3 and time.monotonic() < deadline:
            for ev in vi.eventq_poll(64):
                if ev.type == EventType.TX:
                    ok += vi.transmit_unbundle(ev)
                elif ev.type == EventType.TX_ERROR:
                    errs += vi.transmit_unbundle(ev)
        assert ok == [100 + k for k in range(BOUNCE_PER_VI)]
        assert errs == [100 + BOUNCE_PER_VI + k for k in range(3)]
        st = vi.stats()
        assert st["tx_error_drops"] == 3 and st["tx_packets"] == BOUNCE_PER_VI, st
    finally:
        monkeypatch.undo()
        drv.close()


# ---- the adapter: refused before anything is made ------------------------------------

def test_adapter_refusals(pair: netns.VethPair, monkeypatch: pytest.MonkeyPatch) -> None:
    from efvi.adapters.xdp import adapter as xad
    with pytest.raises(SetupError) as ei:
        with monkeypatch.context() as mp:
            mp.setattr(xad.platform, "machine", lambda: "aarch64")
            _open(pair.a)
    assert ei.value.errno == errno.EOPNOTSUPP and "needs x86-64 (found aarch64)" in str(ei.value)
    assert "packet adapter" in ei.value.hint
    with netns.enter(pair.a.netns):
        with pytest.raises(SetupError) as ei:
            xad.XdpAdapter(pair.a.ifname, None, {"colour": "blue"})
        assert ei.value.errno == errno.EINVAL and "['colour']" in ei.value.message
        with pytest.raises(SetupError) as ei:
            xad.XdpAdapter("", None, {})
        assert "xdp needs an interface" in ei.value.message
    # an interface without an Ethernet address (a tun device)
    pair.a.run("ip", "tuntap", "add", "dev", "efvitun0", "mode", "tun")
    try:
        pair.a.run("ip", "link", "set", "efvitun0", "up")
        with netns.enter(pair.a.netns):
            with pytest.raises(SetupError) as ei:
                Driver.open("xdp:efvitun0")
        assert "efvitun0 is not an Ethernet interface" in ei.value.message
        assert ei.value.hint == "use packet:efvitun0"
    finally:
        pair.a.run("ip", "link", "del", "efvitun0", check=False)
    drv = _open(pair.a)
    ad: Any = drv.adapter
    drv.close()
    drv.close()  # twice: nothing more happens
    with pytest.raises(SetupError) as ei:
        ad.alloc_pd()
    assert ei.value.errno == errno.EBADF


def test_pio_before_memory_and_when_used_up(pair: netns.VethPair) -> None:
    drv = _open(pair.a)
    try:
        pd = ProtectionDomain(drv)
        vi = VirtualInterface(pd, rxq=0, txq=64)
        with pytest.raises(UnsupportedError) as ui:
            vi.pio  # noqa: B018
        assert "register the PD's memory region" in str(ui.value)
        MemoryRegion(pd, 16 * PKT_BUF_SIZE)
        vis = [VirtualInterface(pd, rxq=0, txq=64) for _ in range(17)]
        areas = [v.pio for v in vis[:16]]  # 16 x 4 KiB of the 64 KiB reserve
        assert len({a.dma_addr for a in areas}) == 16
        with pytest.raises(UnsupportedError) as ui:
            vis[16].pio  # noqa: B018
        assert "is used up" in str(ui.value)
    finally:
        drv.close()
