"""The postgres_maintenance remediation against a real PostgreSQL (a database per test).

Statistics views are updated asynchronously, so effects are read by polling, bounded.
"""

from __future__ import annotations

import secrets
from typing import Any

from remediations.base import RemediationContext
from remediations.postgres_maintenance import (
    PostgresMaintenanceConfig,
    PostgresMaintenanceRemediation,
    quote_table,
)
from tests.fakes import make_incident
from tests.pg import Database, dsn_for
from tests.utils import free_port, wait_until

PASSWORD = "pw-Secr3t-xyz"
SETUP = """
CREATE TABLE {table} (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = off);
INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
DELETE FROM {table} WHERE id <= {dead};
SELECT pg_stat_force_next_flush();
"""


def make(dsn: str, **fields: Any) -> PostgresMaintenanceRemediation:
    data = {"type": "postgres_maintenance", "dsn": dsn, "operation": "analyze"}
    config = PostgresMaintenanceConfig.model_validate(data | fields)
    return PostgresMaintenanceRemediation("db-maintenance", config)


def with_password(dsn: str) -> str:
    # The test server trusts loopback, so the password is sent nowhere but must not leak.
    return dsn.replace("root@", f"root:{PASSWORD}@")


async def create_table(conn: Any, name: str = "orders", *, dead: int = 500) -> None:
    """1000 rows, `dead` of them deleted; autovacuum off so nothing cleans up behind us."""
    # Test constants only, quoted as the remediation quotes them.
    await conn.execute(SETUP.format(table=quote_table(name), dead=int(dead)))


async def table_stats(conn: Any, table: str) -> dict[str, Any]:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    row = await conn.fetchrow(
        "SELECT n_dead_tup, n_mod_since_analyze, last_vacuum, last_analyze "
        "FROM pg_stat_user_tables WHERE relname = $1",
        table,
    )
    assert row is not None
    return dict(row)


async def wait_for_stats(conn: Any, table: str, **expected: Any) -> dict[str, Any]:
    """Wait until the named columns have the expected values (True: not null)."""
    stats: dict[str, Any] = {}

    async def matches() -> bool:
        stats.update(await table_stats(conn, table))
        return all(
            stats[key] is not None if want is True else stats[key] == want
            for key, want in expected.items()
        )

    await wait_until(matches, f"{table} statistics {expected}")
    return stats


async def relfilenode(conn: Any, relation: str) -> int:
    node: int = await conn.fetchval("SELECT pg_relation_filenode($1::regclass)", relation)
    return node


# --- each operation has its effect --------------------------------------------------------


async def test_analyze_updates_statistics(ctx: RemediationContext, db: Database, conn: Any) -> None:
    await create_table(conn)
    await wait_for_stats(conn, "orders", n_dead_tup=500)

    result = await make(db.dsn, tables=["orders"]).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail.startswith("analyze of 1 table done in ")
    [step] = result.data["tables"]
    assert step["table"] == "orders"
    assert step["statement"] == 'ANALYZE "orders"'
    assert isinstance(step["seconds"], float)
    assert step["seconds"] >= 0
    assert result.data["operation"] == "analyze"
    assert result.data["database"] == f"127.0.0.1:5432/{db.name}"
    stats = await wait_for_stats(conn, "orders", last_analyze=True, n_mod_since_analyze=0)
    assert stats["last_vacuum"] is None
    assert stats["n_dead_tup"] == 500  # ANALYZE does not vacuum


async def test_vacuum_analyze_removes_dead_tuples(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    await create_table(conn)
    await wait_for_stats(conn, "orders", n_dead_tup=500)

    remediation = make(db.dsn, operation="vacuum_analyze", tables=["public.orders"])
    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["tables"][0]["statement"] == 'VACUUM (ANALYZE) "public"."orders"'
    await wait_for_stats(conn, "orders", n_dead_tup=0, last_vacuum=True, last_analyze=True)


async def test_reindex_rebuilds_the_indexes(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    await create_table(conn)
    await conn.execute("CREATE INDEX orders_note ON orders (note)")
    before = {index: await relfilenode(conn, index) for index in ("orders_pkey", "orders_note")}

    result = await make(db.dsn, operation="reindex", tables=["orders"]).execute(
        ctx, make_incident()
    )

    assert result.ok, result.detail
    assert result.data["tables"][0]["statement"] == 'REINDEX TABLE "orders"'
    for index, node in before.items():
        assert await relfilenode(conn, index) != node, f"{index} was not rebuilt"


async def test_vacuum_full_is_destructive_and_rewrites_the_table(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    await create_table(conn, dead=900)
    node = await relfilenode(conn, "orders")
    size = await conn.fetchval("SELECT pg_relation_size('orders')")

    remediation = make(db.dsn, operation="vacuum_full", tables=["orders"])
    assert remediation.destructive is True
    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["tables"][0]["statement"] == 'VACUUM (FULL) "orders"'
    assert await relfilenode(conn, "orders") != node
    # Not `<`: a transaction elsewhere on the shared test server may hold back the xmin
    # horizon, and VACUUM FULL keeps the recently dead rows it may not remove yet.
    assert await conn.fetchval("SELECT pg_relation_size('orders')") <= size
    assert await conn.fetchval("SELECT count(*) FROM orders") == 100


async def test_tables_run_in_order(ctx: RemediationContext, db: Database, conn: Any) -> None:
    await create_table(conn, "a")
    await conn.execute("CREATE SCHEMA billing")
    await create_table(conn, "billing.b")

    result = await make(db.dsn, operation="vacuum_analyze", tables=["billing.b", "a"]).execute(
        ctx, make_incident()
    )

    assert result.ok, result.detail
    assert result.detail.startswith("vacuum_analyze of 2 tables done in ")
    assert [step["table"] for step in result.data["tables"]] == ["billing.b", "a"]
    await wait_for_stats(conn, "a", n_dead_tup=0, last_vacuum=True)
    await wait_for_stats(conn, "b", n_dead_tup=0, last_vacuum=True)


# --- failures -----------------------------------------------------------------------------


async def test_missing_table_stops_there_and_is_not_recoverable(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    await create_table(conn, "a")
    await create_table(conn, "c")
    remediation = make(with_password(db.dsn), tables=["a", "missing", "c"])

    result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == 'analyze failed: relation "missing" does not exist'
    steps = result.data["tables"]
    assert [step["table"] for step in steps] == ["a", "missing"]  # "c" is not attempted
    assert steps[1] == {
        "table": "missing",
        "statement": 'ANALYZE "missing"',
        "error": 'relation "missing" does not exist',
    }
    assert PASSWORD not in repr(result)
    assert (await table_stats(conn, "c"))["last_analyze"] is None


async def test_refused_connection_is_recoverable(ctx: RemediationContext) -> None:
    dsn = f"postgresql://root:{PASSWORD}@127.0.0.1:{free_port()}/app"

    result = await make(dsn, tables=["orders"]).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail == "analyze failed: cannot connect: connection refused"
    assert result.data["tables"] == []
    assert PASSWORD not in repr(result)


async def test_missing_database_is_not_recoverable(ctx: RemediationContext) -> None:
    dsn = with_password(dsn_for(f"runbookd_absent_{secrets.token_hex(4)}"))

    result = await make(dsn, tables=["orders"]).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert "does not exist" in result.detail
    assert PASSWORD not in repr(result)


async def test_lock_timeout_gives_up_and_is_recoverable(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    await create_table(conn)
    async with conn.transaction():
        await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        remediation = make(db.dsn, tables=["orders"], lock_timeout="100ms")
        result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail == "analyze failed: lock not granted within 0.1s (lock_timeout)"


async def test_a_table_the_role_does_not_own_is_a_failure(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    # VACUUM and ANALYZE only warn, and skip, when the role may not maintain a table.
    await create_table(conn)
    role = f"runbookd_test_{secrets.token_hex(4)}"
    await db.admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        dsn = dsn_for(db.name).replace("root@", f"{role}@")
        result = await make(dsn, tables=["orders"]).execute(ctx, make_incident())
    finally:
        await db.admin.execute(f"DROP ROLE {role}")

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail.startswith("analyze failed: orders not maintained: ")
    assert "skipping" in result.detail
    assert result.data["tables"][0]["warnings"]


async def test_statement_timeout_cancels_and_is_not_recoverable(
    ctx: RemediationContext, db: Database, conn: Any
) -> None:
    # Waiting for a lock counts towards statement_timeout too: the shorter limit wins.
    await create_table(conn)
    async with conn.transaction():
        await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        remediation = make(db.dsn, tables=["orders"], lock_timeout="10s", statement_timeout="100ms")
        result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == (
        "analyze failed: cancelled after statement_timeout 0.1s: "
        "canceling statement due to statement timeout"
    )
