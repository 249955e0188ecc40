"""PostgresStore when things go wrong: a connection lost in the middle of a batch or between
calls, a statement the server refuses, a server that cannot be reached; and what the errors
say (where, never the password)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from daemon.core.models import TimelineEntry
from daemon.store.postgres.connection import DATABASE_ERRORS
from daemon.store.postgres.group_commit import BatchRolledBack
from daemon.store.postgres.repository import PostgresStore
from daemon.store.protocol import StoreUnavailable
from tests.pg import Database, dsn_for, fresh_database
from tests.store_contract import T0, make_incident
from tests.utils import silent_server


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    async with fresh_database() as database:
        yield database


@pytest.fixture
async def store(database: Database) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(database.dsn)
    await s.open()
    yield s
    await s.close()


async def terminate(database: Database, pid: int | None = None) -> int:
    """End the store's sessions on the server (one, or all of them), as a server restart or
    a proxy would; how many ended."""
    ended: int = await database.admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'runbookd' AND ($2::int IS NULL OR pid = $2)",
        database.name,
        pid,
    )
    return ended


async def test_a_connection_lost_mid_batch_rolls_it_back_and_the_store_recovers(
    store: PostgresStore, database: Database
) -> None:
    await store.create_incident(make_incident())

    async def cut_off() -> None:
        async with store.batch():
            await store.put_value("ns", "lost", 1)
            await store.begin_action("inc-1", "r", "rollback", T0)  # its own connection now
            assert store._batch is not None
            assert store._batch.conn is not None
            assert await terminate(database, store._batch.conn.get_server_pid()) == 1
            await store.append_timeline("inc-1", TimelineEntry(T0, "action", "lost"))

    with pytest.raises(DATABASE_ERRORS):
        await cut_off()
    # Nothing of the batch was written, and the store goes on.
    await store.put_value("ns", "after", 2)
    assert await store.values("ns") == {"after": 2}
    assert await store.running_actions() == []
    got = await store.get_incident("inc-1")
    assert got is not None
    assert got.timeline == []


async def test_connections_the_server_closed_while_idle_are_replaced(
    store: PostgresStore, database: Database
) -> None:
    await store.put_value("ns", "before", 1)
    await asyncio.gather(*(store.get_value("ns", "before") for _ in range(5)))  # a few idle
    assert await terminate(database) >= 1
    # The pool may still hold them, not yet told they are gone: BEGIN (for a write) or the
    # read itself finds out, before anything ran, and a new connection takes over.
    await store.put_value("ns", "after", 2)
    assert await store.values("ns") == {"before": 1, "after": 2}
    assert await terminate(database) >= 1
    assert await asyncio.gather(*(store.get_value("ns", "after") for _ in range(5))) == [2] * 5
    async with store.batch():
        action = await store.begin_action("inc-1", "r", "rollback", T0)
    assert [a.id for a in await store.running_actions()] == [action]


async def refuse_key(database: Database, key: str) -> None:
    """A key the server refuses (a CHECK constraint): a statement failing on the server."""
    conn = await database.connect()
    try:
        await conn.execute(f"ALTER TABLE kv ADD CONSTRAINT refused CHECK (key <> '{key}')")
    finally:
        await conn.close()


async def test_a_statement_the_server_refuses_fails_alone_among_concurrent_writers(
    store: PostgresStore, database: Database
) -> None:
    await refuse_key(database, "refused")
    await store.create_incident(make_incident())
    results = await asyncio.gather(
        *(store.put_value("ns", "refused" if i == 7 else str(i), i) for i in range(15)),
        *(store.append_timeline("inc-1", TimelineEntry(T0, "s", str(i))) for i in range(5)),
        return_exceptions=True,
    )
    failed = [(i, type(r).__name__) for i, r in enumerate(results) if r is not None]
    assert failed == [(7, "CheckViolationError")]
    assert await store.values("ns") == {str(i): i for i in range(15) if i != 7}
    got = await store.get_incident("inc-1")
    assert got is not None
    assert [e.message for e in got.timeline] == [str(i) for i in range(5)]


async def test_a_batch_that_carries_on_after_a_refused_statement_writes_nothing(
    store: PostgresStore, database: Database
) -> None:
    await refuse_key(database, "refused")

    async def carrying_on() -> None:
        async with store.batch():
            await store.begin_action("inc-1", "r", "rollback", T0)
            with pytest.raises(DATABASE_ERRORS):
                await store.put_value("ns", "refused", 1)
            # Its transaction is gone: the rest fails too, and nothing is committed.
            with pytest.raises(BatchRolledBack):
                await store.put_value("ns", "k", 1)

    with pytest.raises(BatchRolledBack, match="nothing of it is written"):
        await carrying_on()
    assert await store.running_actions() == []
    await store.put_value("ns", "k", 2)
    assert await store.values("ns") == {"k": 2}


async def test_a_batch_may_carry_on_after_a_call_that_changed_nothing(
    store: PostgresStore,
) -> None:
    async with store.batch():
        action = await store.begin_action("inc-1", "r", "rollback", T0)
        with pytest.raises(KeyError):
            await store.append_timeline("unknown", TimelineEntry(T0, "s", "x"))
        with pytest.raises(ValueError, match="running"):
            await store.end_action(action, "running")
        await store.put_value("ns", "k", action)
    assert await store.get_value("ns", "k") == action


# -- a server that cannot be used: one line, where, never the password ---------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_not_listening_is_named_without_the_password() -> None:
    port = closed_port()
    store = PostgresStore(f"postgresql://runbookd:hunter2-secret@127.0.0.1:{port}/runbookd")
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    assert str(refused.value) == (
        f"PostgreSQL at runbookd@127.0.0.1:{port}/runbookd: Connection refused"
    )
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


async def test_a_server_that_never_answers_times_out_naming_where() -> None:
    async with silent_server() as port:
        store = PostgresStore(
            f"postgresql://u:hunter2-secret@127.0.0.1:{port}/x", connect_timeout=0.3
        )
        with pytest.raises(StoreUnavailable) as refused:
            await store.open()
    assert str(refused.value) == f"PostgreSQL at u@127.0.0.1:{port}/x: no answer within 0.3s"


async def test_a_database_that_does_not_exist_is_named_without_the_password() -> None:
    dsn = dsn_for("runbookd_no_such_database", password="hunter2-secret")
    store = PostgresStore(dsn)
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    message = str(refused.value)
    assert message.startswith("PostgreSQL at ")
    assert message.endswith(': database "runbookd_no_such_database" does not exist')
    assert "hunter2" not in message
