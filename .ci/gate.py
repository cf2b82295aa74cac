"""CI's per-area integration gate: reads the report tests/conftest.py wrote
(``EFVI_INTEGRATION_REPORT``), prints per-area counts, and exits 1 when

* an area whose feature this machine has (root, netns, AF_XDP, AF_PACKET, tcpdump/
  tshark, ...: ``tests/areas.py`` FEATURES) skipped any test other than a by-design
  skip (an adapter declaring it lacks a capability), or
* such an area ran no test at all, or the report has no area.

Usage: python .ci/gate.py REPORT.json
"""

from __future__ import annotations

import json
import sys


def gate(report: dict[str, object]) -> tuple[list[str], list[str]]:
    """(lines to print, failures) for a report."""
    areas = report.get("areas")
    lines = [f"{'area':<10} {'passed':>7} {'failed':>7} {'skipped':>8} {'by-design':>10}  feature"]
    failures: list[str] = []
    if not isinstance(areas, dict) or not areas:
        return lines, ["no integration area ran (none collected?)"]
    for name, a in sorted(areas.items()):
        missing = a.get("missing")
        lines.append(f"{name:<10} {a['passed']:>7} {a['failed']:>7} {a['skipped']:>8} "
                     f"{a['by_design']:>10}  {'present' if not missing else 'MISSING: ' + missing}")
        if missing:
            continue  # this machine lacks the feature: its skips are expected
        if a["skipped"]:
            skips = [s for s in a.get("skips", []) if "by design: " not in s]
            failures.append(f"area {name}: {a['skipped']} test(s) skipped on a machine that has "
                            f"the feature:\n    " + "\n    ".join(skips))
        elif a["passed"] == 0 and a["failed"] == 0:
            failures.append(f"area {name}: no test ran")
    return lines, failures


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        report = json.load(f)
    lines, failures = gate(report)
    print("integration tests by area:")
    print("\n".join("  " + ln for ln in lines))
    for msg in failures:
        print(f"CI gate: {msg}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
