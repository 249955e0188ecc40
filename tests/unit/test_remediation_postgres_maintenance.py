"""The postgres_maintenance remediation's config: approval, table names and their quoting,
the DSN (never echoed) and its file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.postgres_maintenance import (
    PostgresMaintenanceConfig,
    PostgresMaintenanceRemediation,
    quote_table,
    statement_for,
)

PASSWORD = "pw-Secr3t-xyz"


def make(dsn: str, **fields: Any) -> PostgresMaintenanceRemediation:
    data = {"type": "postgres_maintenance", "dsn": dsn, "operation": "analyze"}
    config = PostgresMaintenanceConfig.model_validate(data | fields)
    return PostgresMaintenanceRemediation("db-maintenance", config)


@pytest.mark.parametrize(
    ("operation", "destructive"),
    [("analyze", False), ("vacuum_analyze", False), ("reindex", False), ("vacuum_full", True)],
)
def test_only_vacuum_full_needs_approval(operation: str, destructive: bool) -> None:
    remediation = make("postgresql://maint@db/app", operation=operation, tables=["t"])

    assert remediation.destructive is destructive
    assert remediation.idempotent is True
    assert remediation.notifier is False


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        'orders"; DROP TABLE users; --',
        "orders; DROP TABLE users",
        "orders--",
        "a.b.c",
        "",
        " orders",
        "1orders",
        "public.",
        "x" * 64,
        "orders\x00",
    ],
)
def test_unsafe_table_names_are_refused_at_config_load(table: str) -> None:
    with pytest.raises(ValidationError, match="tables"):
        make("postgresql://maint@db/app", tables=[table])


def test_tables_are_required() -> None:
    with pytest.raises(ValidationError, match="tables"):
        make("postgresql://maint@db/app", tables=[])


def test_quoting() -> None:
    assert quote_table("Orders") == '"Orders"'
    assert quote_table("billing.invoice$2024") == '"billing"."invoice$2024"'
    assert statement_for("vacuum_full", "_t") == 'VACUUM (FULL) "_t"'
    with pytest.raises(ValueError, match="not a table name"):
        quote_table('a"b')


def test_dsn_must_be_postgres_and_is_never_echoed() -> None:
    with pytest.raises(ValidationError, match="not a PostgreSQL URL") as info:
        make(f"mysql://root:{PASSWORD}@db/app", tables=["t"])
    # The daemon reports each error's message (never its input): that must not echo it.
    assert all(PASSWORD not in error["msg"] for error in info.value.errors())


def test_dsn_file_and_defaults(tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"postgresql://maint:{PASSWORD}@db/app\n")
    config = PostgresMaintenanceConfig.model_validate(
        {
            "type": "postgres_maintenance",
            "dsn_file": str(dsn_file),
            "operation": "analyze",
            "tables": ["a", "b"],
        }
    )

    assert config.dsn.get_secret_value() == f"postgresql://maint:{PASSWORD}@db/app"
    assert PASSWORD not in repr(config)
    assert (config.lock_timeout, config.statement_timeout) == (5.0, 300.0)
    # Connecting, then each table's statement at its full statement_timeout.
    assert config.deadline() == 30.0 + 2 * 300.0


def test_registered() -> None:
    assert REMEDIATIONS.get("postgres_maintenance") is PostgresMaintenanceRemediation
