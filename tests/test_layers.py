"""Dependencies run one way: every module's imports are checked against the layer map.

Layers, top to bottom (a module may import its own layer and any layer below it):

    cli  →  apps  →  core  →  adapters  →  model  →  support  →  base

``LAYERS`` below is the map (the same table is in docs/design.md): the longest
matching prefix of a module's dotted name picks its layer, so a new package is one
line. What counts as an import:

* **direction** — every import in the file: module level, inside functions, and under
  ``if TYPE_CHECKING:``. A type-only import is still a dependency of the contract
  (mypy and a reader need the imported module), so ``adapters/base.py`` must read
  without the core: what an adapter needs from a core object is a Protocol in
  :mod:`efvi._types`.
* **cycles** — only imports that run when the module is imported (module level, not
  under ``TYPE_CHECKING``): those are the ones a circle breaks.
* **adapters are siblings** — one adapter package (``efvi.adapters.xdp``) may not import
  another (``efvi.adapters.packet``); what two need is support code, or
  ``efvi.adapters.base``/``options``.

The checks are unit-tested on synthetic modules below, so a broken checker cannot pass
silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: layer rank: higher may import lower (and equal), never higher
RANK = {"cli": 6, "apps": 5, "core": 4, "adapters": 3, "model": 2, "support": 1, "base": 0}

#: module prefix → layer (longest prefix wins; extend with one line per new package)
LAYERS: dict[str, str] = {
    "efvi.cli": "cli",
    "efvi.apps": "apps",
    "efvi.testing": "apps",      # conformance suite and netns fixtures: beside the apps
    "efvi.udp": "apps",          # public facades of tools: thin re-exports of efvi.apps.*
    "efvi.capture": "apps",
    "efvi.replay": "apps",
    "efvi": "core",              # the package itself, driver, vi, viset, pio, memory, ...
    "efvi.adapters": "adapters",
    "efvi.filters": "model",     # the vocabulary core and adapters share (ef_vi's headers):
    "efvi.events": "model",      # filter specs, event records and codes
    "efvi.broker": "model",      # efvid's protocol, policy and client (adapters use it)
    "efvi.wire": "support",
    "efvi.pcap": "support",
    "efvi.bpf": "support",
    "efvi.netutil": "support",
    "efvi.netns": "support",     # namespaces and veth pairs (efvi lab, test fixtures)
    "efvi.linkstate": "support",
    "efvi.hwts": "support",
    "efvi.errors": "base",       # everything may raise efvi errors
    "efvi.constants": "base",
    "efvi.caps": "base",         # the capabilities each adapter needs
    "efvi._types": "base",       # Protocols the adapters (and support) type against
}

#: adapter packages that may not import each other
ADAPTER_PACKAGES = ("efvi.adapters.sim", "efvi.adapters.xdp", "efvi.adapters.packet")


def layer_of(module: str, layers: Mapping[str, str] = LAYERS) -> str | None:
    """The layer of ``module`` (None for modules outside efvi)."""
    best = None
    for prefix in layers:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    return layers[best] if best is not None else None


@dataclass(frozen=True)
class Import:
    source: str      # importing module
    target: str      # imported module
    line: int
    runtime: bool    # runs at import time (module level, not under TYPE_CHECKING)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, source: str, is_package: bool,
               known: Iterable[str]) -> list[Import]:
    """Every ``efvi`` import in ``source`` (the text of ``module``).

    ``from efvi.x import y`` is an import of ``efvi.x.y`` when that is a module in
    ``known``, else of ``efvi.x``. Relative imports are resolved against ``module``.
    """
    known = set(known)
    tree = ast.parse(source)
    out: list[Import] = []

    def add(target: str, line: int, runtime: bool) -> None:
        if target == "efvi" or target.startswith("efvi."):
            out.append(Import(module, target, line, runtime))

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for n in node.body:
                visit(n, False)
            for n in node.orelse:
                visit(n, runtime)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for n in ast.iter_child_nodes(node):
                visit(n, False)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, runtime)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base, node.lineno, runtime)
        for n in ast.iter_child_nodes(node):
            visit(n, runtime)

    for n in tree.body:
        visit(n, True)
    return out


def load_tree(src: Path = SRC) -> dict[str, tuple[str, bool]]:
    """``{module: (source text, is_package)}`` for every module under ``src/efvi``."""
    mods: dict[str, tuple[str, bool]] = {}
    for path in sorted((src / "efvi").rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path.read_text(), is_pkg)
    return mods


def all_imports(mods: Mapping[str, tuple[str, bool]]) -> list[Import]:
    out: list[Import] = []
    for name, (text, is_pkg) in mods.items():
        out += imports_of(name, text, is_pkg, mods)
    return out


def upward(imports: Iterable[Import], layers: Mapping[str, str] = LAYERS) -> list[str]:
    """Imports from a lower layer into a higher one, and between adapter packages."""
    bad = []
    for imp in imports:
        src_l, dst_l = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if src_l is None or dst_l is None:
            continue
        if RANK[dst_l] > RANK[src_l]:
            bad.append(f"{imp.source}:{imp.line} ({src_l}) imports {imp.target} ({dst_l})")
        for a in ADAPTER_PACKAGES:
            inside = imp.source == a or imp.source.startswith(a + ".")
            for b in ADAPTER_PACKAGES:
                if a != b and inside and (imp.target == b or imp.target.startswith(b + ".")):
                    bad.append(f"{imp.source}:{imp.line} imports another adapter: {imp.target}")
    return bad


def cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Import-time circles: strongly connected components (size > 1, or a self loop)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.runtime:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan, iterative enough for this graph's depth
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


# ---- the checks on the real tree -------------------------------------------------------
def test_every_module_has_a_layer() -> None:
    missing = [m for m in load_tree() if layer_of(m) is None]
    assert not missing, f"add these to LAYERS: {missing}"


def test_no_module_imports_upward() -> None:
    bad = upward(all_imports(load_tree()))
    assert not bad, "upward imports (see docs/design.md, 'Layers'):\n" + "\n".join(bad)


def test_no_import_time_cycles() -> None:
    found = cycles(all_imports(load_tree()))
    assert not found, "import-time circles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_adapter_contract_reads_without_the_core() -> None:
    mods = load_tree()
    deps = {i.target for i in all_imports({"efvi.adapters.base": mods["efvi.adapters.base"]})}
    core = {d for d in deps if layer_of(d) in ("core", "apps", "cli")}
    assert not core, f"efvi.adapters.base imports {core}"


#: a module holds one concern; past this many lines, split it by concern
MAX_LINES = 600
#: known debt (split by concern when next touched); the list may only shrink: a module
#: that got under MAX_LINES must leave it
OVERSIZE: set[str] = set()


def test_modules_stay_small() -> None:
    sizes = {m: text.count("\n") for m, (text, _) in load_tree().items()}
    big = sorted(m for m, n in sizes.items() if n > MAX_LINES and m not in OVERSIZE)
    assert not big, f"over {MAX_LINES} lines, split by concern: " + ", ".join(
        f"{m} ({sizes[m]})" for m in big)
    done = sorted(m for m in OVERSIZE if sizes.get(m, 0) <= MAX_LINES)
    assert not done, f"no longer oversize, drop from OVERSIZE: {done}"


# ---- the checker itself can fail -------------------------------------------------------
FAKE_KNOWN = ["efvi", "efvi.vi", "efvi.driver", "efvi.adapters", "efvi.adapters.base",
              "efvi.adapters.xdp", "efvi.adapters.xdp.pd", "efvi.adapters.packet",
              "efvi.adapters.packet.ring", "efvi.wire", "efvi.wire.ethernet", "efvi.apps",
              "efvi.apps.sink", "efvi.cli", "efvi.cli.sink", "efvi.errors"]


def _fake(module: str, text: str, is_package: bool = False) -> list[Import]:
    return imports_of(module, text, is_package, FAKE_KNOWN)


def test_checker_flags_a_synthetic_upward_import() -> None:
    imps = _fake("efvi.wire.ethernet", "from efvi.vi import VirtualInterface\n")
    assert upward(imps) == ["efvi.wire.ethernet:1 (support) imports efvi.vi (core)"]
    imps = _fake("efvi.adapters.base",
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from efvi.driver import Driver\n")
    assert len(upward(imps)) == 1 and not imps[0].runtime  # type-only still counts
    imps = _fake("efvi.apps.sink", "def f():\n    from efvi.cli import sink\n")
    assert upward(imps) == ["efvi.apps.sink:2 (apps) imports efvi.cli.sink (cli)"]
    imps = _fake("efvi.adapters.xdp.pd", "from ..packet import ring\n")
    assert upward(imps) == ["efvi.adapters.xdp.pd:1 imports another adapter: "
                            "efvi.adapters.packet.ring"]


def test_checker_allows_downward_and_same_layer_imports() -> None:
    text = ("import efvi.errors\nfrom efvi import vi\nfrom efvi.adapters.base import X\n"
            "from efvi.wire.ethernet import Ethernet\nfrom efvi.apps.sink import Sink\n")
    assert upward(_fake("efvi.cli.sink", text)) == []
    assert upward(_fake("efvi.apps.sink", "from . import sink\n", False)) == []


def test_checker_finds_a_synthetic_cycle_but_not_a_type_only_one() -> None:
    a = _fake("efvi.vi", "from efvi.driver import Driver\n")
    b = _fake("efvi.driver", "from efvi.vi import VirtualInterface\n")
    assert cycles(a + b) == [["efvi.driver", "efvi.vi"]]
    b_typed = _fake("efvi.driver", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from efvi.vi import VirtualInterface\n")
    assert cycles(a + b_typed) == []
    lazy = _fake("efvi.driver", "def f():\n    from efvi.vi import VirtualInterface\n")
    assert cycles(a + lazy) == []


def test_layer_map_longest_prefix_wins() -> None:
    assert layer_of("efvi.adapters.xdp.pd") == "adapters"
    assert layer_of("efvi.errors") == "base" and layer_of("efvi.vi") == "core"
    assert layer_of("efvi.udp") == "apps" and layer_of("efvi.wire.ethernet") == "support"
    assert layer_of("numpy") is None
