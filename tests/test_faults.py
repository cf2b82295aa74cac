"""Fault injection on paths a healthy machine never takes (issue 16, item 7):

* xdp on a kernel without XDP bpf_links: the netlink fallback attaches, and the
  program is removed on close, at exit, and on SIGTERM (the handler it installs);
* ring wrap-around of the batch paths (post/transmit across the ring's end);
* the packet adapter's ENOBUFS (send gives up) and no-buffer (nothing posted) paths;
* a memory region whose mlock fails (required by xdp, optional elsewhere);
* the data path's -EINVAL/-EBADF returns.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

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
)
from efvi import memory as memory_mod
from efvi.constants import PKT_BUF_SIZE
from efvi.testing import netns
from efvi.testing.conformance import Endpoint, collect, send, sim_link
from efvi.wire.build import udp_frame

# ---- xdp: netlink fallback and its SIGTERM/exit cleanup --------------------------------

_NO_BPF_LINK = textwrap.dedent("""
    import errno, os, sys, time
    from efvi.bpf import syscall as bpf
    from efvi.errors import SetupError
    def no_link(*a, **k):  # a kernel without XDP bpf_links (before 5.9)
        raise SetupError("link create (XDP attach): Invalid argument", errno=errno.EINVAL)
    bpf.link_create = no_link
    from efvi import Driver, FilterSpec, MemoryRegion, ProtectionDomain, VirtualInterface
    ifname, ip, how = sys.argv[1:4]
    d = Driver.open(f"xdp:{ifname}?mode=skb")
    pd = ProtectionDomain(d)
    MemoryRegion(pd, 64 * 2048)
    vi = VirtualInterface(pd)
    vi.filter_add(FilterSpec.ip4_local("udp", ip, 4444))
    from efvi.adapters.xdp import link
    assert [p.via for p in link._netlink_attached.values()] == ["netlink"], "no fallback"
    print("ready", d.adapter.link.via if hasattr(d.adapter, "link") else "", flush=True)
    if how == "close":
        d.close()
        print("closed", flush=True)
    elif how == "exit":
        sys.exit(0)  # atexit detaches
    time.sleep(60)
""")


@pytest.fixture
def xpair() -> Iterator[netns.VethPair]:
    skip_unless_xdp()
    with netns.veth_pair(subnet=77) as p:
        try:
            yield p
        finally:
            no_xdp_left(p.a, p.b)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["sigterm", "exit", "close"])
def test_netlink_fallback_is_cleaned_up(xpair: netns.VethPair, how: str) -> None:
    a = xpair.a
    p = a.popen(sys.executable, "-c", _NO_BPF_LINK, a.ifname, a.ip, how,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith(b"ready"), (p.stderr.read() if p.stderr else b"")
        if how == "sigterm":
            assert "xdp" in xdp_attached(a)  # attached through netlink, no bpf_link
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], check=False, capture_output=True,
                                  text=True).stdout.split()  # if `ip netns exec` forked
            for pid in [*kids, str(p.pid)]:
                os.kill(int(pid), signal.SIGTERM)
            assert p.wait(timeout=20) == 128 + signal.SIGTERM
        elif how == "close":
            assert p.stdout.readline() == b"closed\n"
            assert xdp_attached(a) == ""  # detached by close, the process still runs
            p.kill()
            p.wait(timeout=20)
        else:
            assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert xdp_attached(a) == "", f"{how}: the netlink-attached program was left behind"


# ---- ring wrap-around of the batch paths ------------------------------------------------

def _wrap_rounds(tx: Endpoint, rx: Endpoint, make: Callable[[int], list[bytes]],
                 rounds: int = 7, k: int = 40, timeout: float = 5.0) -> None:
    """Post k buffers and send k frames per round through rings of 64 (63 usable): the
    batch post, the batch transmit and the harvest all cross the ring's end."""
    seq = 0
    for r in range(rounds):
        ids = np.arange((r % 2) * k, (r % 2) * k + k, dtype=np.uint32)
        assert rx.vi.receive_post_batch(rx.mr.dma_addrs()[ids], ids) == k
        fs = make(seq)
        addrs = np.array([tx.addr(i) for i in range(k)], np.uint64)
        for i, f in enumerate(fs):
            tx.mr.mv[i * PKT_BUF_SIZE:i * PKT_BUF_SIZE + len(f)] = f
        lens = np.array([len(f) for f in fs], np.uint32)
        assert tx.vi.transmit_batch(addrs, lens, np.arange(k, dtype=np.uint32)) == k
        done: list[int] = []
        got: list[int] = []
        deadline = time.monotonic() + timeout
        while (len(done) < k or len(got) < k) and time.monotonic() < deadline:
            done += tx.vi.transmit_completed(tx.vi.poll()).tolist()
            b = rx.vi.poll()
            for t, rq, of in zip(b.type.tolist(), b.rq_id.tolist(), b.ofs.tolist()):
                if t == int(EventType.RX):
                    o = rq * PKT_BUF_SIZE + of + 42
                    got.append(int.from_bytes(bytes(rx.mr.mv[o:o + 8]), "big"))
        assert done == list(range(k)), f"round {r}: TX completions {done[:5]}..."
        assert got == list(range(seq, seq + k)), f"round {r}: RX {got[:5]}..."
        seq += k
    assert rx.vi.stats()["drops"] == 0


def _frames_for(dst_mac: str, src_mac: str, src: str, dst: str, port: int
                ) -> Callable[[int], list[bytes]]:
    def make(seq: int) -> list[bytes]:
        return [udp_frame(dst_mac, src_mac, src, dst, 40000, port,
                          (seq + i).to_bytes(8, "big") + bytes(14)) for i in range(40)]
    return make


def test_ring_wrap_sim() -> None:
    with sim_link() as lk:
        tx, rx = Endpoint(lk.tx, 128, 64, 64), Endpoint(lk.rx, 128, 64, 64)
        try:
            rx.vi.filter_add(FilterSpec.ip4_local("udp", lk.rx_ip, 5151))
            _wrap_rounds(tx, rx, _frames_for(lk.rx_mac, lk.tx_mac, lk.tx_ip, lk.rx_ip, 5151))
        finally:
            rx.close()
            tx.close()


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["xdp", "packet"])
def test_ring_wrap_on_a_veth(kind: str) -> None:
    if kind == "xdp":
        skip_unless_xdp()
    elif netns.why_unavailable():
        pytest.skip(netns.why_unavailable() or "")
    with netns.veth_pair(subnet=78 if kind == "xdp" else 79) as p:
        a, b = p.a, p.b
        with netns.enter(a.netns):
            rxd = Driver.open(f"{kind}:{a.ifname}")
        with netns.enter(b.netns):
            txd = Driver.open(f"packet:{b.ifname}" if kind == "xdp" else f"{kind}:{b.ifname}")
        try:
            tx, rx = Endpoint(txd, 128, 64, 64), Endpoint(rxd, 128, 64, 64)
            spec = FilterSpec.ip4_local("udp", a.ip, 5152)
            rx.vi.filter_add(spec if kind == "xdp" else spec.sniff())
            _wrap_rounds(tx, rx, _frames_for(a.mac, b.mac, b.ip, a.ip, 5152))
        finally:
            rxd.close()
            txd.close()
        if kind == "xdp":
            no_xdp_left(a, b)


# ---- packet: ENOBUFS from send(), and a kick that really fails ---------------------------

@pytest.mark.integration
def test_packet_tx_retries_after_enobufs_and_counts_real_kick_errors(
        veth: netns.VethPair) -> None:
    a, b = veth.a, veth.b
    with netns.enter(a.netns):
        drv = Driver.open(f"packet:{a.ifname}")
    try:
        ep = Endpoint(drv, 64, 64, 64)
        sock = ep.vi._hw._s  # type: ignore[attr-defined]
        real = sock.kick
        fails = {"n": 0, "err": errno.ENOBUFS}

        def flaky() -> int:
            if fails["n"] > 0:
                fails["n"] -= 1
                return fails["err"]  # the kernel gave up: nothing was sent
            return int(real())

        sock.kick = flaky
        fs = _frames_for(b.mac, a.mac, a.ip, b.ip, 7)(0)[:10]
        fails["n"] = 1
        send(ep, fs)  # completes: the next poll asks the kernel again
        deadline = time.monotonic() + 5
        while ep.vi.stats()["tx_packets"] < 10 and time.monotonic() < deadline:
            ep.vi.transmit_completed(ep.vi.poll())
        st = ep.vi.stats()
        assert st["tx_packets"] == 10 and st.get("tx_kick_errors", 0) == 0, st
        fails["n"], fails["err"] = 1, errno.EIO  # a real failure is counted
        send(ep, fs)
        deadline = time.monotonic() + 5
        while ep.vi.stats()["tx_packets"] < 20 and time.monotonic() < deadline:
            ep.vi.transmit_completed(ep.vi.poll())
        st = ep.vi.stats()
        assert st["tx_kick_errors"] == 1 and st["tx_packets"] == 20, st
        ep.close()
    finally:
        drv.close()


# ---- memory regions whose mlock fails ----------------------------------------------------

def test_mlock_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_mod, "_lock", lambda buf, n: errno.EPERM)
    with sim_link() as lk, ProtectionDomain(lk.rx) as pd:
        mr = MemoryRegion(pd, 8 * PKT_BUF_SIZE)  # optional here: unlocked, usable
        assert mr.locked is False and "unlocked" in repr(mr)
        mr.mv[0:4] = b"abcd"
        monkeypatch.setattr(type(lk.rx.adapter), "requires_locked_memory", True)
        with pytest.raises(SetupError) as ei:
            MemoryRegion(pd, 8 * PKT_BUF_SIZE)
        assert ei.value.errno == errno.EPERM and "CAP_IPC_LOCK" in ei.value.hint
        assert "ulimit -l" in ei.value.hint and len(pd.regions) == 1


# ---- data-path EINVAL/EBADF returns on the kernel adapters -------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("kind", ["xdp", "packet"])
def test_data_path_returns_einval_and_ebadf(kind: str) -> None:
    if kind == "xdp":
        skip_unless_xdp()
    elif netns.why_unavailable():
        pytest.skip(netns.why_unavailable() or "")
    EINVAL, EBADF = -errno.EINVAL, -errno.EBADF
    with netns.veth_pair(subnet=80 if kind == "xdp" else 81) as p:
        with netns.enter(p.a.netns):
            drv = Driver.open(f"{kind}:{p.a.ifname}")
        try:
            ep = Endpoint(drv, 16, 32, 32)
            vi, base = ep.vi, ep.addr(0)
            end = ep.addr(ep.nbuf - 1) + PKT_BUF_SIZE
            one = np.array([base], np.uint64)
            assert vi.receive_post_batch(np.array([end], np.uint64),
                                         np.array([1], np.uint32)) == EINVAL
            assert vi.receive_post_batch(one, np.array([0xFFFFFFFF], np.uint32)) == EINVAL
            assert vi.transmit_batch(one, np.array([13], np.uint32),
                                     np.array([1], np.uint32)) == EINVAL
            assert vi.transmit_batch(np.array([end - 60], np.uint64), np.array([200], np.uint32),
                                     np.array([1], np.uint32)) == EINVAL
            assert vi.transmitv(((base, 30), (end, 30)), 1) == EINVAL  # a piece outside
            assert vi.transmitv((), 1) == EINVAL
            assert vi.transmit_init(base, 60, 0xFFFFFFFF) == EINVAL
            assert vi.stats()["rejected_calls"] >= 7
            assert vi.transmit_fill_level() == 0 and vi.receive_fill_level() == 0
            vi.close()
            assert vi.transmit_batch(one, np.array([60], np.uint32),
                                     np.array([1], np.uint32)) == EBADF
            assert vi.receive_post_batch(one, np.array([1], np.uint32)) == EBADF
            assert vi.transmitv(((base, 60),), 1) == EBADF and len(vi.poll()) == 0
            ep.close()
        finally:
            drv.close()


# ---- xdp: busy polling, TX kicks the kernel refuses --------------------------------------

@pytest.mark.integration
def test_xdp_busy_poll_and_refused_tx_kicks(xpair: netns.VethPair,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from efvi.adapters.xdp.xsk import XskSocket
    a, b = xpair.a, xpair.b
    with netns.enter(a.netns):
        drv = Driver.open(f"xdp:{a.ifname}?busy_poll=20&busy_budget=16")
    try:
        ep = Endpoint(drv, 64, 64, 64)
        ep.vi.filter_add(FilterSpec.ip4_local("udp", a.ip, 5153))
        ep.post(range(32))
        assert ep.vi.stats()["busy_poll"] == 1  # root: the kernel takes SO_BUSY_POLL
        with netns.enter(b.netns):
            import socket as _s
            tx = _s.socket(_s.AF_INET, _s.SOCK_DGRAM)
        for i in range(5):
            tx.sendto(b"bp%d" % i, (a.ip, 5153))
        tx.close()
        assert len([g for g in collect(ep.vi, 5, 5.0) if g[0] == int(EventType.RX)]) == 5
        # the kernel refuses TX wake-ups: ENOBUFS is retried, EIO counted, frames complete
        results = iter([errno.ENOBUFS, errno.EIO])
        real = XskSocket.kick_tx
        monkeypatch.setattr(XskSocket, "kick_tx",
                            lambda self: next(results, None) or real(self))
        fs = _frames_for(b.mac, a.mac, a.ip, b.ip, 9)(0)[:8]
        send(ep, fs)
        deadline = time.monotonic() + 5
        while ep.vi.stats()["tx_packets"] < 8 and time.monotonic() < deadline:
            ep.vi.transmit_completed(ep.vi.poll())
            ep.vi.eventq_wait(1_000_000)
        st = ep.vi.stats()
        assert st["tx_packets"] == 8 and st["tx_kick_errors"] >= 1, st
        assert ep.vi.eventq_put(5) == 0
        t0 = time.monotonic()
        ep.vi.eventq_wait(10_000_000_000)  # a software event is pending: no sleep
        assert time.monotonic() - t0 < 5.0
        ep.close()
    finally:
        drv.close()


@pytest.mark.integration
def test_netlink_errors_and_owner_liveness(xpair: netns.VethPair) -> None:
    from efvi.adapters.xdp import link as xlink
    from efvi.adapters.xdp import netlink as xnl
    from efvi.bpf import ebpf
    from efvi.bpf import syscall as bpf
    assert xlink._pid_alive(os.getpid()) and xlink._pid_alive(1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not xlink._pid_alive(dead.pid)  # a leftover program of a dead owner is cleared
    a = ebpf.Asm()
    a.ret(ebpf.XDP_PASS)
    fd = bpf.prog_load(a.assemble(), name="t_pass")
    try:
        with netns.enter(xpair.a.netns):
            idx = socket.if_nametoindex(xpair.a.ifname)
            xnl.detach(idx)  # nothing attached: a no-op
            with pytest.raises(SetupError) as ei:
                xnl.attach(1 << 30, fd, "skb")  # no such interface
            assert ei.value.errno == errno.ENODEV and "netlink XDP attach" in str(ei.value)
            xnl.attach(idx, fd, "skb")
            with pytest.raises(SetupError) as ei:  # UPDATE_IF_NOEXIST: no silent replace
                xnl.attach(idx, fd, "skb")
            assert ei.value.errno == errno.EBUSY
            xnl.detach(idx)  # mode from the link: skb
        assert xdp_attached(xpair.a) == ""
    finally:
        os.close(fd)
