"""The per-packet fast paths give exactly what the batch paths give.

* sim: TX doorbells of up to ``SCALAR_MAX`` frames run frame by frame in plain Python
  (``SimVI._tx_scalar`` → ``SimPort.receive_list`` → ``SimVI.dma_in_list``) and
  ``eventq_poll`` unpacks the event ring straight into ``Event`` tuples
  (``SimVI.harvest_events``). The same traffic run once that way and once through
  the numpy batch path (``SCALAR_MAX = 0``, events from ``poll()``) must give the
  same events (types, flags, ids, lengths, virtual-clock stamps), the same bytes in
  the buffers, the same counters (drops included) and the same kernel-side frames —
  over random frames: several flows, steal/sniff/multicast/bpf filters, frames too
  long for the MTU or for small buffers (TRUNC, SOP/CONT chains), too few buffers
  (no-descriptor drops), a small event queue (overflow), TX timestamps.
* xdp: ``harvest_events`` reads RX ring descriptors straight into ``Event`` tuples;
  over a synthetic ring (random descriptors, offsets, stamps, multicast bits,
  multi-buffer chains, wrap-around) the events, counters and ring state equal those of
  the record-array ``harvest``.
"""

from __future__ import annotations

import collections
import itertools
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efvi import (Driver, EventType, FilterSpec, MemoryRegion, ProtectionDomain,
                  VirtualInterface)
from efvi.adapters.sim import port as sim_port
from efvi.constants import PKT_BUF_SIZE
from efvi.events import EventBatch, event_array
from efvi.viflags import ViFlags
from efvi.wire.build import ip_frame, udp_frame

_tags = itertools.count()

RX_IP = "198.18.77.2"
TX_IP = "198.18.77.1"
MCAST_IP = "239.1.2.3"
MCAST_MAC = "01:00:5e:01:02:03"
OTHER_MAC = "02:00:00:00:00:99"

# a frame: (kind, dst port, payload length, ip id)
KINDS = ("udp", "udp", "udp", "mcast", "other_ip", "other_mac", "arp", "ipv6", "short")
frame_specs = st.tuples(st.sampled_from(KINDS), st.sampled_from([5000, 5001, 5002, 5009]),
                        st.one_of(st.integers(0, 80), st.integers(0, 2000)),
                        st.integers(0, 3))


def _frame(spec: tuple[str, int, int, int], rx_mac: str, tx_mac: str) -> bytes:
    kind, port, plen, ident = spec
    payload = bytes((i * 7 + plen) & 0xFF for i in range(plen))
    if kind == "mcast":
        f = udp_frame(MCAST_MAC, tx_mac, TX_IP, MCAST_IP, 40000, 5005, payload, ident=ident)
    elif kind == "other_ip":
        f = udp_frame(rx_mac, tx_mac, TX_IP, "198.18.77.9", 40000, port, payload, ident=ident)
    elif kind == "other_mac":
        f = udp_frame(OTHER_MAC, tx_mac, TX_IP, RX_IP, 40000, port, payload, ident=ident)
    elif kind == "arp":
        f = bytes.fromhex(rx_mac.replace(":", "")) + bytes.fromhex(tx_mac.replace(":", "")) \
            + b"\x08\x06" + payload[:46].ljust(28, b"\0")
    elif kind == "ipv6":
        f = ip_frame(rx_mac, tx_mac, "2001:db8::1", "2001:db8::2", 17,
                     b"\x9c\x40" + port.to_bytes(2, "big") + b"\0\x08\0\0" + payload[:100])
    elif kind == "short":
        f = bytes.fromhex(rx_mac.replace(":", "")) + bytes(6) + b"\x88\xb5" + payload[:20]
    else:
        f = udp_frame(rx_mac, tx_mac, TX_IP, RX_IP, 40000 + ident, port, payload, ident=ident)
    return f[:PKT_BUF_SIZE]


def _run_sim(doorbells: list[list[tuple[str, int, int, int]]], posted: int, buf_len: int,
             small_evq: bool, tx_ts: bool, bpf: bool, poll_each: bool, scalar: bool,
             monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Send ``doorbells`` from one sim port to another; everything observable."""
    monkeypatch.setattr(sim_port, "SCALAR_MAX", 64 if scalar else 0)
    tag = f"pp{next(_tags)}"
    dtx = Driver.open(f"sim:t{tag}?wire=w{tag}&ip={TX_IP}&mac=02:00:c6:12:4d:01")
    drx = Driver.open(f"sim:r{tag}?wire=w{tag}&ip={RX_IP}&mac=02:00:c6:12:4d:02")
    rx_mac = ":".join(f"{x:02x}" for x in drx.interface.mac)
    tx_mac = ":".join(f"{x:02x}" for x in dtx.interface.mac)
    try:
        tpd, rpd = ProtectionDomain(dtx), ProtectionDomain(drx)
        tmr = MemoryRegion(tpd, 512 * PKT_BUF_SIZE)
        rmr = MemoryRegion(rpd, 1024 * PKT_BUF_SIZE)
        tvi = VirtualInterface(tpd, rxq=0, txq=512,
                               flags=int(ViFlags.TX_TIMESTAMPS) if tx_ts else 0)
        evq = 64 if small_evq else -1
        a = VirtualInterface(rpd, rxq=512, txq=0, evq=evq)
        b = VirtualInterface(rpd, rxq=512, txq=0, evq=evq)
        a.filter_add(FilterSpec.ip4_local("udp", RX_IP, 5000))
        b.filter_add(FilterSpec.ip4_local("udp", RX_IP, 5001))
        b.filter_add(FilterSpec.ip4_local("udp", RX_IP, 5000).sniff())
        a.filter_add(FilterSpec.ip4_local("udp", MCAST_IP, 5005))
        b.filter_add(FilterSpec.ip4_local("udp", MCAST_IP, 5005))
        if bpf:
            a.filter_add(FilterSpec.expression("udp dst port 5002"))
        addrs = rmr.dma_addrs()
        for k, vi in enumerate((a, b)):
            vi.receive_set_buffer_len(buf_len)
            ids = np.arange(k * 512, k * 512 + posted, dtype=np.uint32)
            assert vi.receive_post_batch(addrs[ids], ids) == posted
        t0 = drx.now_ns()
        out: dict[str, Any] = {"a": [], "b": [], "tx": [], "txids": []}
        last_len = {"a": 0, "b": 0, "tx": 0}

        def poll_all() -> None:
            for name, vi in (("a", a), ("b", b), ("tx", tvi)):
                while True:
                    evs = (vi.eventq_poll(64) if scalar else vi.poll(64).events())
                    if not evs:
                        break
                    for e in evs:
                        rec = (e.type.name, e.subtype, e.flags, e.q_id, e.ofs, e.rq_id, e.len,
                               e.ts_ns - t0 if e.ts_ns else 0)
                        if e.type in (EventType.RX, EventType.RX_DISCARD):
                            # the bytes of this buffer: a whole frame, a truncated one's
                            # head, or one piece of a SOP/CONT chain (len is cumulative)
                            o = e.rq_id * PKT_BUF_SIZE + e.ofs
                            piece = min(e.len if e.flags & 1 else e.len - last_len[name],
                                        buf_len)
                            rec += (bytes(rmr.mv[o:o + piece]),)
                            last_len[name] = e.len
                        out[name].append(rec)
                        if e.type in (EventType.TX, EventType.TX_ERROR):
                            out["txids"] += tvi.transmit_unbundle(e)

        slot = 0
        for db in doorbells:
            for spec in db:
                f = _frame(spec, rx_mac, tx_mac)
                o = (slot % 512) * PKT_BUF_SIZE
                tmr.buf[o:o + len(f)] = np.frombuffer(f, np.uint8)
                assert tvi.transmit_init(tmr.dma_base + o, len(f), slot % 512) == 0
                slot += 1
            tvi.transmit_push()
            if poll_each:
                poll_all()
        poll_all()
        for name, vi in (("a", a), ("b", b), ("tx", tvi)):
            out[name + "_stats"] = vi.stats()
        rport = drx.adapter.port  # type: ignore[attr-defined]
        tport = dtx.adapter.port  # type: ignore[attr-defined]
        out["rport"] = dict(rport.counters)
        out["tport"] = dict(tport.counters)
        out["kernel"] = [(ts - t0, f) for ts, f in rport.kernel_rx]
        out["clock"] = drx.now_ns() - t0
        return out
    finally:
        drx.close()
        dtx.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doorbells=st.lists(st.lists(frame_specs, min_size=1, max_size=70), min_size=1,
                          max_size=5),
       posted=st.sampled_from([0, 3, 40, 300]), buf_len=st.sampled_from([2048, 256]),
       small_evq=st.booleans(), tx_ts=st.booleans(), bpf=st.booleans(),
       poll_each=st.booleans())
def test_sim_scalar_and_batch_paths_agree(doorbells: list[list[tuple[str, int, int, int]]],
                                          posted: int, buf_len: int, small_evq: bool,
                                          tx_ts: bool, bpf: bool, poll_each: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    args = (doorbells, posted, buf_len, small_evq, tx_ts, bpf, poll_each)
    fast = _run_sim(*args, scalar=True, monkeypatch=monkeypatch)
    batch = _run_sim(*args, scalar=False, monkeypatch=monkeypatch)
    for key in batch:
        assert fast[key] == batch[key], key
    assert fast["txids"] == [i % 512 for i in range(sum(map(len, doorbells)))]


def test_sim_small_doorbells_take_the_scalar_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A doorbell of a few frames never reaches the numpy batch path (and a large one
    does), and the per-packet poll does not go through the record array."""
    from efvi.adapters.sim.port import SimPort
    from efvi.adapters.sim.vi import SimVI
    calls: collections.Counter[str] = collections.Counter()
    for cls, name in ((SimPort, "receive"), (SimVI, "harvest")):
        orig = getattr(cls, name)

        def spy(self: object, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            calls[_name] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(cls, name, spy)
    fast = _run_sim([[("udp", 5000, 10, 0)] * 8], 40, 2048, False, False, False, True,
                    scalar=True, monkeypatch=monkeypatch)
    assert calls == {} and len(fast["a"]) == 8 and len(fast["b"]) == 8
    big = [[("udp", 5000, 10, 0)] * 65]
    _run_sim(big, 300, 2048, False, False, False, True, scalar=True, monkeypatch=monkeypatch)
    assert calls["receive"] == 1


# ---- xdp: harvest_events over a synthetic ring ----------------------------------------------
def _fake_xdp(n: int, descs: list[tuple[int, int, int, int, int]], start: int) -> Any:
    """An XdpVI over an in-memory RX ring of ``n`` slots holding ``descs`` from index
    ``start``: (headroom offset, length, options, stamp word, first byte)."""
    from efvi.adapters.xdp.vi import XdpVI
    vi: Any = object.__new__(XdpVI)
    mem = bytearray(16 * n)
    mv = memoryview(mem)
    r: Any = SimpleNamespace()
    r.prod, r.cons = memoryview(bytearray(4)).cast("I"), memoryview(bytearray(4)).cast("I")
    r.desc_q, r.desc_i = mv.cast("Q"), mv.cast("I")
    r.desc = np.frombuffer(mem, dtype=np.dtype([("addr", "<u8"), ("len", "<u4"),
                                                ("options", "<u4")]))
    r.size, r.mask = n, n - 1
    umem = np.zeros((len(descs) + 1) * 2048, np.uint8)
    for k, (ofs, ln, opt, meta, b0) in enumerate(descs):
        j = (start + k) & (n - 1)
        base = (k + 1) * 2048 - 2048
        r.desc_q[2 * j] = base | (ofs << 48)
        r.desc_i[4 * j + 2] = ln
        r.desc_i[4 * j + 3] = opt
        umem[base + ofs - 8:base + ofs] = np.frombuffer(meta.to_bytes(8, "little", signed=True),
                                                         np.uint8)
        umem[base + ofs] = b0
    r.cons[0] = start
    r.prod[0] = (start + len(descs)) & 0xFFFFFFFF
    s: Any = SimpleNamespace()
    s.rx = r
    vi.rx_socks = [(0, s)]
    vi._rx1q = (0, r)
    vi._sw, vi._runs, vi._tx_unkicked = collections.deque(), collections.deque(), False
    vi._rx_cons, vi._chain_len, vi._chain_ts = {0: start}, {0: 0}, {0: 0}
    vi._q_out = {0: len(descs)}
    vi._rx_id = np.arange(len(descs) + 1, dtype=np.uint32) + 100
    vi._rx_id_mv = vi._rx_id.data
    vi._umem_mv = umem.data
    vi._umem_q = umem.data.cast("q")
    vi._umem_i64 = umem.view(np.int64)
    vi._ts_off, vi._ts_age = 12345, 10**9
    vi.counters = collections.Counter()
    vi._closed = False
    vi.tx_sock = None
    vi.pd = SimpleNamespace()
    vi.pd.umem = umem
    vi.adapter = SimpleNamespace()
    vi.adapter.sg = True
    vi.clock_source = "xdp-sw"
    return vi


@st.composite
def _rings(draw: Any) -> tuple[int, list[tuple[int, int, int, int, int]], int, list[int]]:
    n = draw(st.sampled_from([16, 64]))
    frames = draw(st.lists(st.integers(1, 3), min_size=0, max_size=n - 1))
    descs: list[tuple[int, int, int, int, int]] = []
    for bufs in frames:
        if len(descs) + bufs > n - 1:
            break
        meta = draw(st.sampled_from([0, 1_000_000, 5, -(1 << 63) | 777]))
        ofs = draw(st.sampled_from([256, 256, 260]))
        b0 = draw(st.sampled_from([0x02, 0x01]))
        for k in range(bufs):
            descs.append((ofs, draw(st.integers(14, 1800)), 1 if k < bufs - 1 else 0, meta,
                          b0))
    start = draw(st.sampled_from([0, n - 3, 2**32 - 5]))
    polls = draw(st.lists(st.integers(2, 70), min_size=1, max_size=8))
    return n, descs, start, polls


@settings(max_examples=150, deadline=None)
@given(ring=_rings())
def test_xdp_harvest_events_equals_harvest(
        ring: tuple[int, list[tuple[int, int, int, int, int]], int, list[int]]) -> None:
    n, descs, start, polls = ring

    def drain(fast: bool) -> tuple[list[tuple[Any, ...]], Any]:
        vi = _fake_xdp(n, descs, start)
        out = event_array(256)
        got: list[tuple[Any, ...]] = []
        for m in itertools.islice(itertools.cycle(polls), 4 * n + 8):
            res = vi.harvest_events(m) if fast else None
            if res is None:
                k = vi.harvest(out, m)
                evs = EventBatch(out[:k]).events()
            else:
                evs, nrx = res
                assert nrx == len(evs)
            assert len(evs) <= m
            got += [tuple(e) for e in evs]
        state = (dict(vi.counters), vi._rx_cons, vi._chain_len, vi._q_out,
                 vi.rx_socks[0][1].rx.cons[0], vi.clock_source)
        return got, state

    fast, fstate = drain(True)
    slow, sstate = drain(False)
    assert fast == slow
    assert fstate == sstate
    assert len(slow) == len(descs)
