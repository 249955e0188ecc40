"""The embedded store: one SQLite file in the daemon's state directory, through aiosqlite.

Every write is its own committed transaction, or part of a `batch()` that commits as one, so a
restarted daemon remembers its open incidents, their timelines, the action ledger (cooldowns,
the global budget, and actions a crash interrupted), the small values remediations keep, and
the paging outbox.

WAL with `synchronous=NORMAL`: a crash of the daemon loses nothing committed; a power loss
may lose the last few transactions but never corrupts the file. Readers never block the writer.

The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS[n]` takes version n to n + 1.
Append a migration to change the schema; never edit a released one.

History does not prune itself: call `prune()` periodically (e.g. daily with now - 30 days).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from daemon.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import ActionRecord, OutboxItem, Pruned

log = structlog.get_logger(__name__)

BUSY_TIMEOUT_MS = 5000

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # `trigger` is an SQL keyword, hence quoted.
        """
        CREATE TABLE incidents (
            id          TEXT PRIMARY KEY,
            rule        TEXT NOT NULL,
            check_name  TEXT NOT NULL,
            severity    TEXT NOT NULL,
            summary     TEXT NOT NULL,
            status      TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
            opened_at   REAL NOT NULL,
            resolved_at REAL,
            "trigger"   TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX incidents_status_opened ON incidents (status, opened_at)",
        "CREATE INDEX incidents_rule_opened ON incidents (rule, opened_at)",
        # AUTOINCREMENT: ids never reused, so ordering by id is insertion order even after prune.
        """
        CREATE TABLE timeline (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id TEXT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
            ts          REAL NOT NULL,
            kind        TEXT NOT NULL,
            message     TEXT NOT NULL,
            data        TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX timeline_incident ON timeline (incident_id, id)",
        """
        CREATE TABLE actions (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            rule        TEXT NOT NULL,
            remediation TEXT NOT NULL,
            ts          REAL NOT NULL,
            outcome     TEXT NOT NULL
        )
        """,
        "CREATE INDEX actions_ts ON actions (ts)",
        "CREATE INDEX actions_rule_remediation_ts ON actions (rule, remediation, ts)",
    ),
    (
        # Version 1 rows were written after the run by record_action: no incident id, never
        # "running". Now begin_action writes "running" first and end_action replaces it.
        "ALTER TABLE actions ADD COLUMN incident_id TEXT",
        # Partial: only the few unfinished actions are indexed (what a restart looks for).
        "CREATE INDEX actions_running ON actions (ts, id) WHERE outcome = 'running'",
        # `value` is compact JSON text. WITHOUT ROWID: the key is the row.
        """
        CREATE TABLE kv (
            namespace   TEXT NOT NULL,
            key         TEXT NOT NULL,
            value       TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID
        """,
        # No foreign key to incidents: like `actions`, the outbox is pruned by its own age, and
        # an incident's deletion must neither wait for nor take its notifications.
        """
        CREATE TABLE outbox (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id TEXT NOT NULL,
            remediation TEXT NOT NULL,
            phase       TEXT NOT NULL,
            created_at  REAL NOT NULL,
            next_at     REAL NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT NOT NULL DEFAULT '',
            finished_at REAL,
            outcome     TEXT,
            CHECK ((finished_at IS NULL) = (outcome IS NULL))
        )
        """,
        # Partial: finished items are never due, so the index holds only pending ones.
        "CREATE INDEX outbox_due ON outbox (next_at, id) WHERE finished_at IS NULL",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

# Statements are spelled out whole, never assembled from strings.
_INSERT_INCIDENT = """
    INSERT INTO incidents
        (id, rule, check_name, severity, summary, status, opened_at, resolved_at, "trigger")
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
_INSERT_ENTRY = "INSERT INTO timeline (incident_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)"
# Inserts nothing for an unknown incident, which the row count then tells.
_APPEND_ENTRY = """
    INSERT INTO timeline (incident_id, ts, kind, message, data)
    SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM incidents WHERE id = ?)
"""

_PUT_VALUE = (
    "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"
)
_DELETE_VALUE = "DELETE FROM kv WHERE namespace = ? AND key = ?"

# The outcome of a begun, not yet ended action. Spelled as a literal in the SQL below too, so
# the planner can use the partial index `actions_running`.
RUNNING = "running"


def _dumps(value: Any) -> str:
    # Compact, and unicode kept as is: the column is TEXT, not ASCII.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _incident(row: sqlite3.Row, timeline: list[TimelineEntry] | None = None) -> Incident:
    return Incident(
        id=row["id"],
        rule=row["rule"],
        check=row["check_name"],
        severity=row["severity"],
        summary=row["summary"],
        opened_at=row["opened_at"],
        status=IncidentStatus(row["status"]),
        resolved_at=row["resolved_at"],
        trigger=json.loads(row["trigger"]),
        timeline=timeline if timeline is not None else [],
    )


def _entry(row: sqlite3.Row) -> TimelineEntry:
    return TimelineEntry(
        ts=row["ts"], kind=row["kind"], message=row["message"], data=json.loads(row["data"])
    )


def _action(row: sqlite3.Row) -> ActionRecord:
    return ActionRecord(
        id=row["id"],
        # NULL only on rows from schema version 1, which are never running.
        incident_id=row["incident_id"] or "",
        rule=row["rule"],
        remediation=row["remediation"],
        ts=row["ts"],
        outcome=row["outcome"],
    )


def _outbox_item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        incident_id=row["incident_id"],
        remediation=row["remediation"],
        phase=row["phase"],
        created_at=row["created_at"],
        next_at=row["next_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def _entry_params(incident_id: str, e: TimelineEntry) -> tuple[str, float, str, str, str]:
    return (incident_id, e.ts, e.kind, e.message, _dumps(e.data))


class SqliteStore:
    """The `Store` protocol on one SQLite file; parent directories are created on `open()`.

    Beyond the protocol: unknown incident ids raise KeyError (append, resolve), a duplicate id
    raises ValueError (create), resolving twice keeps the first `resolved_at`. Ending an action
    with "running" is a ValueError; ending it twice keeps the first outcome. Unknown outbox ids
    raise KeyError; finishing twice keeps the first outcome, and rescheduling a finished item
    changes nothing (it is never due again).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # One connection, shared by every task: the lock keeps transactions from interleaving.
        self._lock = asyncio.Lock()
        # The task whose batch holds the lock: its calls run inside the open transaction.
        self._batch_owner: asyncio.Task[Any] | None = None
        self.commits = 0  # write transactions committed since open, for tests and diagnostics

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: no implicit BEGIN; transactions are explicit (`_transaction`).
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            async with db.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            mode = row[0] if row else None
            if mode != "wal":
                # e.g. a filesystem without shared memory: slower, still correct, so go on.
                log.warning("sqlite_wal_unavailable", path=str(self.path), journal_mode=mode)
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await self._migrate(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        async with self._lock:
            if self._db is None:
                return
            db, self._db = self._db, None
            try:
                # Recommended before closing a connection: keeps the query planner's stats fresh.
                await db.execute("PRAGMA optimize")
            finally:
                await db.close()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # IMMEDIATE: two processes opening a fresh file must not both create the tables.
        try:
            await db.execute("BEGIN IMMEDIATE")
            async with db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version} is newer than this runbookd "
                    f"supports ({SCHEMA_VERSION}); refusing to touch it"
                )
            for target, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await db.execute(statement)
                # PRAGMA takes no parameters; `target` is an int we computed.
                await db.execute(f"PRAGMA user_version = {target:d}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore is not open")
        return self._db

    def _in_batch(self) -> bool:
        return self._batch_owner is not None and self._batch_owner is asyncio.current_task()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        if self._in_batch():
            yield  # joins the enclosing batch, which commits or rolls back for both
            return
        async with self._transaction():
            # Only this task: one it spawns inherits nothing and waits for the lock.
            self._batch_owner = asyncio.current_task()
            try:
                yield
            finally:
                self._batch_owner = None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._in_batch():
            # Part of this task's batch: committed (or rolled back) when the batch ends.
            yield self._conn
            return
        async with self._lock:
            db = self._conn
            try:
                # BEGIN inside the try: a task cancelled while awaiting it has still queued it.
                await db.execute("BEGIN IMMEDIATE")
                yield db
            except BaseException:
                # Shielded so a cancelled task cannot leave the transaction open; the worker
                # thread runs calls in order, so this lands after whatever was queued before.
                # (rollback() is a no-op when no transaction is open.)
                await asyncio.shield(db.rollback())
                raise
            await db.commit()
            self.commits += 1

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for reads: under the lock, or inside this task's batch (which then
        reads its own uncommitted writes)."""
        if self._in_batch():
            yield self._conn
            return
        async with self._lock:
            yield self._conn

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._reading() as db:
            return list(await db.execute_fetchall(sql, tuple(params)))

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        async with self._transaction() as db:
            # One statement for the check and the insert: each await is a trip to the
            # connection's thread, and a batch holds the lock through all of them.
            cur = await db.execute(
                _INSERT_INCIDENT,
                (
                    incident.id,
                    incident.rule,
                    incident.check,
                    incident.severity,
                    incident.summary,
                    incident.status.value,
                    incident.opened_at,
                    incident.resolved_at,
                    _dumps(incident.trigger),
                ),
            )
            if cur.rowcount == 0:
                raise ValueError(f"incident {incident.id!r} already exists")
            if incident.timeline:
                await db.executemany(
                    _INSERT_ENTRY, [_entry_params(incident.id, e) for e in incident.timeline]
                )

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        async with self._transaction() as db:
            cur = await db.execute(_APPEND_ENTRY, (*_entry_params(incident_id, entry), incident_id))
            if cur.rowcount == 0:
                raise KeyError(incident_id)

    async def resolve_incident(self, incident_id: str, resolved_at: float) -> None:
        async with self._transaction() as db:
            # Only an open incident: resolving twice keeps the first resolution time.
            cur = await db.execute(
                "UPDATE incidents SET status = ?, resolved_at = ? WHERE id = ? AND status = ?",
                (
                    IncidentStatus.RESOLVED.value,
                    resolved_at,
                    incident_id,
                    IncidentStatus.OPEN.value,
                ),
            )
            if cur.rowcount == 0:
                await self._require(db, incident_id)

    @staticmethod
    async def _require(db: aiosqlite.Connection, incident_id: str) -> None:
        if not await db.execute_fetchall("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)):
            raise KeyError(incident_id)

    async def get_incident(self, incident_id: str) -> Incident | None:
        async with self._reading() as db:
            # Both reads under the lock: no write can land between incident and timeline.
            rows = await db.execute_fetchall(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger"
                FROM incidents
                WHERE id = ?
                """,
                (incident_id,),
            )
            entries = await db.execute_fetchall(
                "SELECT ts, kind, message, data FROM timeline WHERE incident_id = ? ORDER BY id",
                (incident_id,),
            )
        row = next(iter(rows), None)
        return None if row is None else _incident(row, [_entry(e) for e in entries])

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first (by opened_at, then id), without timelines."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        # NULL parameters switch a filter off, so the statement text stays fixed.
        rows = await self._fetchall(
            """
            SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                   "trigger"
            FROM incidents
            WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR rule = ?2)
            ORDER BY opened_at DESC, id DESC
            LIMIT ?3
            """,
            (status.value if status is not None else None, rule, limit),
        )
        return [_incident(row) for row in rows]

    async def open_incidents(self) -> list[Incident]:
        """Every open incident with its timeline, oldest first (by opened_at, then id)."""
        async with self._reading() as db:
            rows = await db.execute_fetchall(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger"
                FROM incidents
                WHERE status = ?
                ORDER BY opened_at, id
                """,
                (IncidentStatus.OPEN.value,),
            )
            # One query for all timelines rather than one per incident.
            entries = await db.execute_fetchall(
                "SELECT t.incident_id, t.ts, t.kind, t.message, t.data FROM timeline t"
                " JOIN incidents i ON i.id = t.incident_id WHERE i.status = ? ORDER BY t.id",
                (IncidentStatus.OPEN.value,),
            )
        timelines: dict[str, list[TimelineEntry]] = {}
        for e in entries:
            timelines.setdefault(e["incident_id"], []).append(_entry(e))
        return [_incident(row, timelines.get(row["id"], [])) for row in rows]

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(self, incident_id: str, rule: str, remediation: str, ts: float) -> int:
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT INTO actions (incident_id, rule, remediation, ts, outcome)"
                " VALUES (?, ?, ?, ?, 'running')",
                (incident_id, rule, remediation, ts),
            )
            action_id = cur.lastrowid
        assert action_id is not None  # set by any successful INSERT
        return action_id

    async def end_action(self, action_id: int, outcome: str) -> None:
        if outcome == RUNNING:
            raise ValueError(f"action {action_id}: end it with its outcome, not {RUNNING!r}")
        async with self._transaction() as db:
            # Only a running action: ending twice keeps the first outcome, as resolving does.
            await db.execute(
                "UPDATE actions SET outcome = ? WHERE id = ? AND outcome = 'running'",
                (outcome, action_id),
            )
            async with db.execute("SELECT 1 FROM actions WHERE id = ?", (action_id,)) as cur:
                if await cur.fetchone() is None:
                    raise KeyError(action_id)

    async def running_actions(self) -> list[ActionRecord]:
        """Actions begun and never ended, oldest first (by begin time, then id)."""
        rows = await self._fetchall(
            "SELECT id, incident_id, rule, remediation, ts, outcome FROM actions"
            " WHERE outcome = 'running' ORDER BY ts, id"
        )
        return [_action(row) for row in rows]

    async def last_action(self, rule: str, remediation: str) -> float | None:
        # Any outcome, "running" included: an interrupted action may have acted.
        rows = await self._fetchall(
            "SELECT max(ts) FROM actions WHERE rule = ? AND remediation = ?", (rule, remediation)
        )
        ts: float | None = rows[0][0]
        return ts

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        # The excluded names travel as one JSON array parameter, and a NULL `only` switches
        # that filter off: no SQL built from strings.
        rows = await self._fetchall(
            "SELECT count(*) FROM actions WHERE ts >= ?1"
            " AND remediation NOT IN (SELECT value FROM json_each(?2))"
            " AND (?3 IS NULL OR remediation = ?3)",
            (since, json.dumps(sorted(exclude)), only),
        )
        return int(rows[0][0])

    # -- small JSON values -------------------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        rows = await self._fetchall(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return json.loads(rows[0][0]) if rows else None

    async def values(self, namespace: str) -> dict[str, Any]:
        rows = await self._fetchall(
            "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
        )
        return {key: json.loads(value) for key, value in rows}

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        """Insert or replace; None deletes. A value JSON cannot hold is a TypeError."""
        # Serialised before the transaction: a bad value fails without touching the file.
        text = None if value is None else _dumps(value)
        async with self._transaction() as db:
            if text is None:
                await db.execute(_DELETE_VALUE, (namespace, key))
            else:
                await db.execute(_PUT_VALUE, (namespace, key, text))

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        puts = [(namespace, k, _dumps(v)) for k, v in values.items() if v is not None]
        deletes = [(namespace, k) for k, v in values.items() if v is None]
        async with self._transaction() as db:
            # One statement each, whatever the number of keys.
            if puts:
                await db.executemany(_PUT_VALUE, puts)
            if deletes:
                await db.executemany(_DELETE_VALUE, deletes)

    # -- paging outbox -----------------------------------------------------------------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        async with self._transaction() as db:
            cur = await db.execute(
                "INSERT INTO outbox (incident_id, remediation, phase, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (incident_id, remediation, phase, ts, ts),
            )
            item_id = cur.lastrowid
        assert item_id is not None  # set by any successful INSERT
        return item_id

    async def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Unfinished items with next_at <= now, by next_at then id; limit < 0: ValueError."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        rows = await self._fetchall(
            """
            SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
            FROM outbox
            WHERE finished_at IS NULL AND next_at <= ?
            ORDER BY next_at, id
            LIMIT ?
            """,
            (now, limit),
        )
        return [_outbox_item(row) for row in rows]

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None:
        async with self._transaction() as db:
            # Only an unfinished item: a late retry must not make a finished one due again.
            await db.execute(
                "UPDATE outbox SET next_at = ?, attempts = ?, last_error = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (next_at, attempts, error, item_id),
            )
            await self._require_outbox(db, item_id)

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        # The protocol passes no time: finished_at is the wall clock, for whoever reads the
        # file. Nothing depends on it; prune goes by created_at.
        async with self._transaction() as db:
            # Only an unfinished item: finishing twice keeps the first outcome.
            await db.execute(
                "UPDATE outbox SET finished_at = ?, outcome = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (time.time(), outcome, item_id),
            )
            await self._require_outbox(db, item_id)

    @staticmethod
    async def _require_outbox(db: aiosqlite.Connection, item_id: int) -> None:
        async with db.execute("SELECT 1 FROM outbox WHERE id = ?", (item_id,)) as cur:
            if await cur.fetchone() is None:
                raise KeyError(item_id)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float) -> Pruned:
        """Delete history older than `before` (epoch seconds): resolved incidents resolved
        before it, with their timelines, ledger entries begun before it, and finished outbox
        items created before it (`Pruned` does not count those).

        Open incidents and unfinished outbox items are never pruned, however old. Anything at
        or after `before` stays, so cooldowns and `count_actions(since)` with `since >= before`
        are unaffected. Running actions begun before it go too, like any ledger entry.
        """
        async with self._transaction() as db:
            # Timelines go with their incident through ON DELETE CASCADE.
            cur = await db.execute(
                "DELETE FROM incidents WHERE status = ? AND resolved_at < ?",
                (IncidentStatus.RESOLVED.value, before),
            )
            incidents = cur.rowcount
            cur = await db.execute("DELETE FROM actions WHERE ts < ?", (before,))
            actions = cur.rowcount
            await db.execute(
                "DELETE FROM outbox WHERE finished_at IS NOT NULL AND created_at < ?", (before,)
            )
        return Pruned(incidents=incidents, actions=actions)
