"""`runbookd.store`: where incidents, timelines, the action ledger and the outbox live."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator

from daemon.clients.postgres import checked_postgres_dsn
from daemon.core.units import PositiveDuration, SecretsModel, StrictModel


class SqliteStoreSettings(StrictModel):
    """The embedded default: one SQLite file, `runbookd.db`, in `runbookd.state_dir`, which
    one daemon holds at a time (a lock file beside it)."""

    type: Literal["sqlite"] = Field(default="sqlite", description="`sqlite`: the embedded store.")


class PostgresStoreSettings(SecretsModel):
    """A PostgreSQL database, which several replicas of runbookd can share: they elect one
    leader through a lease in it, and only the leader acts (runs rules, plans, the paging
    outbox and jobs); the others serve the API's reads and take over when the leader is gone."""

    # Errors must not show the input: the URL may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["postgres"] = Field(description="`postgres`: a shared database.")
    dsn: SecretStr = Field(
        description=(
            "postgresql://user@host:5432/runbookd?sslmode=verify-full: a database of its own, "
            "not the application's, so runbookd still sees and acts when the application's "
            "database is down. A secret, since it may carry the password: `dsn_file` reads it "
            "from a file."
        )
    )
    pool_size: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Connections at most: one commits, the others read (the API, restarts).",
    )
    lease_ttl: PositiveDuration = Field(
        default=10.0,
        ge=1,
        le=300,
        description="How long the leader's lease lasts: replicas on this database elect one "
        "to act, and a standby takes over at most this long after the leader is gone. Renewed "
        "every third of it.",
    )
    connect_timeout: PositiveDuration = Field(
        default=10.0,
        le=300,
        description="How long a connection may take to open, at start and after one is lost.",
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)


StoreSettings = Annotated[SqliteStoreSettings | PostgresStoreSettings, Field(discriminator="type")]
