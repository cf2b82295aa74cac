"""Every command and code block in README.md and docs/*.md runs as written (issue 9, #19).

Blocks are extracted and classified by ``tests/docblocks.py`` (its docstring has the
rules): shell commands run in order in one scratch directory per file, python blocks
run as scripts (or must still be the ``examples/`` file they copy), ``efvi CMD``
synopses must name only flags ``efvi CMD --help`` has. Commands in the README's lab
(``efvi lab up``, ``ip netns exec efvi-a ...``) run in a lab of this test's own
(``efvit<pid>``: parallel runs do not collide), removed at the end even on failure.

What cannot run here is in :data:`SKIP` with the reason; an entry that matches
nothing fails the test (the table cannot go stale), and a command neither run nor
skipped cannot exist (every command of a shell block is one or the other).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import docblocks as d
from efvi import netns

DOCS = [d.ROOT / "README.md", *sorted((d.ROOT / "docs").glob("*.md"))]

#: (file, text the command or python block contains) → why it does not run here
SKIP: dict[tuple[str, str], str] = {
    ("README.md", "apt-get update && apt-get install -y python3"):
        "installs system packages and a venv (CI's .ci/run does the same install)",
    ("README.md", "DEBIAN_FRONTEND=noninteractive apt-get install"):
        "installs packages, then runs the whole test suite this test is part of",
    ("README.md", "install -D -m 644 contrib/policy.example.toml"):
        "writes /etc (tests/test_broker_integration.py runs efvid with its own policy)",
    ("README.md", "systemctl enable --now efvid"):
        "installs and starts a system service",
    ("docs/security.md", "install -D -m 644 contrib/policy.example.toml"):
        "writes /etc (tests/test_broker_integration.py runs efvid with its own policy)",
    ("docs/security.md", "systemctl enable --now efvid"):
        "installs and starts a system service",
    ("README.md", "as-nobody efvi"):
        "needs efvid running with a policy granting user nobody "
        "(tests/test_broker_integration.py does that run)",
    ("README.md", "efvi forward xdp:"):
        "needs three namespaces A - F - C (tests/test_forward_integration.py runs it)",
    ("README.md", "efvi rss xdp:"):
        "needs a 4-queue veth and 16 kernel-socket flows (tests/test_rss.py runs it)",
    ("docs/design.md", "efvi sink packet:h3c sniff"):
        "needs the interface deleted while it runs (tests/test_hardening_link.py does it)",
    ("docs/design.md", "efvi send packet:h3a 198.18.97.2"):
        "needs a veth pair with its peer down (tests/test_hardening_link.py runs it)",
}

NETNS_CMD = re.compile(r"\bip (?:netns exec|-n)\b|\befvi lab\b")


def _skip_reason(rel: str, text: str) -> str | None:
    for (f, needle), why in SKIP.items():
        if f == rel and needle in text:
            return why
    return None


def _all_blocks() -> list[d.Block]:
    return [b for f in DOCS for b in d.blocks(f)]


# ---- classification: no command unaccounted for, no stale skip ------------------------
def test_every_block_is_classified_and_every_skip_is_used() -> None:
    used: set[tuple[str, str]] = set()
    n_cmds = n_py = 0
    for b in _all_blocks():
        k = d.kind(b)
        texts = [c.text for c in d.commands(b)] if k == "shell" else \
            [b.text] if k == "python" else []
        for t in texts:
            for (f, needle) in SKIP:
                if f == b.rel and needle in t:
                    used.add((f, needle))
        n_cmds += len(texts) if k == "shell" else 0
        n_py += k == "python"
    assert n_cmds > 40 and n_py > 5, (n_cmds, n_py)  # the extractor still finds them
    stale = set(SKIP) - used
    assert not stale, f"SKIP entries that match no documented command: {sorted(stale)}"


def test_repository_paths_in_commands_exist() -> None:
    """Skipped or not, a command's ``examples/``, ``contrib/``, ``benchmarks/`` ... path
    must exist."""
    missing = []
    for b in _all_blocks():
        if d.kind(b) != "shell":
            continue
        for c in d.commands(b):
            for tok in re.findall(r"(?<![\w/.-])((?:examples|contrib|benchmarks|tests|docs)/"
                                  r"[\w./-]+)", c.text):
                if not (d.ROOT / tok).exists():
                    missing.append(f"{c.where()}: {tok}")
    assert not missing, missing


# ---- synopses ------------------------------------------------------------------------------
def _flags(words: list[str]) -> set[str]:
    """The option strings ``efvi WORDS`` really has (not its help text, which may
    quote an old synopsis)."""
    from efvi.cli.main import build_parser

    parser = build_parser(words[0])
    for w in words:
        sub = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not sub:
            break
        choices = sub[0].choices  # type: ignore[attr-defined]
        if w not in choices:
            break
        parser = choices[w]
    return {o for a in parser._actions for o in a.option_strings}


def test_synopses_name_only_real_flags() -> None:
    bad = []
    n = 0
    for b in _all_blocks():
        if d.kind(b) != "output":
            continue
        for line, words, flags in d.synopses(b):
            have = _flags(words)
            n += 1
            bad += [f"{b.rel}:{line}: efvi {' '.join(words)} has no {f}" for f in flags
                    if f not in have]
    assert n >= 5, n
    assert not bad, "\n".join(bad)


def _efvi_words(text: str) -> list[str] | None:
    """The command words of an ``efvi ...`` line (``["pcap", "info"]``), None when the
    second word is not an efvi command (prose such as ``efvi replay: IF went down``)."""
    from efvi.cli.main import COMMANDS

    words = text.split()
    if len(words) < 2 or words[0] != "efvi" or words[1] not in COMMANDS:
        return None
    out = [words[1]]
    for w in words[2:]:
        if not re.fullmatch(r"[a-z]+", w):
            break
        out.append(w)
    return out


_BENCH_HELP: dict[str, str] = {}


def _bench_flags(script: str) -> str:
    """``python benchmarks/X.py --help``'s options section."""
    if script not in _BENCH_HELP:
        res = subprocess.run([sys.executable, str(d.ROOT / script), "--help"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(d.ROOT / "src")})
        assert res.returncode == 0, (script, res.stderr[-500:])
        _BENCH_HELP[script] = res.stdout.split("options:", 1)[-1]
    return _BENCH_HELP[script]


def test_commands_in_prose_name_only_real_flags() -> None:
    """Inline `efvi ...` / `python benchmarks/...` spans and indented synopses: every
    flag exists (they are not run: they hold placeholders, or are long benchmarks)."""
    bad = []
    n_efvi = n_bench = 0
    for f in DOCS:
        for line, text in d.prose_commands(f):
            where = f"{f.relative_to(d.ROOT)}:{line}"
            flags = d.FLAG.findall(text.split(" ", 2)[-1] if text.startswith("efvi") else text)
            words = _efvi_words(text)
            if words is not None:
                n_efvi += 1
                have = _flags(words)
                flags = d.FLAG.findall(" ".join(text.split()[1 + len(words):]))
                bad += [f"{where}: efvi {' '.join(words)} has no {fl}" for fl in flags
                        if fl not in have]
                continue
            m = re.match(r"(?:sudo )?python3? (benchmarks/\w+\.py)(.*)", text)
            if m:
                n_bench += 1
                if not (d.ROOT / m.group(1)).exists():
                    bad.append(f"{where}: no {m.group(1)}")
                    continue
                opts = _bench_flags(m.group(1))
                bad += [f"{where}: {m.group(1)} has no {fl}" for fl in d.FLAG.findall(m.group(2))
                        if not re.search(rf"(?<![\w-]){re.escape(fl)}(?![\w-])", opts)]
    assert n_efvi >= 10 and n_bench >= 5, (n_efvi, n_bench)
    assert not bad, "\n".join(bad)


# ---- running ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab_name() -> Iterator[str]:
    """A lab name of this process; removed after the module even on failure (and labs
    of test processes that died are removed first)."""
    if netns.why_unavailable() is None:
        for ns in netns.list_netns():
            m = re.fullmatch(r"efvit(\d+)-[ab]", ns)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                netns.del_netns(ns)
    name = f"efvit{os.getpid()}"
    try:
        yield name
    finally:
        if netns.why_unavailable() is None:
            for side in ("a", "b"):
                netns.del_netns(f"{name}-{side}")


def _substitutions(name: str) -> list[tuple[str, str]]:
    """The lab's names → this run's; cross-process sim wires (abstract sockets, one
    name space per host network namespace) get this run's suffix too."""
    return [(r"\befvi-([ab])\b", rf"{name}-\1"), (r"wire=@(\w+)", rf"wire=@\1-{name}"),
            (r"\befvi lab (up|down|status)\b(?! --name)", rf"efvi lab \1 --name {name}")]


def _run_file(path: Path, tmp: Path, name: str) -> d.Runner:
    env = d.scratch(tmp)
    runner = d.Runner(tmp, env, _substitutions(name))
    blocks = d.blocks(path)
    order = [b for b in blocks if "run-first" in b.marker] + \
        [b for b in blocks if "run-first" not in b.marker]
    can_netns = netns.why_unavailable() is None
    for b in order:
        k = d.kind(b)
        if k == "python":
            if _skip_reason(b.rel, b.text) or d.example_copy(b):
                continue  # an examples/ copy: that file is what tests run
            runner.run_python(b)
        elif k == "shell":
            cmds = [c for c in d.commands(b) if not _skip_reason(b.rel, c.text)
                    and (can_netns or not NETNS_CMD.search(c.text))]
            runner.run_shell(cmds)
    return runner


@pytest.mark.integration
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_run(doc: Path, tmp_path: Path, lab_name: str) -> None:
    runner = _run_file(doc, tmp_path, lab_name)
    if doc.name == "README.md" and netns.why_unavailable() is None:  # the lab part ran
        assert sum("ip netns exec efvit" in r.text for r in runner.ran) >= 20, \
            [r.text for r in runner.ran]
    assert not runner.failures, f"{len(runner.failures)} documented command(s) failed:\n" + \
        "\n".join(runner.failures)


# ---- the runner itself can fail ---------------------------------------------------------------
def test_runner_fails_on_a_renamed_flag_a_wrong_status_and_a_drifted_synopsis(
        tmp_path: Path) -> None:
    doc = d.ROOT / "tests" / f".docs_selftest_{os.getpid()}.md"
    doc.write_text(
        "```\n$ efvi demo -n 200\nok\n$ efvi demo --numbr 200\n"
        "$ efvi demo -n 0; echo \"exit $?\"\nexit 0\n```\n\n"
        "```python\nimport efvi\nraise SystemExit(3)\n```\n\n"
        "```\nefvi demo [-n N] [--no-such-flag]\n```\n\n"
        "<!-- docs-test: same-output -->\n```\n$ echo 'a  b'\na b\n$ echo hi\nbye\n```\n")
    try:
        runner = _run_file(doc, tmp_path, "efvit0")
        fails = "\n".join(runner.failures)
        assert len(runner.failures) == 4, fails
        assert "--numbr 200`: exit status 2" in fails
        assert "printed exit ['2'], the doc shows exit 0" in fails
        assert "python block_" in fails and "exit status 3" in fails
        assert "`echo hi`: did not print the documented line 'bye'" in fails
        syn = [s for b in d.blocks(doc) for s in d.synopses(b)]
        assert syn == [(15, ["demo"], ["-n", "--no-such-flag"])]
        have = _flags(["demo"])
        assert "-n" in have and "--no-such-flag" not in have
    finally:
        doc.unlink()


def test_efvi_on_path_is_this_checkout(tmp_path: Path) -> None:
    env = d.scratch(tmp_path)
    out = subprocess.run(["bash", "-c", "efvi --version; python -c 'import efvi, numpy; "
                          "print(efvi.__file__)'"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("efvi ") and str(d.ROOT / "src") in out, out
    assert sys.executable  # the venv's python runs the blocks
