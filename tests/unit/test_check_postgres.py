"""The `postgres` check's replication lag arithmetic and its config."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from checks.base import CHECKS
from checks.postgres import PostgresCheck, PostgresCheckConfig, replication_lag


@pytest.mark.parametrize(
    ("in_recovery", "caught_up", "streaming", "replay_age", "lag"),
    [
        (False, False, None, None, None),  # a primary
        (True, True, True, 120.0, 0.0),  # all WAL replayed: an idle primary, not lag
        (True, True, None, 120.0, 0.0),  # receiver status hidden (no pg_read_all_stats)
        (True, True, False, 120.0, 120.0),  # receiver not streaming: replay age is the lag
        (True, False, True, 3.5, 3.5),
        (True, False, True, -0.01, 0.0),  # clock skew between the servers
        (True, False, None, None, None),  # nothing replayed yet
    ],
)
def test_replication_lag(
    in_recovery: bool,
    caught_up: bool,
    streaming: bool | None,
    replay_age: float | None,
    lag: float | None,
) -> None:
    assert replication_lag(in_recovery, caught_up, streaming, replay_age) == lag


# --- config -------------------------------------------------------------------------------


def test_config(tmp_path: Path) -> None:
    assert CHECKS.get("postgres") is PostgresCheck
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://monitor:pw@db:5432/app\n")
    config = PostgresCheckConfig.model_validate({"type": "postgres", "dsn_file": str(secret)})
    assert config.dsn.get_secret_value() == "postgresql://monitor:pw@db:5432/app"
    assert "pw" not in repr(config)
    assert (config.long_query, config.dead_tuple_min, config.dead_tuple_ratio) == (30.0, 1000, 0.2)
    assert config.replica == "auto"
    assert {"replication_lag_seconds", "unfinished_migrations"} <= config.value_names()
    bare = PostgresCheckConfig.model_validate(
        {
            "type": "postgres",
            "dsn": "postgres://db/app",
            "replica": False,
            "prisma_migrations": False,
        }
    )
    assert not {"in_recovery", "replication_lag_seconds", "rolled_back_migrations"} & (
        bare.value_names()
    )


def test_config_refuses_other_urls_without_echoing_them() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        PostgresCheckConfig.model_validate({"type": "postgres", "dsn": "mysql://u:pw@db/app"})
    (error,) = info.value.errors()
    assert error["loc"] == ("dsn",)
    assert "pw" not in str(info.value)
    assert "not a PostgreSQL URL" in error["msg"]
