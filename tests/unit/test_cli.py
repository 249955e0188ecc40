"""The `runbookd` command in-process: --version, completion scripts, what `incidents show` says
an incident came from, and the exit codes of `once`."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

import daemon
from daemon.cli.main import ONCE_EXIT_CODES, _parser, main
from daemon.cli.once import AGAIN_AFTER_MAX, OnceExit, exit_code
from daemon.cli.output import source
from daemon.core.models import Status


def commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"runbookd {version('runbookd')}\n"
    assert daemon.__version__ == version("runbookd")  # what /metrics and OpenAPI report


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_completion_script_names_every_command_and_completes_config_as_a_file(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    names = commands(_parser())
    assert {"run", "check-config", "once", "incidents", "silence", "completion"} <= set(names)
    for name in names:
        assert name in script
    for word in ("ack", "approve", "expire", "--token-file", "--config"):
        assert word in script
    files = {"bash": "_shtab_compgen_files", "zsh": "_files", "fish": "__fish_complete_path"}
    assert files[shell] in script


def test_completion_refuses_another_shell(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["completion", "tcsh"])
    assert done.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err


# -- what an incident came from --------------------------------------------------------------


def test_a_check_rules_incident_names_its_check() -> None:
    assert source({"check": "health", "trigger": {"value": 0}}) == " (check health)"


def test_an_alert_incident_names_its_alert_and_counts_those_that_joined() -> None:
    alert = {"alert": "HighErrorRate", "fingerprint": "a1", "source": "alertmanager"}
    timeline = [
        {"kind": "opened", "data": alert},
        {"kind": "alert", "data": alert | {"fingerprint": "a2"}},  # one joined
        {"kind": "alert", "data": {"count": 3, "alerts": [alert], "more": 2}},  # three at once
        {"kind": "alert", "data": {"truncated_alerts": 5, "groups": 1}},  # a note, no alert
        {"kind": "action", "data": {}},
    ]
    incident = {"check": "", "trigger": alert, "timeline": timeline}
    assert source(incident) == " (alert HighErrorRate from alertmanager, 5 alerts)"
    assert (
        source(incident | {"timeline": []}) == " (alert HighErrorRate from alertmanager, 1 alert)"
    )


def test_an_incident_of_neither_kind_adds_nothing() -> None:
    # A rule's alert_cap incident: no check, no alert of its own.
    assert source({"check": "", "trigger": {"firing": 5000}}) == ""
    assert source({"check": None, "trigger": None}) == ""


# -- once -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([Status.OK, Status.OK], OnceExit.OK),
        ([], OnceExit.OK),
        ([Status.OK, Status.UNKNOWN], OnceExit.UNKNOWN),
        ([Status.WARN, Status.OK], OnceExit.BAD),
        ([Status.UNKNOWN, Status.CRITICAL], OnceExit.BAD),  # bad outranks unknown
    ],
)
def test_once_exit_codes(statuses: list[Status], code: OnceExit) -> None:
    assert exit_code(statuses) is code


def test_once_help_states_its_exit_codes_and_pause() -> None:
    for code in OnceExit:
        assert f"\n  {int(code)}  " in ONCE_EXIT_CODES
    assert f"at most {AGAIN_AFTER_MAX:g}s" in ONCE_EXIT_CODES


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["incidents", "--status", "open"], (None, "open", None, None)),
        (
            ["incidents", "list", "--status", "resolved", "--limit", "5"],
            ("list", "resolved", None, 5),
        ),
        (["incidents", "--rule", "errors", "list"], ("list", None, "errors", None)),
        (["incidents"], (None, None, None, None)),
    ],
)
def test_incidents_take_the_list_options_before_or_after_list(
    argv: list[str], expected: tuple[object, ...]
) -> None:
    args = _parser().parse_args(argv)
    assert (args.action, args.status, args.rule, args.limit) == expected
