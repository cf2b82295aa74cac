"""The dispatcher's mechanism: lazy command loading and the exit-status mapping."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from efvi.cli import common
from efvi.cli.main import COMMANDS, main
from efvi.errors import FormatError, SetupError


def _loaded_after(*argv: str) -> set[str]:
    code = ("import sys\nfrom efvi.cli.main import main\n"
            f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith(('efvi', 'numpy'))),"
            " file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    return set(r.stderr.split())


def test_a_command_loads_only_its_own_module() -> None:
    mods = _loaded_after("pcap", "--help")
    assert "efvi.cli.pcap" in mods
    others = {m for m in COMMANDS.values() if m != "efvi.cli.pcap"} & mods
    assert not others, f"loaded other commands: {others}"
    assert "numpy" not in mods  # help needs neither numpy nor the core
    assert {"efvi.cli.sink", "efvi.cli.info"} <= _loaded_after("--help")  # lists them all


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("efvi ")


@pytest.mark.parametrize(("exc", "status"), [
    (common.UsageError("bad -x", hint="use 1..3"), 2),
    (SetupError("no such interface", errno=errno.ENODEV, hint="check the name"), 1),
    (FormatError("not a capture file", offset=0, path="f"), 1),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "f.pcap"), 1),
    (KeyboardInterrupt(), 130),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), 141),
    (SystemExit(0), 0),
])
def test_exit_status_mapping(exc: BaseException, status: int,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert common.exit_status(exc, "efvi x") == status
    err = capsys.readouterr().err
    if status in (1, 2):
        assert err.startswith("efvi x: ") and err.count("\n") == 1 and "Traceback" not in err
    else:
        assert err == ""


def test_a_bug_is_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        common.exit_status(ZeroDivisionError("bug"), "efvi x")


def test_argument_types_turn_bad_values_into_usage_errors() -> None:
    assert main(["sink", "nosuch:eth0", "unicast-all"]) == 2
    assert main(["sink", "-n", "0", "sim", "unicast-all"]) == 2
    assert main(["demo", "--batch", "4096"]) == 2
