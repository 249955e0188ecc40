"""compose_rollback and compose_scale without running docker: config, deadlines, parsing
`docker compose ps`, and a rollback with nothing recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS, RemediationContext
from remediations.compose import (
    ComposeRollback,
    ComposeScale,
    ComposeScaleConfig,
    parse_ps,
)
from tests.fakes import make_incident
from tests.fakes.compose import config, project_directory, rollback, scale
from tests.fakes.standin import StandIn

GOOD = "example/web:1.4.2"


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_directory(tmp_path, GOOD)


async def test_rollback_with_nothing_recorded_does_nothing(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    result = await rollback(project, standin).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "no healthy image recorded yet for web"
    assert standin.calls() == []


def test_deadlines_cover_every_command_and_the_wait(project: Path) -> None:
    assert rollback(project, timeout="20s").config.deadline() == 60.0
    assert scale(project, timeout="20s", scale_in_after="15m").config.deadline() == 960.0
    assert scale(project).config.scale_in_after == 900.0


def test_parse_ps_reads_both_json_shapes() -> None:
    row = {"Service": "web", "Image": GOOD, "State": "running"}

    assert parse_ps(json.dumps(row) + "\n" + json.dumps(row) + "\n") == [row, row]
    assert parse_ps(json.dumps([row])) == [row]
    assert parse_ps("") == []
    with pytest.raises(ValueError, match="not JSON"):
        parse_ps("NAME IMAGE\nshop-web-1 example/web")


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"service": "-d"}, "should match pattern"),
        ({"service": "web app"}, "should match pattern"),
        ({"project_name": "Shop"}, "should match pattern"),
        ({"files": []}, "at least 1 item"),
        ({"files": ["--all"]}, "start with '-'"),
        ({"project_directory": "shop"}, "absolute path"),
        ({"docker": ""}, "at least 1 character"),
        ({"min": 4, "max": 3}, r"min \(4\) exceeds max \(3\)"),
        ({"step": 0}, "greater than or equal to 1"),
        ({"scale_in_after": "15"}, "not a duration"),
        ({"shell": True}, "Extra inputs"),
        ({"env": {"RUNBOOKD_RULE": "x"}}, "set by runbookd"),
    ],
)
def test_scale_config_validation(project: Path, overrides: dict[str, Any], message: str) -> None:
    data = {"type": "compose_scale", "max": 3, **config(project, **overrides)}
    with pytest.raises(ValidationError, match=message):
        ComposeScaleConfig.model_validate(data)


def test_rollback_config_validation(project: Path) -> None:
    with pytest.raises(ValidationError, match="must not be one of files"):
        rollback(project, override_file="docker-compose.yml")
    with pytest.raises(ValidationError, match="Field required"):
        ComposeScaleConfig.model_validate({"type": "compose_scale", **config(project)})


def test_registered_with_their_side_effects(project: Path) -> None:
    assert REMEDIATIONS.get("compose_rollback") is ComposeRollback
    assert REMEDIATIONS.get("compose_scale") is ComposeScale
    assert (rollback(project).idempotent, rollback(project).destructive) == (True, False)
    assert (scale(project).idempotent, scale(project).destructive) == (False, False)
    assert not ComposeRollback.notifier
    assert not ComposeScale.notifier
