"""efvid's request codec, policy and spec transport (no privileges needed)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efvi.broker import protocol as P
from efvi.broker.client import BrokerClient, use_broker
from efvi.broker.policy import Caller, Denied, Policy, PolicyError
from efvi.broker.specs import spec_from_wire, spec_to_wire, traffic_class
from efvi.errors import SetupError
from efvi.filters import FilterSpec, parse_filter

NOBODY = Caller(65534, 65534, 1234, frozenset({65534}))
ROOT = Caller(0, 0, 1, frozenset({0}))

POLICY = """
[[grant]]
name = "md"
users = [65534]
interfaces = ["veth*"]
queues = [0]
filters = ["udp"]
addresses = ["198.18.0.0/15"]
ports = ["5000-5010", 7000]
max_vis = 2
max_memory_mb = 16
"""


# ---- protocol ----------------------------------------------------------------------------
def test_request_roundtrip() -> None:
    data = P.encode({"op": "xdp.target", "id": 7, "args": {"adapter": 3}})
    assert P.decode_request(data) == ("xdp.target", 7, {"adapter": 3})


@pytest.mark.parametrize("data, fault", [
    (b"\xff\xfe", "not UTF-8"),
    (b"{", "not JSON"),
    (b"[1]", "not an object"),
    (b'{"id": 1, "op": "rm -rf", "args": {}}', "unknown op"),
    (b'{"id": -1, "op": "hello"}', "non-negative integer"),
    (b'{"id": true, "op": "hello"}', "non-negative integer"),
    (b'{"id": 1, "op": "xdp.target", "args": {}}', "missing argument 'adapter'"),
    (b'{"id": 1, "op": "xdp.target", "args": {"adapter": "3"}}', "wrong type"),
    (b'{"id": 1, "op": "xdp.target", "args": {"adapter": true}}', "must be an integer"),
    (b'{"id": 1, "op": "xdp.target", "args": {"adapter": 1, "x": 2}}', "unknown argument"),
    (b'{"id": 1, "op": "xdp.target", "args": {"adapter": 99999999999999999999}}',
     "out of range"),
    (b'{"id": 1, "op": "hello", "args": []}', "'args' must be an object"),
    (b"[" * 100000, "over the"),
])
def test_malformed_requests_name_the_fault(data: bytes, fault: str) -> None:
    with pytest.raises(P.ProtocolError, match=fault):
        P.decode_request(data)


def test_too_many_descriptors() -> None:
    with pytest.raises(P.ProtocolError, match="descriptors"):
        P.decode_request(P.encode({"op": "hello", "id": 1}), nfds=P.MAX_FDS + 1)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20).map(lambda o: json.dumps(o).encode()))
def test_fuzz_decoder_raises_only_protocol_errors(data: bytes) -> None:
    try:
        op, rid, args = P.decode_request(data)
    except P.ProtocolError:
        return
    assert op in P.OPS and isinstance(rid, int) and isinstance(args, dict)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "op", "args", "x"]),
                       st.none() | st.integers(-5, 5) | st.text(max_size=10)
                       | st.dictionaries(st.sampled_from(["adapter", "iface", "queue",
                                                          "options", "target"]),
                                         st.none() | st.integers(-2, 2) | st.text(max_size=5)
                                         | st.dictionaries(st.text(max_size=3),
                                                           st.text(max_size=3), max_size=2),
                                         max_size=4),
                       max_size=4))
def test_fuzz_structured_requests(body: dict[str, object]) -> None:
    try:
        P.decode_request(json.dumps(body).encode())
    except P.ProtocolError:
        pass


def test_recv_closes_descriptors_beyond_the_limit() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(P.MAX_FDS + 2)]
    try:
        P.send_msg(a, {"op": "hello", "id": 1}, fds)
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(P.ProtocolError, match="truncated"):
            P.recv_msg(b)
        assert len(os.listdir("/proc/self/fd")) == before  # nothing leaked here
    finally:
        for fd in fds:
            os.close(fd)
        a.close()
        b.close()


# ---- policy ------------------------------------------------------------------------------
def test_default_deny_without_a_policy(tmp_path: object) -> None:
    pol = Policy.load("/nonexistent/efvi-policy.toml")
    with pytest.raises(Denied, match="no grant for user .*default deny"):
        pol.interface(NOBODY, "xdp", "veth0")
    assert pol.interface(ROOT, "xdp", "eth0")  # root could do it directly anyway


def test_grant_allows_only_what_it_names() -> None:
    pol = Policy.parse(POLICY, "p.toml")
    g = pol.interface(NOBODY, "xdp", "veth1")
    pol.queue(NOBODY, g, "xdp", "veth1", 0)
    pol.filter(NOBODY, g, "xdp", "veth1", "udp", "198.18.0.2", 5003)
    pol.filter(NOBODY, g, "xdp", "veth1", "udp", "198.19.255.1", 7000)
    with pytest.raises(Denied, match="queue 1 is refused.*'md' allow queues \\[0\\]"):
        pol.queue(NOBODY, g, "xdp", "veth1", 1)
    with pytest.raises(Denied, match="filter udp 198.18.0.2:6000 .*ports"):
        pol.filter(NOBODY, g, "xdp", "veth1", "udp", "198.18.0.2", 6000)
    with pytest.raises(Denied, match="10.0.0.1"):
        pol.filter(NOBODY, g, "xdp", "veth1", "udp", "10.0.0.1", 5000)
    with pytest.raises(Denied, match="filter tcp"):
        pol.filter(NOBODY, g, "xdp", "veth1", "tcp", "198.18.0.2", 5000)
    with pytest.raises(Denied, match="filter any"):
        pol.filter(NOBODY, g, "xdp", "veth1", "any")
    with pytest.raises(Denied, match="xdp:eth0 is refused.*'md'"):
        pol.interface(NOBODY, "xdp", "eth0")
    other = Caller(1001, 1001, 9, frozenset({1001}))
    with pytest.raises(Denied, match="no grant for user"):
        pol.interface(other, "xdp", "veth1")
    assert pol.limits(g) == (2, 16 << 20)


@pytest.mark.parametrize("text, fault", [
    ("[[grant]\n", "not valid TOML"),
    ("grant = 3\n", "array of tables"),
    ("[x]\n", "unknown top-level"),
    ("[[grant]]\ninterfaces = ['a']\n", "names no users or groups"),
    ("[[grant]]\nusers = [0]\n", "interfaces.*is empty"),
    ("[[grant]]\nusers = ['no-such-user-efvi']\ninterfaces = ['a']\n", "no such name"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\nports = ['70000']\n", "outside 0..65535"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\nfilters = ['icmp']\n", "unknown kind"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\naddresses = ['1.2.3']\n", "addresses"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\nsniff_all = 1\n", "true or false"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\nfoo = 1\n", "unknown key"),
    ("[[grant]]\nusers = [0]\ninterfaces = ['a']\nadapters = ['sim']\n", "only xdp and packet"),
])
def test_malformed_policy_names_the_field(text: str, fault: str) -> None:
    with pytest.raises(PolicyError, match=fault):
        Policy.parse(text, "p.toml")


# ---- specs on the wire --------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "udp:198.18.0.2:5000", "tcp:[fd00::1]:80,[fd00::2]:81", "eth:vid=7,02:00:00:00:00:01",
    "ethertype:0x88f7", "ipproto:17", "multicast-all", "unicast-mis", "sniff:promisc",
    "udp:239.1.2.3:3000,sniff", "arp:198.18.0.9",
])
def test_spec_wire_roundtrip(text: str) -> None:
    spec = parse_filter(text)
    back = spec_from_wire(json.loads(json.dumps(spec_to_wire(spec))))
    assert back == spec
    assert str(back) == str(spec)


def test_spec_classes() -> None:
    assert traffic_class(parse_filter("udp:198.18.0.2:5000")) == ("udp", "198.18.0.2", 5000)
    assert traffic_class(parse_filter("eth:02:00:00:00:00:01"))[0] == "eth"
    assert traffic_class(parse_filter("unicast-all"))[0] == "any"
    assert traffic_class(FilterSpec().bpf([(6, 0, 0, 0xFFFF)]))[0] == "any"


@pytest.mark.parametrize("wire, fault", [
    ({"kind": 11, "program": [[0xFFFF, 0, 0, 0]]}, "."),  # an opcode the kernel refuses
    ({"kind": 2, "bogus": 1}, "unknown field"),
    ({"kind": 2, "local_ip": 5}, "hex"),
    ({"kind": 11, "program": "ret"}, "program"),
    ({"kind": 99}, "99"),
])
def test_bad_wire_specs_are_refused(wire: dict[str, object], fault: str) -> None:
    with pytest.raises((ValueError, SetupError), match=fault):
        spec_from_wire(wire)


# ---- client -----------------------------------------------------------------------------
def test_missing_broker_names_how_to_start_it(tmp_path: object, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setenv("EFVI_BROKER_SOCKET", "/nonexistent/efvid.sock")
    with pytest.raises(SetupError, match="efvid is not running.*systemctl enable --now efvid"):
        BrokerClient()


def test_use_broker_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EFVI_BROKER", raising=False)
    assert use_broker("xdp", "1") and not use_broker("xdp", "0")
    monkeypatch.setattr("efvi.broker.client.effective_caps", lambda: 0)
    monkeypatch.setenv("EFVI_BROKER_SOCKET", "/nonexistent/efvid.sock")
    assert not use_broker("xdp", "auto")  # no broker: the direct path's EPERM says so
    monkeypatch.setenv("EFVI_BROKER_SOCKET", __file__)  # something exists there
    assert use_broker("xdp", "auto") and use_broker("packet", None)
    monkeypatch.setattr("efvi.broker.client.effective_caps", lambda: (1 << 40) - 1)
    assert not use_broker("xdp", "auto")
    monkeypatch.setenv("EFVI_BROKER", "1")
    assert use_broker("packet", "auto")


def test_capability_table() -> None:
    from efvi.caps import CAPS, missing

    assert missing("xdp", 0) == ["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_RAW",
                                 "CAP_IPC_LOCK"]
    only = (1 << CAPS["CAP_BPF"]) | (1 << CAPS["CAP_NET_ADMIN"])
    assert missing("xdp", only) == ["CAP_PERFMON", "CAP_NET_RAW", "CAP_IPC_LOCK"]
    admin = (1 << CAPS["CAP_SYS_ADMIN"]) | (1 << CAPS["CAP_NET_ADMIN"]) \
        | (1 << CAPS["CAP_NET_RAW"])
    assert missing("xdp", admin) == []
    assert missing("packet", 0) == ["CAP_NET_RAW"] and missing("sim", 0) == []


def test_verifier_refusal_names_the_missing_capabilities(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import errno

    from efvi.bpf.syscall import VerifierError
    from efvi.caps import CAPS

    only = (1 << CAPS["CAP_BPF"]) | (1 << CAPS["CAP_NET_ADMIN"])
    monkeypatch.setattr("efvi.caps.effective", lambda: only)
    e = VerifierError("load failed", errno=errno.EACCES, log="R2 pointer arithmetic prohibited")
    assert "CAP_PERFMON, CAP_NET_RAW, CAP_IPC_LOCK" in str(e) and "efvid" in str(e)
    assert "bug in efvi" not in str(e)
    e = VerifierError("load failed", errno=errno.EINVAL, log="invalid insn")
    assert "bug in efvi's program builder" in str(e)  # a real builder fault stays one
