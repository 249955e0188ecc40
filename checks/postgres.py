"""`postgres` check: does the database answer, and how full, busy and healthy is it?

One small asyncpg pool per check (at most two connections, none kept open at start), so a
database that is down when the daemon starts is simply reported down until it comes back.

Each run: `SELECT 1` for the latency, then one statement for every statistic (connections,
size, long queries, dead tuples, replication, the Prisma migrations table's whereabouts),
then the Prisma migration counts. A statistic the server refuses (privileges) is left out
and named in the reason; the database not answering at all is CRITICAL with up=0, since
that is the data, as with the http check.

Thresholds belong to rules; the only ones here decide what is counted (`long_query`,
`dead_tuple_min`, `dead_tuple_ratio`).

asyncpg is imported on first use (by `start`), not with the module.

Some 460 lines: a fifth is the statistics' SQL, kept beside the code that reads its columns.

Over 400 lines: one check with many measures, each with its SQL beside the code that
reads it.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import ConfigDict, Field, SecretStr, field_validator

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult
from daemon.clients.postgres import DsnRedactor, checked_postgres_dsn, quote_ident
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.units import Duration, Ratio

APPLICATION_NAME = "runbookd"
CLOSE_TIMEOUT = 5.0
MAX_MESSAGE = 120  # of one server or driver message in a reason

BASE_VALUES = frozenset(
    {
        "up",
        "connect_seconds",
        "latency_seconds",
        "connections_used",
        "connections_max",
        "connections_ratio",
        "database_size_bytes",
        "longest_query_seconds",
        "long_queries",
        "dead_tuple_ratio_max",
        "tables_needing_vacuum",
    }
)
REPLICATION_VALUES = frozenset({"in_recovery", "replication_lag_seconds"})
MIGRATION_VALUES = frozenset({"unfinished_migrations", "rolled_back_migrations"})


class PostgresCheckConfig(CheckConfig):
    """Connects to a PostgreSQL database and runs `SELECT 1` (`latency_seconds`), then reads
    its statistics: connections against `max_connections`, size, long queries, dead tuples,
    replication lag, unfinished Prisma migrations. A database that does not answer is
    CRITICAL with `up` 0; a statistic the server refuses (privileges) is left out and named
    in the reason (WARN)."""

    # Errors must not show the input: the URL may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    example: ClassVar[str] = """
        checks:
          database:
            type: postgres
            dsn: postgresql://runbookd@db.internal:5432/app?sslmode=require
            interval: 1m
        """

    type: Literal["postgres"]
    dsn: SecretStr = Field(
        description="`postgresql://user@host:5432/dbname?sslmode=require`; a secret, since a "
        "DSN may carry the password."
    )
    password: SecretStr | None = Field(None, description="The password, overriding one in the DSN.")
    connect_timeout: Duration | None = Field(
        None, gt=0, description="How long connecting may take; default: the check's `timeout`."
    )
    long_query: Duration = Field(
        30.0, gt=0, description="Queries running longer count in `long_queries`."
    )
    dead_tuple_min: int = Field(
        1000,
        ge=0,
        description="Tables with fewer dead tuples are left out of the dead tuple values.",
    )
    dead_tuple_ratio: Ratio = Field(
        0.2,
        description="A table whose dead tuple ratio is above this counts in "
        "`tables_needing_vacuum`.",
    )
    replica: bool | Literal["auto"] = Field(
        "auto",
        description="`auto`: replication lag is reported when the server is in recovery; "
        "`true`: the server must be a replica (WARN otherwise); `false`: replication is not "
        "looked at.",
    )
    prisma_migrations: bool = Field(
        True,
        description="Count unfinished and rolled back migrations in `_prisma_migrations`, "
        "when that table exists.",
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)

    def value_names(self) -> frozenset[str]:
        names = set(BASE_VALUES)
        if self.replica is not False:
            names |= REPLICATION_VALUES
        if self.prisma_migrations:
            names |= MIGRATION_VALUES
        return frozenset(names)


# --- what asyncpg offers (it ships no type hints; only the parts used here) ---------------


class _Connection(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    async def fetchrow(self, query: str, *args: object) -> Mapping[str, Any] | None: ...

    def terminate(self) -> None: ...


class _Pool(Protocol):
    async def acquire(self) -> _Connection: ...

    async def release(self, connection: _Connection) -> None: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


# --- the statistics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Probe:
    """A group of select-list columns; if the combined statement fails, each group is run
    alone, so a statistic the server refuses costs only its own values."""

    name: str
    columns: str


# Every probe reads the thresholds from `p`, so probes run together or alone alike.
_PARAMS = "(SELECT $1::float8 AS long_query, $2::float8 AS dead_min, $3::float8 AS dead_ratio) p"

# Connections are a server-wide limit, so they are counted server-wide; long queries only in
# this database, so one app's check does not act on another app's queries. Other roles'
# query state is hidden without pg_read_all_stats: counting only what is visible would
# report "no long queries" when we cannot know.
_ACTIVITY = _Probe(
    "connections",
    """current_setting('max_connections')::float8 AS connections_max,
    (SELECT count(*) FROM pg_stat_activity
      WHERE backend_type = 'client backend')::float8 AS connections_used,
    pg_has_role('pg_read_all_stats', 'USAGE') AS sees_all_queries,
    (SELECT coalesce(max(extract(epoch FROM now() - query_start)), 0) FROM pg_stat_activity
      WHERE state = 'active' AND backend_type = 'client backend'
        AND datname = current_database() AND pid <> pg_backend_pid()
    )::float8 AS longest_query_seconds,
    (SELECT count(*) FROM pg_stat_activity
      WHERE state = 'active' AND backend_type = 'client backend'
        AND datname = current_database() AND pid <> pg_backend_pid()
        AND now() - query_start > p.long_query * interval '1 second')::float8 AS long_queries""",
)
_SIZE = _Probe(
    "database size", "pg_database_size(current_database())::float8 AS database_size_bytes"
)
_DEAD_TUPLES = _Probe(
    "dead tuples",
    """(SELECT coalesce(max(n_dead_tup::float8 / nullif(n_live_tup + n_dead_tup, 0)), 0)
      FROM pg_stat_user_tables WHERE n_dead_tup >= p.dead_min) AS dead_tuple_ratio_max,
    (SELECT count(*) FROM pg_stat_user_tables WHERE n_dead_tup >= p.dead_min
        AND n_dead_tup::float8 / nullif(n_live_tup + n_dead_tup, 0) > p.dead_ratio
    )::float8 AS tables_needing_vacuum""",
)
# All WAL received is replayed means no lag, even when the last replayed transaction is old
# (an idle primary) -- unless the WAL receiver is known not to be streaming: not running at
# all (its primary is gone), or in another state. Its status is hidden (NULL) from roles
# without pg_read_all_stats; only then is it unknown.
_REPLICATION = _Probe(
    "replication",
    """pg_is_in_recovery() AS in_recovery,
    coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS replay_caught_up,
    CASE WHEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver)
      THEN (SELECT status = 'streaming' FROM pg_stat_wal_receiver)
      ELSE false END AS wal_streaming,
    extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_seconds""",
)
# Prisma puts its table in the schema of the app's URL (`?schema=`, default public).
_PRISMA_TABLES = _Probe(
    "migrations",
    """ARRAY(SELECT n.nspname::text FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname = '_prisma_migrations' AND c.relkind IN ('r', 'p')
      ORDER BY 1) AS prisma_schemas""",
)

# `prisma migrate status` calls a row failed when it neither finished nor was rolled back
# (which includes a migration being applied right now). A rolled back row stays in the table
# after the migration is applied again, so only names never applied since count.
_MIGRATIONS = """SELECT
  count(*) FILTER (WHERE finished_at IS NULL AND rolled_back_at IS NULL)::float8 AS unfinished,
  count(DISTINCT migration_name) FILTER (WHERE rolled_back_at IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM {table} later
    WHERE later.migration_name = m.migration_name AND later.rolled_back_at IS NULL)
  )::float8 AS rolled_back
FROM {table} m"""

_DIRECT = frozenset(
    {
        "connections_max",
        "connections_used",
        "database_size_bytes",
        "dead_tuple_ratio_max",
        "tables_needing_vacuum",
    }
)
_LONG_QUERY_VALUES = ("longest_query_seconds", "long_queries")


def replication_lag(
    in_recovery: bool, caught_up: bool, streaming: bool | None, replay_age: float | None
) -> float | None:
    """Seconds replay is behind on a replica; None on a primary or before any replay."""
    if not in_recovery:
        return None
    if caught_up and streaming is not False:
        return 0.0
    return max(replay_age, 0.0) if replay_age is not None else None


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}" + ("" if count == 1 else "s")


# --- failures -----------------------------------------------------------------------------


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    """Expected failures of connecting or of the connection; anything else is a bug. asyncpg
    raises InternalClientError when the server closes the connection during a query."""
    import asyncpg.exceptions as pgerr

    return (OSError, pgerr.PostgresError, pgerr.InterfaceError, pgerr.InternalClientError)


def describe_failure(exc: BaseException) -> str:
    """A short reason for a database that could not be reached or used. Server messages
    ('password authentication failed for user "x"', 'database "x" does not exist') are
    already short and never hold the password; the caller redacts anyway."""
    import asyncpg.exceptions as pgerr

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, pgerr.PostgresError):
        return _message(exc)
    if isinstance(exc, pgerr.ClientConfigurationError):
        return f"bad connection settings: {_message(exc)}"
    if isinstance(exc, pgerr.InterfaceError | pgerr.InternalClientError):
        return f"connection lost: {_message(exc)}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect: {exc.strerror}"
    return f"cannot connect: {type(exc).__name__}"


# --- the check ----------------------------------------------------------------------------


@CHECKS.register
class PostgresCheck:
    type: ClassVar[str] = "postgres"
    Config: ClassVar[builtins.type[CheckConfig]] = PostgresCheckConfig
    bounded: ClassVar[bool] = False

    def __init__(self, name: str, config: PostgresCheckConfig) -> None:
        self.name = name
        self.config = config
        self._timeout_s = request_timeout(config.timeout)
        connect = config.connect_timeout
        self._connect_timeout = min(connect, self._timeout_s) if connect else self._timeout_s
        password = config.password.get_secret_value() if config.password else None
        self._redact = DsnRedactor(config.dsn.get_secret_value(), password)
        self._params = (config.long_query, float(config.dead_tuple_min), config.dead_tuple_ratio)
        probes = [_ACTIVITY, _SIZE, _DEAD_TUPLES]
        if config.replica is not False:
            probes.append(_REPLICATION)
        if config.prisma_migrations:
            probes.append(_PRISMA_TABLES)
        self._probes = tuple(probes)
        self._pool: _Pool | None = None
        self._connect_seconds: float | None = None

    async def start(self, ctx: CheckContext) -> None:
        # With min_size=0 nothing connects here; a server that is down is found by `run`.
        await self._open_pool()

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await pool.close()
        except TimeoutError:
            pool.terminate()

    async def _open_pool(self) -> _Pool:
        if self._pool is None:
            import asyncpg

            password = self.config.password
            # asyncpg has no type hints: the pool is used through the `_Pool` protocol.
            self._pool = await asyncpg.create_pool(  # type: ignore[no-untyped-call]
                self.config.dsn.get_secret_value(),
                password=password.get_secret_value() if password else None,
                min_size=0,
                max_size=2,
                timeout=self._connect_timeout,
                connect=self._timed_connect,
                server_settings={"application_name": APPLICATION_NAME},
            )
        assert self._pool is not None
        return self._pool

    async def _timed_connect(self, *args: Any, **kwargs: Any) -> Any:
        """The pool's way of connecting, timed: `connect_seconds` when a run needed it."""
        import asyncpg

        start = time.perf_counter()
        conn = await asyncpg.connect(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._connect_seconds = time.perf_counter() - start
        return conn

    async def run(self, ctx: CheckContext) -> CheckResult:
        import asyncpg.exceptions as pgerr

        values: dict[str, float] = {}
        notes: list[str] = []
        self._connect_seconds = None
        deadline = asyncio.timeout(self._timeout_s)
        try:
            async with deadline:
                pool = await self._open_pool()
                await self._session(pool, values, notes)
        except TimeoutError:
            if "up" not in values:
                waited = self._timeout_s if deadline.expired() else self._connect_timeout
                return self._down(f"timeout after {waited:g}s")
            notes.append(f"statistics incomplete: timeout after {self._timeout_s:g}s")
        except pgerr.ClientConfigurationError as exc:
            # Our settings, not the server: could not measure.
            return CheckResult.unknown(self._redact(describe_failure(exc)))
        except _connection_errors() as exc:
            return self._down(describe_failure(exc))
        return self._verdict(values, notes)

    def _down(self, reason: str) -> CheckResult:
        return CheckResult(Status.CRITICAL, {"up": 0.0}, self._redact(reason))

    async def _session(self, pool: _Pool, values: dict[str, float], notes: list[str]) -> None:
        try:
            await self._use(pool, values, notes)
        except TimeoutError:
            raise
        except _connection_errors():
            # A kept connection the server has closed since (a restart, an idle timeout)
            # says nothing about the server now: once more, on a new connection.
            if self._connect_seconds is not None or "up" in values:
                raise
            await self._use(pool, values, notes)

    async def _use(self, pool: _Pool, values: dict[str, float], notes: list[str]) -> None:
        conn = await pool.acquire()
        try:
            await self._measure(conn, values, notes)
        except BaseException:
            conn.terminate()  # its state is unknown after a failure mid-query: don't reuse it
            raise
        finally:
            await pool.release(conn)

    async def _measure(self, conn: _Connection, values: dict[str, float], notes: list[str]) -> None:
        if self._connect_seconds is not None:
            values["connect_seconds"] = self._connect_seconds
        start = time.perf_counter()
        await conn.execute("SELECT 1")  # no arguments: the simple protocol, one round trip
        values["latency_seconds"] = time.perf_counter() - start
        values["up"] = 1.0
        row = await self._statistics(conn, notes)
        self._read(row, values, notes)
        schemas = row.get("prisma_schemas")
        if schemas:
            await self._migrations(conn, schemas, values, notes)

    async def _statistics(self, conn: _Connection, notes: list[str]) -> dict[str, Any]:
        import asyncpg.exceptions as pgerr

        try:
            return await self._fetch(conn, self._probes)
        except pgerr.PostgresError:
            pass
        row: dict[str, Any] = {}
        for probe in self._probes:
            try:
                row |= await self._fetch(conn, (probe,))
            except pgerr.PostgresError as exc:
                notes.append(f"{probe.name} not measured: {_message(exc)}")
        return row

    async def _fetch(self, conn: _Connection, probes: tuple[_Probe, ...]) -> dict[str, Any]:
        columns = ",\n".join(probe.columns for probe in probes)
        # Built from the constants above only; the thresholds go as parameters.
        query = f"SELECT {columns}\nFROM {_PARAMS}"
        row = await conn.fetchrow(query, *self._params)
        return dict(row) if row is not None else {}

    def _read(self, row: Mapping[str, Any], values: dict[str, float], notes: list[str]) -> None:
        for key in _DIRECT:
            if row.get(key) is not None:
                values[key] = float(row[key])
        if values.get("connections_max"):
            values["connections_ratio"] = values["connections_used"] / values["connections_max"]
        if row.get("sees_all_queries"):
            for key in _LONG_QUERY_VALUES:
                values[key] = float(row[key])
        elif row.get("sees_all_queries") is False:
            notes.append("long queries not measured: needs pg_read_all_stats")
        if row.get("in_recovery") is not None:
            self._read_replication(row, values)

    @staticmethod
    def _read_replication(row: Mapping[str, Any], values: dict[str, float]) -> None:
        in_recovery = bool(row["in_recovery"])
        values["in_recovery"] = float(in_recovery)
        lag = replication_lag(
            in_recovery, row["replay_caught_up"], row["wal_streaming"], row["replay_age_seconds"]
        )
        if lag is not None:
            values["replication_lag_seconds"] = lag

    async def _migrations(
        self, conn: _Connection, schemas: list[str], values: dict[str, float], notes: list[str]
    ) -> None:
        import asyncpg.exceptions as pgerr

        unfinished = rolled_back = 0.0
        for schema in schemas:
            table = f"{quote_ident(schema)}._prisma_migrations"
            try:
                row = await conn.fetchrow(_MIGRATIONS.format(table=table))
            except pgerr.PostgresError as exc:
                notes.append(f"migrations not measured: {_message(exc)}")
                return
            assert row is not None  # an aggregate always returns a row
            unfinished += row["unfinished"]
            rolled_back += row["rolled_back"]
        values["unfinished_migrations"] = unfinished
        values["rolled_back_migrations"] = rolled_back

    def _verdict(self, values: dict[str, float], notes: list[str]) -> CheckResult:
        problems: list[str] = []
        if self.config.replica is True and values.get("in_recovery") == 0.0:
            problems.append("not a replica (pg_is_in_recovery() is false)")
        unfinished = values.get("unfinished_migrations", 0.0)
        rolled_back = values.get("rolled_back_migrations", 0.0)
        if unfinished:
            problems.append(_plural(unfinished, "unfinished migration"))
        if rolled_back:
            problems.append(_plural(rolled_back, "rolled back migration"))
        reason = self._redact("; ".join(problems + notes))
        return CheckResult(Status.WARN if problems else Status.OK, values, reason)
