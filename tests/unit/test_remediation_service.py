"""systemd_restart and pm2_restart without running a tool: unit and process names, parsing
`pm2 jlist`, the deadline, and registration."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.service import (
    Pm2Restart,
    SystemdRestart,
    parse_jlist,
)
from tests.fakes.service import pm2, systemd


@pytest.mark.parametrize(
    "unit",
    [
        "web*",
        "-web",
        "--now",
        "web service",
        "a/b.service",
        "$(reboot)",
        "web;reboot",
        "",
        "x" * 256,
        "app@.service",
    ],
)
def test_invalid_unit_names_are_refused(unit: str) -> None:
    with pytest.raises(ValidationError, match="not a valid systemd unit name"):
        systemd(unit=unit)


@pytest.mark.parametrize(
    "unit",
    ["web", "web.service", "app@blue.service", "nginx.socket", "backup.timer", "dev-sda1.swap"],
)
def test_valid_unit_names(unit: str) -> None:
    assert systemd(unit=unit).config.unit == unit


def test_parse_jlist_skips_pm2_notices() -> None:
    listed = [{"name": "api", "pm_id": 0, "pm2_env": {"status": "online"}}]
    stdout = (
        "[PM2] Spawning PM2 daemon with pm2_home=/root/.pm2\n[PM2] PM2 Successfully daemonized\n"
    )

    assert parse_jlist(stdout + json.dumps(listed) + "\n") == listed
    assert parse_jlist("[]\n") == []
    with pytest.raises(ValueError, match="no JSON array"):
        parse_jlist("[PM2][ERROR] Daemon not launched\n")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("all", "restarting every pm2 process"),
        ("-s", "not a pm2 process name"),
        ("my api", "not a pm2 process name"),
        ("", "not a pm2 process name"),
        (True, "name or numeric id"),
        (["api"], "name or numeric id"),
    ],
)
def test_pm2_name_validation(name: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        pm2(name=name)


# --- both ------------------------------------------------------------------------------------


def test_deadline_covers_restart_checks_and_waits() -> None:
    # restart + 5 checks, 30s each, and 4 waits of 2s between the checks.
    assert systemd().config.deadline() == 6 * 30.0 + 4 * 2.0
    assert pm2(timeout="10s", verify_attempts=1).config.deadline() == 20.0


def test_registered_as_not_idempotent() -> None:
    assert REMEDIATIONS.get("systemd_restart") is SystemdRestart
    assert REMEDIATIONS.get("pm2_restart") is Pm2Restart
    for remediation in (systemd(), pm2()):
        assert (remediation.idempotent, remediation.destructive) == (False, False)
        assert remediation.notifier is False
