"""SqliteStore: the shared store contract, plus what only SQLite has (WAL, file, schema version)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from daemon.core.models import TimelineEntry
from daemon.store.protocol import ActionRecord
from daemon.store.sqlite.migrations import MIGRATIONS as _MIGRATIONS
from daemon.store.sqlite.migrations import SCHEMA_VERSION
from daemon.store.sqlite.repository import SqliteStore
from tests.store_contract import (
    RICH_TRIGGER,
    T0,
    Reopen,
    StoreContract,
    act,
    assert_twenty_writers_durable,
    hold_batch,
    make_incident,
)
from tests.world import Commits


@asynccontextmanager
async def thread_held(store: SqliteStore) -> AsyncIterator[None]:
    """Keeps the store's connection thread busy until the block ends: what is sent there
    meanwhile waits, as behind a slow commit."""
    release = threading.Event()
    held = asyncio.ensure_future(store._on_thread(lambda conn: release.wait(10)))
    await asyncio.sleep(0)  # sent to the thread before anything the block sends
    try:
        yield
    finally:
        release.set()
        assert await held


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks take steps until `condition` holds (no time passes)."""
    for _ in range(50):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the store never got there")


def trip_running(store: SqliteStore) -> bool:
    """What was queued has been taken for a trip to the thread, and nothing is queued since."""
    return store._flusher is not None and not store._queue


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to look at the file from outside the store."""
    # Autocommit, and closed on exit (sqlite3's own `with` only commits).
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        # Nested on purpose: open() creates the state directory.
        return tmp_path / "state" / "runbookd" / "runbookd.db"

    @pytest.fixture
    async def store(self, path: Path) -> AsyncIterator[SqliteStore]:
        s = SqliteStore(path)
        await s.open()
        yield s
        await s.close()

    @pytest.fixture
    async def reopen(self, path: Path) -> AsyncIterator[Reopen]:
        opened: list[SqliteStore] = []

        async def _reopen() -> SqliteStore:
            s = SqliteStore(path)
            await s.open()
            opened.append(s)
            return s

        yield _reopen
        for s in opened:
            await s.close()

    # -- SQLite only -------------------------------------------------------------------------

    async def test_creates_parent_directories(self, store: SqliteStore, path: Path) -> None:
        assert await asyncio.to_thread(path.is_file)

    async def test_wal_mode_is_on(self, store: SqliteStore, path: Path) -> None:
        # journal_mode=WAL is a property of the file: a fresh connection sees it.
        with raw(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert await asyncio.to_thread(path.with_name(path.name + "-wal").exists)

    async def test_the_newest_incidents_are_read_from_an_index_not_a_sort(
        self, store: SqliteStore, path: Path
    ) -> None:
        # The console's overview lists the newest incidents: with 10,000 stored, sorting the
        # whole table took 3 ms a listing; the index reads the first few.
        statement = (
            "EXPLAIN QUERY PLAN SELECT id FROM incidents WHERE (?1 IS NULL OR status = ?1)"
            " AND (?2 IS NULL OR rule = ?2) ORDER BY opened_at DESC, id DESC LIMIT ?3"
        )
        with raw(path) as conn:
            plan = " ".join(str(r[-1]) for r in conn.execute(statement, (None, None, 20)))
        assert "USING INDEX incidents_opened" in plan
        assert "TEMP B-TREE" not in plan

    async def test_schema_version_and_tables(self, store: SqliteStore, path: Path) -> None:
        with raw(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        tables = {"incidents", "timeline", "actions", "kv", "outbox", "job_runs", "deploys"}
        assert tables | {"forwarded", "procedure_runs"} <= names
        assert {
            "actions_ts",
            "actions_rule_remediation_ts",
            "actions_running",
            "outbox_due",
        } <= names

    async def test_a_version_2_database_keeps_its_acknowledgements_as_state(
        self, path: Path
    ) -> None:
        """Before version 3 an acknowledgement was only a timeline entry: the upgrade makes
        the first one the incident's state (who, when)."""
        path.parent.mkdir(parents=True)
        with raw(path) as conn:
            for statement in (*_MIGRATIONS[0], *_MIGRATIONS[1]):
                conn.execute(statement)
            conn.execute("PRAGMA user_version = 2")
            for incident_id in ("acked", "not"):
                conn.execute(
                    "INSERT INTO incidents (id, rule, check_name, severity, summary, status,"
                    " opened_at) VALUES (?, 'errors', 'app', 'critical', 's', 'open', ?)",
                    (incident_id, T0),
                )
            for ts, by in ((T0 + 5, "ana"), (T0 + 9, "bo")):
                conn.execute(
                    "INSERT INTO timeline (incident_id, ts, kind, message, data)"
                    " VALUES ('acked', ?, 'acknowledged', 'acknowledged', ?)",
                    (ts, json.dumps({"by": by, "reason": ""})),
                )
        s = SqliteStore(path)
        await s.open()
        try:
            acked, other = await s.get_incident("acked"), await s.get_incident("not")
            assert acked is not None
            assert other is not None
            assert (acked.acknowledged_by, acked.acknowledged_at) == ("ana", T0 + 5)
            assert (other.acknowledged_by, other.acknowledged_at) == (None, None)
        finally:
            await s.close()

    async def test_a_version_3_database_keeps_who_closed_its_incidents(self, path: Path) -> None:
        """Before version 4 who closed an incident by hand was only in its "resolved" entry:
        the upgrade makes it the incident's state; an incident that cleared has no closer."""
        path.parent.mkdir(parents=True)
        with raw(path) as conn:
            for statement in (stmt for step in _MIGRATIONS[:3] for stmt in step):
                conn.execute(statement)
            conn.execute("PRAGMA user_version = 3")
            for incident_id, data in (
                ("closed", {"by": "ana", "reason": "known"}),
                ("cleared", {}),
            ):
                conn.execute(
                    "INSERT INTO incidents (id, rule, check_name, severity, summary, status,"
                    " opened_at, resolved_at) VALUES (?, 'errors', 'app', 'critical', 's',"
                    " 'resolved', ?, ?)",
                    (incident_id, T0, T0 + 9),
                )
                conn.execute(
                    "INSERT INTO timeline (incident_id, ts, kind, message, data)"
                    " VALUES (?, ?, 'resolved', 'resolved', ?)",
                    (incident_id, T0 + 9, json.dumps(data)),
                )
        s = SqliteStore(path)
        await s.open()
        try:
            closed, cleared = await s.get_incident("closed"), await s.get_incident("cleared")
            assert closed is not None
            assert cleared is not None
            assert (closed.resolved_by, cleared.resolved_by) == ("ana", None)
        finally:
            await s.close()

    async def test_upgrades_a_version_1_database(self, path: Path) -> None:
        path.parent.mkdir(parents=True)
        with raw(path) as conn:
            for statement in _MIGRATIONS[0]:
                conn.execute(statement)
            conn.execute("PRAGMA user_version = 1")
            conn.execute(
                "INSERT INTO incidents (id, rule, check_name, severity, summary, status, opened_at)"
                " VALUES ('old', 'errors', 'error_rate', 'critical', 's', 'open', ?)",
                (T0,),
            )
            conn.execute(
                "INSERT INTO actions (rule, remediation, ts, outcome)"
                " VALUES ('errors', 'rollback', ?, 'ok')",
                (T0,),
            )
        s = SqliteStore(path)
        await s.open()
        try:
            with raw(path) as conn:
                assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                assert conn.execute("SELECT incident_id FROM actions").fetchall() == [(None,)]
            old = await s.get_incident("old")
            assert old is not None
            assert old.rule == "errors"
            # The old row still counts for cooldown and budget, and was not running.
            assert await s.last_action("errors", "rollback") == T0
            assert await s.count_actions(T0, only="rollback") == 1
            assert await s.running_actions() == []
            # And the new tables work.
            new = await s.begin_action("old", "errors", "rollback", T0 + 1)
            assert await s.running_actions() == [
                ActionRecord(new, "old", "errors", "rollback", T0 + 1, "running")
            ]
            await s.put_value("ns", "k", [1])
            assert await s.get_value("ns", "k") == [1]
            item = await s.outbox_add("old", "page", "execute", T0)
            assert [i.id for i in await s.outbox_due(T0)] == [item]
        finally:
            await s.close()

    async def test_begin_action_is_committed_before_it_returns(
        self, store: SqliteStore, path: Path
    ) -> None:
        # What a crash right after begin_action leaves: another connection sees the row.
        action_id = await store.begin_action("inc-1", "errors", "rollback", T0)
        with raw(path) as conn:
            row = conn.execute(
                "SELECT id, incident_id, rule, remediation, ts, outcome FROM actions"
            ).fetchone()
        assert row == (action_id, "inc-1", "errors", "rollback", T0, "running")
        await store.end_action(action_id, "ok")
        await store.end_action(action_id, "interrupted")
        with raw(path) as conn:
            assert conn.execute("SELECT outcome FROM actions").fetchall() == [("ok",)]

    async def test_a_batch_is_one_commit(self, store: SqliteStore) -> None:
        async with Commits(store) as commits:
            await store.create_incident(make_incident())
            await store.put_value("ns", "a", 1)
        assert commits.count == 2  # outside a batch every write is its own transaction
        async with Commits(store) as commits, store.batch():
            await store.create_incident(make_incident("inc-2"))
            for i in range(10):
                await store.append_timeline("inc-1", TimelineEntry(T0 + i, "alert", str(i)))
            await store.put_values("ns", {"a": None, **{f"k{i}": i for i in range(10)}})
            await store.resolve_incident("inc-2", T0 + 1)
            await store.begin_action("inc-1", "r", "rollback", T0)
        assert commits.count == 1
        async with Commits(store) as commits, store.batch():
            assert await store.get_value("ns", "k1") == 1
        assert commits.count == 0  # nothing written, nothing to commit

    # -- group commit ------------------------------------------------------------------------

    async def test_concurrent_batches_share_one_commit(
        self, store: SqliteStore, path: Path
    ) -> None:
        async def writer(i: int) -> None:
            async with store.batch():
                await store.create_incident(make_incident(f"inc-{i}"))
                await store.append_timeline(f"inc-{i}", TimelineEntry(T0, "alert", str(i)))
                await store.put_values("ns", {f"k{i}": i})

        # All 20 are queued before the first trip starts: one transaction for the 60 writes.
        async with Commits(store) as commits:
            await asyncio.gather(*(writer(i) for i in range(20)))
        assert commits.count == 1
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM incidents").fetchone() == (20,)
            assert conn.execute("SELECT count(*) FROM timeline").fetchone() == (20,)
            assert conn.execute("SELECT count(*) FROM kv").fetchone() == (20,)

    async def test_writers_arriving_during_a_commit_share_the_next(
        self, store: SqliteStore, reopen: Reopen
    ) -> None:
        async def writer(i: int) -> None:
            async with store.batch():
                await store.create_incident(make_incident(f"inc-{i}", opened_at=T0 + i))
                await store.append_timeline(f"inc-{i}", TimelineEntry(T0, "alert", str(i)))
                await store.put_values("ns", {f"k{i}": i})

        async with Commits(store) as commits:
            async with thread_held(store):
                first = asyncio.ensure_future(writer(0))
                await until(lambda: trip_running(store))
                rest = [asyncio.ensure_future(writer(i)) for i in range(1, 20)]
                await until(lambda: len(store._queue) == 19)
                assert not first.done()  # answered only after its commit
            await asyncio.gather(first, *rest)
        assert commits.count == 2  # the first writer's commit, then the 19 that queued behind it
        await store.close()

        await assert_twenty_writers_durable(reopen)

    async def test_single_writes_share_commits_and_get_their_results(
        self, store: SqliteStore
    ) -> None:
        await store.create_incident(make_incident())
        async with Commits(store) as commits:
            ids = await asyncio.gather(
                *(store.begin_action("inc-1", "r", "restart", T0 + i) for i in range(10)),
                *(store.outbox_add("inc-1", "page", "execute", T0 + i) for i in range(10)),
            )
        assert commits.count == 1
        assert [a.id for a in await store.running_actions()] == ids[:10]
        assert [i.id for i in await store.outbox_due(T0 + 10)] == ids[10:]

    async def test_a_cancelled_writer_is_dropped_unless_its_commit_began(
        self, store: SqliteStore, path: Path
    ) -> None:
        async with thread_held(store):
            in_flight_write = asyncio.ensure_future(store.put_value("ns", "in flight", 1))
            await until(lambda: trip_running(store))
            queued = asyncio.ensure_future(store.put_value("ns", "queued", 1))
            other = asyncio.ensure_future(store.put_value("ns", "other", 1))
            await until(lambda: len(store._queue) == 2)
            queued.cancel()
            in_flight_write.cancel()
        await other
        for task in (queued, in_flight_write):
            with pytest.raises(asyncio.CancelledError):
                await task
        # The queued one never reached the thread. The other's trip had begun, as a cancelled
        # COMMIT would have: it is written whole, though its caller was told nothing.
        with raw(path) as conn:
            assert conn.execute("SELECT key FROM kv ORDER BY key").fetchall() == [
                ("in flight",),
                ("other",),
            ]

    async def test_disk_full_fails_only_the_writer_that_needed_space(
        self, store: SqliteStore, path: Path
    ) -> None:
        await store.put_value("ns", "before", 0)

        def cap(conn: sqlite3.Connection) -> None:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {pages + 1}")

        await store._on_thread(cap)
        async with Commits(store) as commits:
            results = await asyncio.gather(
                store.put_value("ns", "a", 1),
                store.put_value("ns", "big", "x" * 100_000),
                store.put_value("ns", "b", 2),
                return_exceptions=True,
            )
        # SQLite rolled back the whole transaction on SQLITE_FULL: the others went again.
        assert results[0] is None
        assert isinstance(results[1], sqlite3.OperationalError)
        assert "full" in str(results[1])
        assert results[2] is None
        assert commits.count == 1
        with raw(path) as conn:
            assert conn.execute("SELECT key FROM kv ORDER BY key").fetchall() == [
                ("a",),
                ("b",),
                ("before",),
            ]

    async def test_a_batch_that_reads_runs_its_writes_first_and_commits_all_or_nothing(
        self, store: SqliteStore
    ) -> None:
        await store.create_incident(make_incident("taken"))

        async def caught() -> None:
            async with store.batch():
                await store.put_value("ns", "k", 1)
                await store.create_incident(make_incident("taken"))  # fails, but not yet
                with pytest.raises(ValueError, match="taken"):
                    await store.get_value("ns", "k")  # its writes run first, to be seen
                # Caught, and the block goes on: the batch is gone all the same.
                await store.put_value("ns", "after", 1)

        async with Commits(store) as commits:
            with pytest.raises(sqlite3.OperationalError, match="rolled back"):
                await caught()
        assert commits.count == 0
        assert await store.values("ns") == {}
        async with Commits(store) as commits, store.batch():
            await store.put_value("ns", "k", 1)
            assert await store.get_value("ns", "k") == 1
            await store.append_timeline("taken", TimelineEntry(T0, "alert", "seen"))
        assert commits.count == 1  # the batch's own transaction, committed alone
        assert await store.values("ns") == {"k": 1}

    async def test_close_commits_what_is_queued(self, store: SqliteStore, reopen: Reopen) -> None:
        async with thread_held(store):
            writers = [asyncio.ensure_future(store.put_value("ns", "0", 0))]
            await until(lambda: trip_running(store))
            writers += [
                asyncio.ensure_future(store.put_value("ns", str(i), i)) for i in range(1, 20)
            ]
            await until(lambda: len(store._queue) == 19)
            closing = asyncio.ensure_future(store.close())
            await asyncio.sleep(0)
            assert not closing.done()
        await closing
        # Every writer was answered, after its commit.
        assert [w.result() for w in writers] == [None] * 20
        restarted = await reopen()
        assert await restarted.values("ns") == {str(i): i for i in range(20)}

    async def test_close_waits_for_an_open_batch(self, store: SqliteStore, reopen: Reopen) -> None:
        holder, release = await hold_batch(store)
        closing = asyncio.ensure_future(store.close())
        for _ in range(3):
            await asyncio.sleep(0)
        assert not closing.done()
        release.set()
        await closing
        await holder
        restarted = await reopen()
        assert await restarted.values("ns") == {"batch": 1}

    async def test_values_are_compact_json(self, store: SqliteStore, path: Path) -> None:
        await store.put_value("ns", "k", {"région": [1, 2.5, None]})
        with raw(path) as conn:
            value = conn.execute("SELECT value FROM kv").fetchone()[0]
        assert value == '{"région":[1,2.5,null]}'
        await store.put_value("ns", "k", None)
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 0

    async def test_prune_deletes_finished_outbox_rows(self, store: SqliteStore, path: Path) -> None:
        done = await store.outbox_add("inc-1", "page", "execute", T0)
        await store.outbox_finish(done, "delivered")
        await store.outbox_add("inc-1", "page", "resolve", T0)
        with raw(path) as conn:
            assert conn.execute(
                "SELECT outcome FROM outbox WHERE finished_at IS NOT NULL"
            ).fetchall() == [("delivered",)]
        await store.prune(T0 + 1)
        with raw(path) as conn:
            assert conn.execute("SELECT count(*), max(outcome) FROM outbox").fetchone() == (1, None)

    async def test_reopen_does_not_migrate_again(self, store: SqliteStore, reopen: Reopen) -> None:
        await store.create_incident(make_incident())
        await store.close()
        again = await reopen()
        assert await again.get_incident("inc-1") == make_incident()

    async def test_refuses_a_newer_schema(self, tmp_path: Path) -> None:
        path = tmp_path / "future.db"
        with raw(path) as conn:
            conn.execute("PRAGMA user_version = 99")
        s = SqliteStore(path)
        with pytest.raises(RuntimeError, match="newer"):
            await s.open()
        with pytest.raises(RuntimeError, match="not open"):
            await s.get_incident("x")

    async def test_json_is_compact_and_keeps_unicode(self, store: SqliteStore, path: Path) -> None:
        await store.create_incident(
            make_incident(trigger=RICH_TRIGGER, timeline=[TimelineEntry(T0, "k", "m", {"a": 1})])
        )
        with raw(path) as conn:
            trigger = conn.execute('SELECT "trigger" FROM incidents').fetchone()[0]
            data = conn.execute("SELECT data FROM timeline").fetchone()[0]
        assert trigger == json.dumps(RICH_TRIGGER, separators=(",", ":"), ensure_ascii=False)
        assert "région" in trigger
        assert data == '{"a":1}'

    async def test_prune_cascades_to_timeline_rows(self, store: SqliteStore, path: Path) -> None:
        await store.create_incident(make_incident(timeline=[TimelineEntry(T0, "o", "x")]))
        await store.append_timeline("inc-1", TimelineEntry(T0, "s", "y"))
        await store.resolve_incident("inc-1", T0)
        await store.prune(T0 + 1)
        with raw(path) as conn:
            assert conn.execute("SELECT count(*) FROM timeline").fetchone()[0] == 0

    async def test_use_before_open_or_after_close_fails(self, path: Path) -> None:
        s = SqliteStore(path)
        with pytest.raises(RuntimeError, match="not open"):
            await act(s, "r", "x", T0)
        await s.open()
        await s.open()  # idempotent
        await s.close()
        await s.close()  # idempotent
        with pytest.raises(RuntimeError, match="not open"):
            await s.last_action("r", "x")

    async def test_negative_limit_is_an_error(self, store: SqliteStore) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.list_incidents(limit=-1)
