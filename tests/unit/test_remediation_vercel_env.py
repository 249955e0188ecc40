"""`vercel_env` (maintenance mode) without an API: defaults, registration and config."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.vercel_env import EnvConfig, VercelEnv
from tests.fakes.vercel import TOKEN


def test_config_defaults_and_registration() -> None:
    parsed = EnvConfig.model_validate({"type": "vercel_env", "token": TOKEN, "project_id": "x"})

    assert (parsed.key, parsed.value, parsed.env_target, parsed.env_type) == (
        "MAINTENANCE_MODE",
        "true",
        ["production"],
        "encrypted",
    )
    assert REMEDIATIONS.get("vercel_env") is VercelEnv
    assert VercelEnv.idempotent
    assert VercelEnv.destructive
    assert not parsed.remove


def test_removing_the_variable_needs_no_approval() -> None:
    data = {"type": "vercel_env", "token": TOKEN, "project_id": "x", "remove": True}
    off = VercelEnv("maintenance_off", EnvConfig.model_validate(data))
    on = VercelEnv("maintenance_on", EnvConfig.model_validate({**data, "remove": False}))

    assert (off.destructive, on.destructive) == (False, True)


@pytest.mark.parametrize(
    "overrides",
    [
        {"key": "1BAD"},
        {"env_target": []},
        {"env_target": ["staging"]},
        {"env_type": "system"},
        # Vercel refuses sensitive variables for development.
        {"env_type": "sensitive", "env_target": ["production", "development"]},
    ],
)
def test_bad_config_is_refused(overrides: dict[str, Any]) -> None:
    data = {"type": "vercel_env", "token": TOKEN, "project_id": "x", **overrides}
    with pytest.raises(ValidationError):
        EnvConfig.model_validate(data)
