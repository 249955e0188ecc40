"""PostgresStore: the shared store contract on the PostgreSQL on this machine, plus what only
PostgreSQL has (its schema table, replicas migrating together, group commit across
connections). Failures (lost connections, refused statements, errors without the
password): test_store_postgres_failures.py.

The contract runs on one database per module, emptied before each test (DELETE and restarted
sequences: ~25 ms) rather than one created per test (~80-300 ms with its drop, ~190 ms with
TRUNCATE); the tests of the schema itself get a fresh database each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from daemon.core.models import TimelineEntry
from daemon.store.postgres.migrations import SCHEMA_VERSION
from daemon.store.postgres.repository import PostgresStore
from daemon.store.protocol import Fenced, StoreUnavailable
from tests.pg import EMPTY_STORE, Database, emptied, fresh_database, module_store_database
from tests.store_contract import T0, Reopen, StoreContract, make_incident


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """The module's database, migrated (what `emptied` empties)."""
    with module_store_database() as dsn:
        yield dsn


@pytest.fixture
async def dsn(database: str) -> str:
    await emptied(database, EMPTY_STORE)
    return database


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(dsn)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def reopen(dsn: str) -> AsyncIterator[Reopen]:
    opened: list[PostgresStore] = []

    async def _reopen() -> PostgresStore:
        s = PostgresStore(dsn)
        await s.open()
        opened.append(s)
        return s

    yield _reopen
    for s in opened:
        await s.close()


class TestPostgresStore(StoreContract):
    """The contract, with the module's `store` and `reopen` fixtures."""


# -- the schema --------------------------------------------------------------------------------


@pytest.fixture
async def fresh() -> AsyncIterator[Database]:
    async with fresh_database() as database:
        yield database


async def versions(database: Database) -> list[int]:
    conn = await database.connect()
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()


async def test_migrates_an_empty_database(fresh: Database) -> None:
    store = PostgresStore(fresh.dsn)
    await store.open()
    await store.create_incident(make_incident())
    await store.close()
    assert await versions(fresh) == list(range(1, SCHEMA_VERSION + 1))
    conn = await fresh.connect()
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert tables == {
        "schema_version",
        "incidents",
        "timeline",
        "actions",
        "kv",
        "outbox",
        "job_runs",
        "lease",
        "deploys",
        "deploy_timeline",
        "forwarded",
        "procedure_runs",
    }
    # Opened again: nothing to migrate, the data is there.
    again = PostgresStore(fresh.dsn)
    await again.open()
    try:
        assert await again.get_incident("inc-1") == make_incident()
    finally:
        await again.close()
    assert await versions(fresh) == list(range(1, SCHEMA_VERSION + 1))


async def test_replicas_starting_together_migrate_once(fresh: Database) -> None:
    stores = [PostgresStore(fresh.dsn) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await asyncio.gather(*(s.put_value("ns", str(i), i) for i, s in enumerate(stores)))
        assert await stores[0].values("ns") == {str(i): i for i in range(5)}
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert await versions(fresh) == list(range(1, SCHEMA_VERSION + 1))


async def test_refuses_a_newer_schema_and_touches_nothing(fresh: Database) -> None:
    conn = await fresh.connect()
    try:
        await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY)")
        await conn.execute("INSERT INTO schema_version VALUES (99)")
    finally:
        await conn.close()
    store = PostgresStore(fresh.dsn)
    with pytest.raises(StoreUnavailable, match="schema version 99 is newer") as refused:
        await store.open()
    assert f"/{fresh.name}:" in str(refused.value)
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_incident("x")
    assert await versions(fresh) == [99]
    conn = await fresh.connect()
    try:
        assert await conn.fetchval("SELECT to_regclass('incidents')") is None
    finally:
        await conn.close()


# -- several tasks, several replicas -------------------------------------------------------------


async def test_concurrent_single_writes_share_commits(store: PostgresStore) -> None:
    await store.create_incident(make_incident())
    commits = store.commits
    await asyncio.gather(
        *(store.append_timeline("inc-1", TimelineEntry(T0 + i, "s", str(i))) for i in range(200))
    )
    got = await store.get_incident("inc-1")
    assert got is not None
    # Issued in this order, written in this order.
    assert [e.message for e in got.timeline] == [str(i) for i in range(200)]
    # Writers arriving while a commit runs share the next one.
    assert store.commits - commits < 50


async def test_concurrent_batches_from_many_tasks(store: PostgresStore, reopen: Reopen) -> None:
    """Batches that read and take ids (their own transaction) beside batches that only write
    (the group commit) and single writes, from 60 tasks, while a second replica writes to the
    same tables: every batch lands whole."""
    replica = await reopen()

    async def acting(i: int) -> int:
        async with store.batch():
            await store.create_incident(make_incident(f"inc-{i}", opened_at=T0 + i))
            action = await store.begin_action(f"inc-{i}", "r", "rollback", T0 + i)
            got = await store.get_incident(f"inc-{i}")
            assert got is not None
            await store.append_timeline(f"inc-{i}", TimelineEntry(T0 + i, "action", str(action)))
            await store.put_value("actions", f"inc-{i}", action)
        return action

    async def writing(i: int) -> None:
        async with store.batch():
            await store.create_incident(make_incident(f"w-{i}", opened_at=T0 + i))
            await store.append_timeline(f"w-{i}", TimelineEntry(T0 + i, "alert", "joined"))
            await store.put_values(f"alerts:{i}", {"a": i, "b": None})

    async def elsewhere(i: int) -> None:
        async with replica.batch():
            item = await replica.outbox_add(f"inc-{i}", "page", "execute", T0 + i)
            await replica.put_value("replica", str(i), item)

    results = await asyncio.gather(
        *(acting(i) for i in range(20)),
        *(writing(i) for i in range(20)),
        *(store.put_value("single", str(i), i) for i in range(20)),
        *(elsewhere(i) for i in range(20)),
    )
    actions = results[:20]
    assert len(set(actions)) == 20
    assert await store.values("actions") == {f"inc-{i}": a for i, a in enumerate(actions)}
    opened = {i.id: i for i in await store.open_incidents()}
    assert set(opened) == {f"inc-{i}" for i in range(20)} | {f"w-{i}" for i in range(20)}
    assert [e.message for e in opened["inc-7"].timeline] == [str(actions[7])]
    assert [await store.values(f"alerts:{i}") for i in range(20)] == [{"a": i} for i in range(20)]
    assert await store.values("single") == {str(i): i for i in range(20)}
    assert len(await store.outbox_due(T0 + 100)) == 20
    assert len(await store.values("replica")) == 20


async def test_a_batch_on_one_replica_is_invisible_to_another_until_it_commits(
    store: PostgresStore, reopen: Reopen
) -> None:
    replica = await reopen()
    async with store.batch():
        action = await store.begin_action("inc-1", "r", "rollback", T0)  # its own transaction
        await store.put_value("ns", "k", action)
        # The replica is not held by this process's batch, and sees none of it.
        assert await replica.running_actions() == []
        assert await replica.get_value("ns", "k") is None
        await replica.put_value("ns", "other", 1)
    assert [a.id for a in await replica.running_actions()] == [action]
    assert await replica.values("ns") == {"k": action, "other": 1}


async def test_nul_in_text_is_kept_as_a_replacement_character(store: PostgresStore) -> None:
    # PostgreSQL's text cannot hold NUL; an alert's label or summary may carry one.
    incident = make_incident("inc-\x00", timeline=[TimelineEntry(T0, "opened", "a\x00b")])
    await store.create_incident(incident)
    await store.append_timeline("inc-\x00", TimelineEntry(T0, "note", "c\x00", {"d": "\x00"}))
    await store.put_value("alerts:\x00", "fp\x00", {"summary": "e\x00"})
    got = await store.get_incident("inc-\x00")
    assert got is not None
    assert got.id == "inc-\ufffd"
    assert [(e.message, e.data) for e in got.timeline] == [
        ("a\ufffdb", {}),
        ("c\ufffd", {"d": "\x00"}),
    ]
    # The key reads back with what it became; JSON keeps its escaped NUL.
    assert await store.get_value("alerts:\x00", "fp\x00") == {"summary": "e\x00"}
    assert await store.values("alerts:\x00") == {"fp\ufffd": {"summary": "e\x00"}}


async def test_repr_names_where_without_the_password() -> None:
    store = PostgresStore("postgresql://runbookd:hunter2-secret@db.internal:6432/runbookd")
    assert repr(store) == "<PostgresStore runbookd@db.internal:6432/runbookd>"
    assert "hunter2" not in store.where


async def test_a_leader_cut_off_mid_transaction_does_not_block_the_takeover(dsn: str) -> None:
    """A leader whose batch checked its epoch, then went silent (a process frozen, a network
    gone without a close): the server ends its transaction after `idle_limit`, so a standby's
    claim waits that long at most, not until TCP keepalive notices (hours)."""
    leader = PostgresStore(dsn, idle_limit=0.5)
    standby = PostgresStore(dsn)
    await leader.open()
    await standby.open()
    raw = await asyncpg.connect(dsn)
    frozen = asyncio.Event()
    try:
        await leader.claim_lease("a", 30.0)

        async def silent_leader() -> None:
            async with leader.batch():
                await leader.check_epoch("a", 1)  # holds the lease's row...
                await frozen.wait()  # ...and says nothing more

        held = asyncio.create_task(silent_leader())
        await asyncio.sleep(0.05)
        async with asyncio.timeout(5):  # without the limit: blocked for good
            await raw.execute("UPDATE lease SET expires_at = clock_timestamp()")  # it expired
            lease = await standby.claim_lease("b", 30.0)
        assert (lease.holder, lease.epoch) == ("b", 2)
        frozen.set()
        with pytest.raises(Exception):  # noqa: B017, PT011 - the server ended it: any error
            await held
    finally:
        frozen.set()
        await raw.close()
        await leader.close()
        await standby.close()


async def test_no_takeover_commits_while_a_fenced_claim_is_open(dsn: str) -> None:
    """The leader's batch that checked its epoch holds the lease row until it commits: a
    standby's takeover waits, so it cannot land between the check and the claim."""
    leader, standby = PostgresStore(dsn), PostgresStore(dsn)
    await leader.open()
    await standby.open()
    raw, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await leader.claim_lease("a", 30.0)

        async def takeover() -> tuple[str, int]:
            # The lease made to expire now, then claimed: what a standby does after expiry.
            await raw.execute("UPDATE lease SET expires_at = clock_timestamp()")
            lease = await standby.claim_lease("b", 30.0)
            return lease.holder, lease.epoch

        async with leader.batch():
            await leader.check_epoch("a", 1)
            await leader.put_value("ns", "claimed", 1)
            task = asyncio.create_task(takeover())
            for _ in range(500):  # bounded: until the server says the takeover waits
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting == 1
            assert not task.done()
        assert await task == ("b", 2)
        assert await leader.get_value("ns", "claimed") == 1
        with pytest.raises(Fenced):
            await leader.check_epoch("a", 1)
    finally:
        await raw.close()
        await watcher.close()
        await leader.close()
        await standby.close()
