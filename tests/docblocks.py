"""Extract the fenced blocks of a Markdown file and run their commands (docs tests).

A block is classified by its info string and content:

* ``python`` — a program: run as a script (or, when its text is a copy of a file in
  ``examples/``, checked to still be that file's text);
* shell — ``sh``/``bash``/``console``, or no info string with ``$ `` prompts: every
  ``$ COMMAND`` line is a command (the lines after it, up to the next prompt, are its
  documented output); in ``sh``/``bash`` blocks without prompts every line is one;
* output — no info string and no prompt (a run's output, a table, a synopsis): a line
  ``efvi CMD ... [-f] [--flag ...]`` is a synopsis, whose flags are checked against
  ``efvi CMD --help``.

``<!-- docs-test: WORDS -->`` on the line before a fence (blank lines between are
allowed) steers the runner: ``run-first`` runs a python block before every other block
of its file (it writes a file the text above it reads); ``same-output`` on a shell
block whose output is deterministic makes every documented output line part of the
check (whitespace ignored, so a list folded onto one line still matches).

Commands run in ``bash`` in a scratch directory that links the repository's
``examples/``, ``tests/``, ``benchmarks/`` and ``contrib/``, with ``efvi``, ``efvid``,
``python`` and ``python3`` on PATH meaning this checkout and its venv. A command whose
line ends in ``echo "exit $?"`` must print the ``exit N`` its documented output shows;
every other command must exit 0. Receivers (``efvi sink``/``capture``/``station``/
``rss``/``forward``/``latency pong``, ``tcpdump -i``) start in the background and the
block's next commands run once they print their first line; before the next receiver
and at the end of the block
they must have finished (exit 0) by themselves, or — when their documented output
shows ``^C`` — stop with a summary on SIGINT; the next receiver starts after that.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = re.compile(r"^\$ (.*)$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```(.*)$")
RECEIVER = re.compile(r"^(?:ip netns exec \S+ )?(?:efvi (?:sink|station|rss|forward|latency pong)\b"
                      r"|efvi capture -i|tcpdump -i)")
EXIT_LINE = re.compile(r"^exit (\d+)$", re.M)
SHELL_LANGS = ("sh", "bash", "console", "shell")


@dataclass
class Block:
    rel: str          # file, relative to the repository
    line: int         # line of the opening fence (1-based)
    lang: str
    text: str
    marker: str = ""

    def where(self) -> str:
        return f"{self.rel}:{self.line}"


@dataclass
class Command:
    block: Block
    line: int
    text: str
    output: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.block.rel}:{self.line}"

    @property
    def expect_exit(self) -> int | None:
        """The status the doc shows with ``; echo "exit $?"`` (None: must be 0)."""
        if 'echo "exit $?"' not in self.text:
            return None
        m = EXIT_LINE.search("\n".join(self.output))
        return int(m.group(1)) if m else None

    @property
    def interrupted(self) -> bool:
        return any(ln.strip() == "^C" for ln in self.output)


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` (fences may be indented, e.g. in list items)."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    rel = str(path.relative_to(ROOT))
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).strip()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        marker = ""
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            mm = MARKER.search(lines[j])
            marker = mm.group(1) if mm else ""
        out.append(Block(rel, start + 1, lang, "\n".join(body) + "\n", marker))
        i += 1
    return out


def kind(b: Block) -> str:
    """``python``, ``shell`` or ``output``."""
    if b.lang == "python":
        return "python"
    if b.lang in SHELL_LANGS or (not b.lang and any(PROMPT.match(ln)
                                                   for ln in b.text.splitlines())):
        return "shell"
    return "output"


def commands(b: Block) -> list[Command]:
    """The commands of a shell block, each with its documented output."""
    lines = b.text.splitlines()
    has_prompt = any(PROMPT.match(ln) for ln in lines)
    out: list[Command] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        m = PROMPT.match(ln) if has_prompt else None
        text = m.group(1) if m else (ln if not has_prompt else None)
        lineno = b.line + 1 + i
        i += 1
        if text is None:
            if out:
                out[-1].output.append(ln)
            continue
        if not has_prompt and (not text.strip() or text.lstrip().startswith("#")):
            continue
        while text.endswith("\\") and i < len(lines):
            text = text[:-1] + " " + lines[i].strip()
            i += 1
        out.append(Command(b, lineno, text.strip()))
    return out


SYNOPSIS = re.compile(r"^efvi ([a-z][a-z ]*?)(?= [A-Z\[-]|$)")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def synopses(b: Block) -> list[tuple[int, list[str], list[str]]]:
    """``(line, command words, flags)`` for each ``efvi CMD ...`` synopsis in an
    output block (continuation lines are indented)."""
    out: list[tuple[int, list[str], list[str]]] = []
    for i, ln in enumerate(b.text.splitlines()):
        m = SYNOPSIS.match(ln)
        if m:
            out.append((b.line + 1 + i, m.group(1).split(), FLAG.findall(ln[m.end():])))
        elif ln.startswith(" ") and out and ln.strip().startswith("["):
            out[-1][2].extend(FLAG.findall(ln))
    return out


INLINE = re.compile(r"`([^`]+)`")
INDENTED = re.compile(r"^    ((?:sudo )?(?:efvi|python3?) .*)$", re.M)


def prose_commands(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of the commands written in prose, outside fenced blocks: inline
    code spans (which may wrap onto the next line) and 4-space indented lines that
    start with ``efvi``, ``python`` or ``sudo python3``."""
    lines = path.read_text().splitlines()
    keep: list[str] = []
    fenced = False
    for ln in lines:
        if FENCE.match(ln) or (fenced and ln.strip().startswith("```")):
            fenced = not fenced
            keep.append("")
            continue
        keep.append("" if fenced else ln)
    text = "\n".join(keep)
    out = [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in INDENTED.finditer(text)]
    joined = text.replace("\n", " ")  # same offsets: a span may wrap
    for m in INLINE.finditer(joined):
        span = " ".join(m.group(1).split())
        if re.match(r"(?:sudo )?(?:efvi|python3?) ", span):
            out.append((text.count("\n", 0, m.start()) + 1, span))
    return out


# ---- running -------------------------------------------------------------------------
def scratch(tmp: Path) -> dict[str, str]:
    """Make ``tmp`` a working directory for doc commands; the environment to use."""
    bindir = tmp / ".bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for d in ("examples", "tests", "benchmarks", "contrib", "docs"):
        link = tmp / d
        if not link.exists():
            link.symlink_to(ROOT / d)
    py = sys.executable
    src = ROOT / "src"
    for name, target in (("efvi", "efvi.cli.main"), ("efvid", "efvi.cli.daemon")):
        script = bindir / name
        script.write_text(f"#!/bin/sh\nPYTHONPATH={src} exec {py} -m {target} \"$@\"\n")
        script.chmod(0o755)
    for name in ("python", "python3"):
        link = bindir / name
        if not link.exists():
            link.symlink_to(py)
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(src)
    env.pop("COLUMNS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Result:
    cmd: Command
    text: str         # what ran (after substitutions)
    rc: int | None    # None: timed out
    out: str
    err: str


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _missing_output(r: Result) -> str | None:
    """The first documented output line the run did not print (whitespace ignored)."""
    got = _squash(r.out) + "\n" + _squash(r.err)
    for ln in r.cmd.output:
        if _squash(ln) and _squash(ln) not in got:
            return ln.strip()
    return None


def _result_problem(r: Result, want: int | None) -> str | None:
    if r.rc is None:
        return "did not finish"
    if want is not None:
        got = EXIT_LINE.findall(r.out)
        if [str(want)] != got[-1:]:
            return f"printed exit {got[-1:] or '(none)'}, the doc shows exit {want}"
        return None
    if r.rc != 0:
        return f"exit status {r.rc}"
    return None


class Runner:
    """Runs the commands of one file's blocks in order, in one scratch directory."""

    def __init__(self, cwd: Path, env: dict[str, str], subst: list[tuple[str, str]],
                 timeout: float = 60.0) -> None:
        self.cwd, self.env, self.subst, self.timeout = cwd, env, subst, timeout
        self.failures: list[str] = []
        self.ran: list[Result] = []

    def rewrite(self, text: str) -> str:
        for pat, rep in self.subst:
            text = re.sub(pat, rep, text)
        return text

    def _fail(self, r: Result, why: str) -> None:
        tail = (r.err.strip().splitlines() or r.out.strip().splitlines() or [""])[-3:]
        self.failures.append(f"{r.cmd.where()}: `{r.text}`: {why}: " + " | ".join(tail))

    def run_shell(self, cmds: list[Command]) -> None:
        background: list[tuple[Command, str, subprocess.Popen[str]]] = []
        for c in cmds:
            text = self.rewrite(c.text)
            if RECEIVER.match(text):  # the receivers before it have had their traffic
                self._finish(background)
                background = []
            if RECEIVER.match(text) and c.expect_exit is None:
                p = subprocess.Popen(["bash", "-c", text], cwd=self.cwd, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
                _wait_ready(p, 4.0)
                background.append((c, text, p))
                continue
            try:
                res = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=self.env,
                                     capture_output=True, text=True, timeout=self.timeout)
                r = Result(c, text, res.returncode, res.stdout, res.stderr)
            except subprocess.TimeoutExpired as exc:
                r = Result(c, text, None, _s(exc.stdout), _s(exc.stderr))
            self.ran.append(r)
            why = _result_problem(r, c.expect_exit)
            if not why and "same-output" in c.block.marker:
                line = _missing_output(r)
                why = f"did not print the documented line {line!r}" if line else None
            if why:
                self._fail(r, why)
        self._finish(background)

    def _finish(self, background: list[tuple[Command, str, subprocess.Popen[str]]]) -> None:
        """Wait for background receivers (SIGINT first where the doc shows ^C)."""
        for c, text, p in background:
            if c.interrupted:
                time.sleep(0.5)
                os.killpg(p.pid, signal.SIGINT)
            try:
                out, err = p.communicate(timeout=30)
                r = Result(c, text, p.returncode, out, err)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, err = p.communicate()
                r = Result(c, text, None, out, err)
            self.ran.append(r)
            why = _result_problem(r, None)
            if why:
                self._fail(r, why)

    def run_python(self, b: Block) -> None:
        script = self.cwd / f"block_{b.line}.py"
        script.write_text(b.text)
        c = Command(b, b.line, f"python {script.name}")
        try:
            res = subprocess.run([sys.executable, script.name], cwd=self.cwd, env=self.env,
                                 capture_output=True, text=True, timeout=self.timeout)
            r = Result(c, c.text, res.returncode, res.stdout, res.stderr)
        except subprocess.TimeoutExpired as exc:
            r = Result(c, c.text, None, _s(exc.stdout), _s(exc.stderr))
        self.ran.append(r)
        why = _result_problem(r, None)
        if why:
            self._fail(r, why)


def _s(v: str | bytes | None) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "")


def _wait_ready(p: subprocess.Popen[str], timeout: float) -> None:
    """Until ``p`` printed something (its 'listening' or header line), exits or
    ``timeout`` passes; then a moment for the attach that follows the line."""
    deadline = time.monotonic() + timeout
    fds = [f for f in (p.stdout, p.stderr) if f is not None]
    while time.monotonic() < deadline and p.poll() is None:
        ready, _, _ = select.select(fds, [], [], 0.1)
        if ready:
            break
    time.sleep(0.3)


def example_copy(b: Block) -> Path | None:
    """The file under ``examples/`` whose text contains this python block, if any."""
    body = b.text.strip()
    for f in sorted((ROOT / "examples").rglob("*.py")):
        if body and body in f.read_text():
            return f
    return None
