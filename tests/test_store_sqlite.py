"""SqliteStore: the shared store contract, plus what only SQLite has (WAL, file, schema version)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.models import TimelineEntry
from daemon.store_sqlite import SCHEMA_VERSION, SqliteStore
from tests.store_contract import RICH_TRIGGER, T0, Reopen, StoreContract, make_incident


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

    async def test_schema_version_and_tables(self, store: SqliteStore, path: Path) -> None:
        with raw(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"incidents", "timeline", "actions"} <= names
        assert {"actions_ts", "actions_rule_remediation_ts"} <= names

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
            await s.record_action("r", "x", T0, "ok")
        await s.open()
        await s.open()  # idempotent
        await s.close()
        await s.close()  # idempotent
        with pytest.raises(RuntimeError, match="not open"):
            await s.last_action("r", "x")

    async def test_negative_limit_is_an_error(self, store: SqliteStore) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.list_incidents(limit=-1)
