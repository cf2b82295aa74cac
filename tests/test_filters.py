"""FilterSpec setters, incompatibilities and efsink's filter grammar."""

from __future__ import annotations

import errno

import pytest

from efvi import FilterSpec, SetupError, parse_filter
from efvi.filters import FilterKind


def test_setters_compose_in_either_order() -> None:
    a = FilterSpec.ip4_local("udp", "239.1.1.1", 5000).vlan(10)
    b = FilterSpec.vlan(10).ip4_local("udp", "239.1.1.1", 5000)
    assert a == b and a.kind == FilterKind.IP_LOCAL and a.vlan_id == 10 and a.is_multicast
    e = FilterSpec.eth_local("02:00:00:00:00:01", vlan=3).ip_proto(17)
    assert e.kind == FilterKind.ETH and e.ipproto == 17 and e.vlan_id == 3
    assert not FilterSpec.eth_local("02:00:00:00:00:01").is_multicast


@pytest.mark.parametrize("build", [
    lambda: FilterSpec.ip4_local("udp", "198.18.0.1", 1).eth_local("02:00:00:00:00:01"),
    lambda: FilterSpec.unicast_all().ip4_local("udp", "198.18.0.1", 1),
    lambda: FilterSpec.port_sniff().vlan(3),
    lambda: FilterSpec.ip4_local("udp", "198.18.0.1", 1).vlan(3).vlan(4),
    lambda: FilterSpec.eth_local("02:00:00:00:00:01").eth_type(0x800).ip_proto(6),
])
def test_incompatible_parts_raise_eprotonosupport(build: object) -> None:
    with pytest.raises(SetupError) as ei:
        build()  # type: ignore[operator]
    assert ei.value.errno == errno.EPROTONOSUPPORT and "cannot combine" in str(ei.value)


@pytest.mark.parametrize("build", [
    lambda: FilterSpec.ip4_local("icmp", "198.18.0.1", 1),
    lambda: FilterSpec.ip4_local("udp", "198.18.0.1", 70000),
    lambda: FilterSpec.ip4_local("udp", "ff02::1", 1),
    lambda: FilterSpec.vlan(4096),
    lambda: FilterSpec.eth_local("zz:00:00:00:00:01"),
])
def test_bad_values_raise(build: object) -> None:
    with pytest.raises(SetupError):
        build()  # type: ignore[operator]


def test_empty_spec_is_rejected_on_use() -> None:
    with pytest.raises(SetupError, match="matches nothing"):
        FilterSpec().check()


@pytest.mark.parametrize("text,kind", [
    ("udp:198.18.0.2:9000", FilterKind.IP_LOCAL),
    ("tcp:198.18.0.2:80,198.18.0.1:1234", FilterKind.IP_FULL),
    ("udp:vid=5,239.1.1.1:5000", FilterKind.IP_LOCAL),
    ("udp:[ff15::1]:5000", FilterKind.IP_LOCAL),
    ("eth:02:00:00:00:00:01", FilterKind.ETH),
    ("eth:vid=3,ipproto=17,02:00:00:00:00:01", FilterKind.ETH),
    ("ethertype:0x88f7", FilterKind.ETHERTYPE),
    ("ipproto:vid=2,1", FilterKind.IPPROTO),
    ("unicast-all", FilterKind.UNICAST_ALL),
    ("multicast-all", FilterKind.MULTICAST_ALL),
    ("unicast-mis", FilterKind.UNICAST_MISMATCH),
    ("multicast-mis:vid=9", FilterKind.MULTICAST_MISMATCH),
    ("sniff:no-promisc", FilterKind.ALL),
])
def test_efsink_grammar(text: str, kind: FilterKind) -> None:
    spec = parse_filter(text)
    assert spec.kind == kind


def test_grammar_bad_mac_names_the_format() -> None:
    with pytest.raises(SetupError, match="6 hex pairs"):
        parse_filter("eth:zz")


def test_grammar_sniff_suffix_and_vlan() -> None:
    s = parse_filter("udp:vid=5,239.1.1.1:5000,sniff")
    assert s.sniff_mode and s.vlan_id == 5


@pytest.mark.parametrize("text", ["udp:1.2.3.4", "udp:1.2.3.4:x", "bogus", "eth:",
                                  "sniff:maybe", "udp:1.2.3.4:1,5.6.7.8:2,9.9.9.9:3"])
def test_grammar_errors_name_the_forms(text: str) -> None:
    with pytest.raises(SetupError, match="forms:"):
        parse_filter(text)
