"""``efvi info``: facts of a veth interface, and the XDP program owner while efvi holds it."""

from __future__ import annotations

import json
import os
import sys

import pytest

from efvi import Driver
from efvi.testing import netns

from xdp_helpers import no_xdp_left, skip_unless_xdp

pytestmark = pytest.mark.integration


def _info(side: netns.Side, *args: str) -> dict[str, object]:
    r = side.run(sys.executable, "-m", "efvi.cli.main", "info", side.ifname, "--json", *args)
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_info_reports_interface_queues_and_efvi_ownership() -> None:
    skip_unless_xdp()
    with netns.veth_pair(queues=2, subnet=72) as p:
        a = p.a
        d = _info(a)["interfaces"][0]  # type: ignore[index]
        assert d["name"] == a.ifname and d["mac"] == a.mac and d["mtu"] == 1500
        assert d["rx_queues"] == 2 and d["driver"] == "veth" and d["state"] == "up"
        assert f"{a.ip}/24" in d["addresses"] and d["xdp_program"] is None
        xdp = d["adapters"]["xdp"]
        assert xdp["usable"] and xdp["steal"] and not xdp["sniff"] and xdp["rx_queues"] == 2
        assert xdp["zero_copy"] is False  # veth has no AF_XDP zero-copy
        assert d["adapters"]["packet"]["sniff"] is True
        with netns.enter(a.netns):
            drv = Driver.open(f"xdp:{a.ifname}")
        try:
            d = _info(a, "--no-packet")["interfaces"][0]  # type: ignore[index]
            assert d["xdp_program"]["efvi_pid"] == os.getpid()
            assert d["xdp_program"]["owner_alive"] is True
        finally:
            drv.close()
        no_xdp_left(a)
        r = a.run(sys.executable, "-m", "efvi.cli.main", "info", "nosuch0", check=False)
        assert r.returncode == 1 and "ENODEV" in r.stderr
