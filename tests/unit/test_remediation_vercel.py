"""`vercel_rollback` and `vercel_promote` without an API: registration, config, token files
and the deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.vercel import (
    RollbackConfig,
    VercelPromote,
    VercelRollback,
)
from tests.fakes.vercel import TOKEN, config

# -- config ---------------------------------------------------------------------------------


def test_the_remediations_are_registered() -> None:
    assert REMEDIATIONS.get("vercel_rollback") is VercelRollback
    assert REMEDIATIONS.get("vercel_promote") is VercelPromote
    assert VercelRollback.idempotent
    assert not VercelRollback.destructive


def test_the_token_may_come_from_a_file_and_never_shows(tmp_path: Path) -> None:
    secret = tmp_path / "vercel-token"
    secret.write_text(TOKEN + "\n")

    parsed = RollbackConfig.model_validate(
        {"type": "vercel_rollback", "token_file": str(secret), "project_id": "storefront"}
    )

    assert parsed.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(parsed)
    assert parsed.api_url == "https://api.vercel.com"
    assert parsed.verify_timeout == 300.0
    assert parsed.poll_interval == 5.0


@pytest.mark.parametrize(
    "overrides",
    [{"token": " "}, {"project_id": "a/b"}, {"api_url": "ftp://x"}, {"search_limit": 1}],
)
def test_bad_config_is_refused(overrides: dict[str, Any]) -> None:
    data = config("https://api.vercel.com", "vercel_rollback") | overrides
    with pytest.raises(ValidationError):
        RollbackConfig.model_validate(data)


def test_the_deadline_covers_the_calls_and_the_wait() -> None:
    parsed = RollbackConfig.model_validate(
        config("https://api.vercel.com", "vercel_rollback", verify_timeout="10m")
    )

    # Per call: 4 attempts x 30 s + 3 waits of at most 30 s.
    assert parsed.deadline() == 5 * 210.0 + 600.0
