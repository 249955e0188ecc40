"""`runbookd completion SHELL` as a user installs it: each script is valid in its shell and
completes the commands; `runbookd --version` from the installed command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.services import missing

RUNBOOKD = Path(sys.executable).parent / "runbookd"
CHECK_SYNTAX = {
    "bash": ["bash", "-n"],
    "zsh": ["zsh", "-n"],
    "fish": ["fish", "--no-execute"],
}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False
    )


def completion_script(shell: str, tmp_path: Path) -> Path:
    done = run(RUNBOOKD, "completion", shell)
    assert (done.returncode, done.stderr) == (0, "")
    path = tmp_path / f"runbookd.{shell}"
    path.write_text(done.stdout)
    return path


@pytest.mark.parametrize("shell", sorted(CHECK_SYNTAX))
def test_the_script_is_valid_in_its_shell(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        missing(f"{shell} not installed (Debian: apt-get install {shell})")
    script = completion_script(shell, tmp_path)
    done = run(*CHECK_SYNTAX[shell], script)
    assert (done.returncode, done.stderr) == (0, "")


def test_bash_completes_commands_actions_and_options(tmp_path: Path) -> None:
    script = completion_script("bash", tmp_path)
    complete = f"""
    source {script}
    complete_line() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
                       _shtab_runbookd; printf '%s ' "${{COMPREPLY[@]}}"; echo; }}
    complete_line runbookd ''
    complete_line runbookd incidents a
    complete_line runbookd once --c
    """
    done = run("bash", "-c", complete)
    assert done.returncode == 0, done.stderr
    commands, actions, options = (set(line.split()) for line in done.stdout.splitlines())
    assert {"run", "check-config", "once", "incidents", "silence", "completion"} <= commands
    assert actions == {"ack", "approve"}
    assert options == {"--config"}


def test_fish_completes_the_commands(tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        missing("fish not installed (Debian: apt-get install fish)")
    script = completion_script("fish", tmp_path)
    done = run("fish", "--no-config", "-c", f"source {script}; complete -C 'runbookd silence '")
    assert done.returncode == 0, done.stderr
    assert {line.split("\t")[0] for line in done.stdout.splitlines()} == {"list", "add", "expire"}


def test_version_from_the_installed_command() -> None:
    done = run(RUNBOOKD, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"runbookd {version('runbookd')}\n",
        "",
    )
