"""The postgres check against a real PostgreSQL: a fresh database per test (tests/pg.py)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg.exceptions as pgerr
import pytest

from checks.base import CheckContext
from checks.postgres import _REPLICATION, PostgresCheck, PostgresCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.pg import Database, dsn_for
from tests.utils import free_port, wait_until

PRISMA_TABLE = """CREATE TABLE _prisma_migrations (
    id                  VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum            VARCHAR(64) NOT NULL,
    finished_at         TIMESTAMPTZ,
    migration_name      VARCHAR(255) NOT NULL,
    logs                TEXT,
    rolled_back_at      TIMESTAMPTZ,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count INTEGER NOT NULL DEFAULT 0
)"""
ROLE_PASSWORD = "runbookd-test-role-pw"


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


@pytest.fixture
async def checks(ctx: CheckContext) -> AsyncIterator[Callable[..., Awaitable[PostgresCheck]]]:
    """Makes started checks and stops them all at the end."""
    made: list[PostgresCheck] = []

    async def make(dsn: str, **fields: Any) -> PostgresCheck:
        config = PostgresCheckConfig.model_validate({"type": "postgres", "dsn": dsn, **fields})
        check = PostgresCheck("db", config)
        made.append(check)
        await check.start(ctx)
        return check

    yield make
    for check in made:
        await check.stop()


Make = Callable[..., Awaitable[PostgresCheck]]


# --- the OK path --------------------------------------------------------------------------


async def test_ok_with_real_values(ctx: CheckContext, db: Database, checks: Make) -> None:
    check = await checks(db.dsn)
    result = await check.run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")
    values = result.values
    max_connections = float(await db.admin.fetchval("SHOW max_connections"))
    assert values["up"] == 1.0
    assert values["connections_max"] == max_connections
    assert 1.0 <= values["connections_used"] <= max_connections
    assert values["connections_ratio"] == values["connections_used"] / max_connections
    assert values["database_size_bytes"] > 0
    assert 0.0 < values["latency_seconds"] < 1.0
    assert 0.0 < values["connect_seconds"] < 1.0
    # A fresh database: nothing runs in it, no table has dead tuples.
    assert values["long_queries"] == 0.0
    assert values["longest_query_seconds"] == 0.0
    assert values["dead_tuple_ratio_max"] == 0.0
    assert values["tables_needing_vacuum"] == 0.0
    # A primary: no lag, and no Prisma table, so no migration values.
    assert values["in_recovery"] == 0.0
    assert "replication_lag_seconds" not in values
    assert "unfinished_migrations" not in values
    assert "rolled_back_migrations" not in values
    assert set(values) <= check.config.value_names()


async def test_pool_connection_is_reused(ctx: CheckContext, db: Database, checks: Make) -> None:
    check = await checks(db.dsn)
    first = await check.run(ctx)
    second = await check.run(ctx)
    assert "connect_seconds" in first.values
    assert "connect_seconds" not in second.values
    assert second.status is Status.OK


async def test_long_running_query_is_counted(
    ctx: CheckContext, db: Database, conn: Any, checks: Make
) -> None:
    sleeper = await db.connect()
    pid = sleeper.get_server_pid()
    task = asyncio.create_task(sleeper.fetchval("SELECT pg_sleep(2)"))
    try:

        async def running_long() -> bool:
            age = await conn.fetchval(
                "SELECT extract(epoch FROM now() - query_start)::float8 FROM pg_stat_activity"
                " WHERE pid = $1 AND state = 'active'",
                pid,
            )
            return age is not None and age > 0.1

        await wait_until(running_long, "the pg_sleep to run for 100ms")
        check = await checks(db.dsn, long_query="100ms")
        result = await check.run(ctx)
        assert result.status is Status.OK
        assert result.values["long_queries"] == 1.0
        assert 0.1 < result.values["longest_query_seconds"] < 2.0
        # The same query is not long by the default threshold (30s).
        default = await (await checks(db.dsn)).run(ctx)
        assert default.values["long_queries"] == 0.0
    finally:
        await db.admin.execute("SELECT pg_cancel_backend($1)", pid)
        with pytest.raises(pgerr.QueryCanceledError):
            await task
        await sleeper.close()


async def test_dead_tuples(ctx: CheckContext, db: Database, conn: Any, checks: Make) -> None:
    # Autovacuum would remove the dead tuples this test is about.
    for table in ("big", "small"):
        await conn.execute(f"CREATE TABLE {table} (id int) WITH (autovacuum_enabled = false)")
    await conn.execute("INSERT INTO big SELECT generate_series(1, 5000)")
    await conn.execute("DELETE FROM big WHERE id <= 4000")
    await conn.execute("INSERT INTO small SELECT generate_series(1, 20)")
    await conn.execute("DELETE FROM small WHERE id <= 10")
    # Statistics reach shared memory when this session goes idle; make sure it is now.
    await conn.execute("SELECT pg_stat_force_next_flush()")

    default = await (await checks(db.dsn)).run(ctx)
    # big: 4000 dead of 5000 = 0.8; small has fewer than dead_tuple_min (1000): ignored.
    assert default.values["dead_tuple_ratio_max"] == pytest.approx(0.8)
    assert default.values["tables_needing_vacuum"] == 1.0

    low_min = await (await checks(db.dsn, dead_tuple_min=5)).run(ctx)
    assert low_min.values["tables_needing_vacuum"] == 2.0  # small: 10 of 20 = 0.5
    strict = await (await checks(db.dsn, dead_tuple_ratio="90%")).run(ctx)
    assert strict.values["dead_tuple_ratio_max"] == pytest.approx(0.8)
    assert strict.values["tables_needing_vacuum"] == 0.0


# --- Prisma migrations --------------------------------------------------------------------


async def add_migrations(conn: Any, schema: str, rows: list[tuple[str, bool, bool]]) -> None:
    """rows: (migration_name, finished, rolled back), in the order they happened."""
    await conn.execute(f"SET search_path TO {schema}")
    await conn.execute(PRISMA_TABLE)
    for i, (name, finished, rolled_back) in enumerate(rows):
        await conn.execute(
            "INSERT INTO _prisma_migrations"
            " (id, checksum, migration_name, finished_at, rolled_back_at, applied_steps_count)"
            " VALUES ($1, 'c', $2, CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END, 1)",
            f"{schema}-{i}",
            name,
            finished,
            rolled_back,
        )
    await conn.execute("RESET search_path")


async def test_prisma_migrations(ctx: CheckContext, db: Database, conn: Any, checks: Make) -> None:
    await add_migrations(
        conn,
        "public",
        [
            ("20240101_init", True, False),
            ("20240201_users", False, False),  # failed, or being applied: unfinished
            ("20240301_orders", False, True),  # rolled back, not applied since
            # Rolled back, then applied again: history, not a problem.
            ("20240102_index", False, True),
            ("20240102_index", True, False),
        ],
    )
    result = await (await checks(db.dsn)).run(ctx)
    assert result.status is Status.WARN
    assert result.values["unfinished_migrations"] == 1.0
    assert result.values["rolled_back_migrations"] == 1.0
    assert result.reason == "1 unfinished migration; 1 rolled back migration"
    assert result.values["up"] == 1.0

    off = await (await checks(db.dsn, prisma_migrations=False)).run(ctx)
    assert off.status is Status.OK
    assert "unfinished_migrations" not in off.values


async def test_prisma_migrations_in_another_schema(
    ctx: CheckContext, db: Database, conn: Any, checks: Make
) -> None:
    # Prisma's `?schema=tenant` puts the table there; a finished history is OK.
    await conn.execute("CREATE SCHEMA tenant")
    await add_migrations(conn, "tenant", [("20240101_init", True, False)])
    result = await (await checks(db.dsn)).run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")
    assert result.values["unfinished_migrations"] == 0.0
    assert result.values["rolled_back_migrations"] == 0.0

    await add_migrations(conn, "public", [("20240101_init", False, False)] * 2)
    summed = await (await checks(db.dsn)).run(ctx)
    assert summed.values["unfinished_migrations"] == 2.0
    assert summed.reason == "2 unfinished migrations"


# --- privileges ---------------------------------------------------------------------------


@pytest.fixture
async def plain_role(db: Database) -> AsyncIterator[str]:
    """A login role without any privileges (roles are cluster-wide: dropped at the end)."""
    role = f"runbookd_test_{secrets.token_hex(4)}"
    # A password, so the test works where the server wants one (this one trusts everyone).
    await db.admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{ROLE_PASSWORD}'")
    try:
        yield role
    finally:
        await db.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await db.admin.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_missing_privileges_omit_values(
    ctx: CheckContext, db: Database, conn: Any, checks: Make, plain_role: str
) -> None:
    await add_migrations(conn, "public", [("20240101_init", False, False)])
    check = await checks(dsn_for(db.name, user=plain_role, password=ROLE_PASSWORD))
    result = await check.run(ctx)
    assert result.status is Status.OK
    assert result.values["up"] == 1.0
    assert "database_size_bytes" in result.values
    for name in ("long_queries", "longest_query_seconds", "unfinished_migrations"):
        assert name not in result.values
    assert result.reason == (
        "long queries not measured: needs pg_read_all_stats; "
        "migrations not measured: permission denied for table _prisma_migrations"
    )

    # A refusal inside the combined statement costs only that probe's values.
    await db.admin.execute(f'REVOKE CONNECT ON DATABASE "{db.name}" FROM PUBLIC')
    again = await check.run(ctx)  # the pool's connection is still open
    assert "connect_seconds" not in again.values
    assert again.status is Status.OK
    assert "database_size_bytes" not in again.values
    assert again.values["connections_max"] > 0
    assert "dead_tuple_ratio_max" in again.values
    assert again.reason == (
        f"database size not measured: permission denied for database {db.name}; "
        "long queries not measured: needs pg_read_all_stats; "
        "migrations not measured: permission denied for table _prisma_migrations"
    )


# --- replication --------------------------------------------------------------------------


async def test_primary_has_no_replication_lag(
    ctx: CheckContext, db: Database, checks: Make
) -> None:
    auto = await (await checks(db.dsn)).run(ctx)
    assert auto.values["in_recovery"] == 0.0
    assert "replication_lag_seconds" not in auto.values

    expected = await (await checks(db.dsn, replica=True)).run(ctx)
    assert expected.status is Status.WARN
    assert expected.reason == "not a replica (pg_is_in_recovery() is false)"

    ignored = await (await checks(db.dsn, replica=False)).run(ctx)
    assert ignored.status is Status.OK
    assert "in_recovery" not in ignored.values


async def test_no_wal_receiver_is_not_streaming(conn: Any) -> None:
    # Without a WAL receiver process (a replica whose primary went away; here, the primary)
    # nothing streams: the replay age is the lag, not a made-up 0 because all WAL received
    # so far is replayed. Only a receiver hiding its status (no pg_read_all_stats) is NULL.
    row = await conn.fetchrow(f"SELECT {_REPLICATION.columns}")
    assert await conn.fetchval("SELECT count(*) FROM pg_stat_wal_receiver") == 0
    assert row["wal_streaming"] is False


# --- failures -----------------------------------------------------------------------------


async def test_wrong_database_is_critical(ctx: CheckContext, checks: Make) -> None:
    check = await checks(dsn_for("runbookd_no_such_db"))
    result = await check.run(ctx)
    assert result.status is Status.CRITICAL
    assert result.values == {"up": 0.0}
    assert result.reason == 'database "runbookd_no_such_db" does not exist'


async def test_unknown_role_is_critical(ctx: CheckContext, db: Database, checks: Make) -> None:
    # The test server trusts every existing role; a role that does not exist is refused.
    # (A server asking for passwords would say "password authentication failed" instead.)
    check = await checks(dsn_for(db.name, user="runbookd_nobody"))
    result = await check.run(ctx)
    assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
    assert result.reason == 'role "runbookd_nobody" does not exist'


async def test_refused_port_is_critical_and_start_does_not_raise(
    ctx: CheckContext, checks: Make
) -> None:
    check = await checks(f"postgresql://root@127.0.0.1:{free_port()}/postgres")
    result = await check.run(ctx)
    assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
    assert result.reason == "connection refused"
    again = await check.run(ctx)  # the pool retries connecting on every run
    assert again.reason == "connection refused"


async def test_password_never_in_reasons(ctx: CheckContext, checks: Make) -> None:
    password = "hunter2-s3cret"
    refused = await checks(f"postgresql://root:{password}@127.0.0.1:{free_port()}/postgres")
    assert (await refused.run(ctx)).reason == "connection refused"
    # Trust auth ignores the password; the server names the (missing) database, which here
    # is the password itself, so the reason must come back redacted.
    echoed = await checks(dsn_for(password, password=password))
    assert (await echoed.run(ctx)).reason == 'database "***" does not exist'
    separate = await checks(dsn_for(password), password=password)
    assert (await separate.run(ctx)).reason == 'database "***" does not exist'


async def test_timeout_is_critical(ctx: CheckContext, checks: Make, silent_port: int) -> None:
    check = await checks(f"postgresql://root@127.0.0.1:{silent_port}/postgres", timeout="300ms")
    start = time.perf_counter()
    result = await check.run(ctx)
    assert time.perf_counter() - start < 1.0
    assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
    assert result.reason == "timeout after 0.27s"  # 300ms less a margin for the scheduler


async def test_connect_timeout(ctx: CheckContext, checks: Make, silent_port: int) -> None:
    dsn = f"postgresql://root@127.0.0.1:{silent_port}/postgres"
    check = await checks(dsn, timeout="5s", connect_timeout="100ms")
    result = await check.run(ctx)
    assert (result.status, result.reason) == (Status.CRITICAL, "timeout after 0.1s")


async def test_connection_closed_by_the_server_is_no_outage(
    ctx: CheckContext, db: Database, checks: Make
) -> None:
    # A restart or an idle timeout closes the kept connection; the next run reconnects.
    check = await checks(db.dsn)
    assert (await check.run(ctx)).status is Status.OK
    terminated = await db.admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'runbookd'",
        db.name,
    )
    assert terminated == 1
    result = await check.run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")
    assert "connect_seconds" in result.values


async def test_stop_closes_the_pool(ctx: CheckContext, db: Database, checks: Make) -> None:
    check = await checks(db.dsn)
    assert (await check.run(ctx)).status is Status.OK

    async def backends() -> int:
        count: int = await db.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'runbookd'",
            db.name,
        )
        return count

    assert await backends() == 1
    await check.stop()

    async def gone() -> bool:  # a backend exits just after its client says goodbye
        return await backends() == 0

    await wait_until(gone, "the check's connection to close")
    await check.stop()  # stopping twice is harmless
