"""Integration areas: which area a test belongs to, and whether this machine has it.

``.ci/run`` gates on these per area (``.ci/gate.py``): an area whose feature this
machine has may not skip a single test, except skips *by design* — an adapter that
declares it lacks a capability (see :func:`efvi.testing.conformance.lacks`), whose
reason starts with :data:`BY_DESIGN`.

A test's area: its ``@pytest.mark.area("NAME")`` marker, else the first rule of
:data:`AREA_RULES` matching its file name (integration tests only), else ``netns``.
A new area is one line in :data:`AREA_RULES` (or a marker) and, when it needs more
than network namespaces, one line in :data:`FEATURES`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from collections.abc import Callable

import pytest

from efvi.testing import netns
from efvi.testing.conformance import BY_DESIGN

# file-name substring -> area, first match wins (integration tests without a marker)
AREA_RULES: list[tuple[str, str]] = [
    ("forward", "forward"),  # tools first: test_forward_xdp is a forward test
    ("station", "station"),
    ("udp_integration", "udp"),
    ("replay", "replay"),
    ("capture", "capture"),
    ("xdp", "xdp"),
    ("packet", "packet"),
    ("interop_pcap", "interop"),
    ("wire_kernel", "netns"),
]
DEFAULT_AREA = "netns"


def _tools(*names: str) -> str | None:
    missing = [n for n in names if shutil.which(n) is None]
    return f"missing programs: {', '.join(missing)}" if missing else None


def _modules(*names: str) -> str | None:
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    return f"missing Python modules: {', '.join(missing)}" if missing else None


def _socket(family: int, kind: int, what: str) -> str | None:
    try:
        socket.socket(family, kind, 0).close()
    except OSError as exc:
        return f"cannot open {what} sockets ({exc.strerror})"
    return None


def _all(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    def check() -> str | None:
        for c in checks:
            reason = c()
            if reason:
                return reason
        return None
    return check


# area -> None when this machine has what the area's tests need, else why not
FEATURES: dict[str, Callable[[], str | None]] = {
    "netns": _all(netns.why_unavailable, lambda: _tools("unshare"),
                lambda: None if os.path.exists("/dev/net/tun") else "no /dev/net/tun"),
    "xdp": _all(netns.why_unavailable, lambda: _socket(44, socket.SOCK_RAW, "AF_XDP")),
    "packet": _all(netns.why_unavailable,
                   lambda: _socket(socket.AF_PACKET, socket.SOCK_RAW, "AF_PACKET")),
    "forward": lambda: FEATURES["xdp"]() or FEATURES["packet"](),
    "interop": _all(lambda: _tools("tcpdump", "tshark", "capinfos", "editcap"),
                    lambda: _modules("scapy", "dpkt")),
}


def area_of(item_path: str, markers: list[pytest.Mark], integration: bool) -> str | None:
    """The area of a test, or None for a test no area gates."""
    for m in markers:
        if m.name == "area" and m.args:
            return str(m.args[0])
    if not integration:
        return None
    stem = os.path.basename(item_path)
    for pattern, area in AREA_RULES:
        if pattern in stem:
            return area
    return DEFAULT_AREA


def feature_missing(area: str) -> str | None:
    return FEATURES.get(area, FEATURES[DEFAULT_AREA])()


class Recorder:
    """Per-area outcomes of one pytest session (works under pytest-xdist too: the area
    travels in each report's ``user_properties``)."""

    def __init__(self) -> None:
        self.areas: dict[str, dict[str, object]] = {}

    @staticmethod
    def collected(items: list[pytest.Item]) -> None:
        for it in items:
            area = area_of(str(it.path), list(it.iter_markers()),
                           it.get_closest_marker("integration") is not None)
            if area is not None:
                it.user_properties.append(("efvi_area", area))

    def _slot(self, area: str) -> dict[str, object]:
        return self.areas.setdefault(area, {"passed": 0, "failed": 0, "skipped": 0,
                                            "by_design": 0, "skips": []})

    def report(self, rep: pytest.TestReport) -> None:
        area = dict(rep.user_properties).get("efvi_area")
        if area is None:
            return
        if not (rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed")
                or (rep.when == "teardown" and rep.outcome == "failed")):
            return
        slot = self._slot(area)
        if rep.outcome == "skipped":
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            reason = reason.removeprefix("Skipped: ")
            if reason.startswith(BY_DESIGN):
                slot["by_design"] = int(slot["by_design"]) + 1  # type: ignore[call-overload]
            else:
                slot["skipped"] = int(slot["skipped"]) + 1  # type: ignore[call-overload]
            skips = slot["skips"]
            assert isinstance(skips, list)
            skips.append(f"{rep.nodeid}: {reason}")
        else:
            slot[rep.outcome] = int(slot[rep.outcome]) + 1  # type: ignore[call-overload]

    def write(self, path: str) -> None:
        out = {}
        for area in sorted(self.areas):
            out[area] = dict(self.areas[area], missing=feature_missing(area))
        totals = {k: sum(int(a[k]) for a in self.areas.values())  # type: ignore[call-overload]
                  for k in ("passed", "failed", "skipped", "by_design")}
        with open(path, "w") as f:
            json.dump({"areas": out, **totals}, f, indent=1)
