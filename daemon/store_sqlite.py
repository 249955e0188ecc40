"""The embedded store: one SQLite file in the daemon's state directory, through aiosqlite.

Every write is its own committed transaction, so a restarted daemon remembers its open
incidents, their timelines and the action ledger (cooldowns and the global budget).

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
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from daemon.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import Pruned

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
)

SCHEMA_VERSION = len(_MIGRATIONS)

# Statements are spelled out whole, never assembled from strings.
_INSERT_INCIDENT = """
    INSERT INTO incidents
        (id, rule, check_name, severity, summary, status, opened_at, resolved_at, "trigger")
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ENTRY = "INSERT INTO timeline (incident_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)"


def _dumps(value: dict[str, Any]) -> str:
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


def _entry_params(incident_id: str, e: TimelineEntry) -> tuple[str, float, str, str, str]:
    return (incident_id, e.ts, e.kind, e.message, _dumps(e.data))


class SqliteStore:
    """The `Store` protocol on one SQLite file; parent directories are created on `open()`.

    Beyond the protocol: unknown incident ids raise KeyError (append, resolve), a duplicate id
    raises ValueError (create), resolving twice keeps the first `resolved_at`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # One connection, shared by every task: the lock keeps transactions from interleaving.
        self._lock = asyncio.Lock()

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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
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

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, tuple(params)))

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        async with self._transaction() as db:
            if await self._exists(db, incident.id):
                raise ValueError(f"incident {incident.id!r} already exists")
            await db.execute(
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
            await db.executemany(
                _INSERT_ENTRY, [_entry_params(incident.id, e) for e in incident.timeline]
            )

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        async with self._transaction() as db:
            await self._require(db, incident_id)
            await db.execute(_INSERT_ENTRY, _entry_params(incident_id, entry))

    async def resolve_incident(self, incident_id: str, resolved_at: float) -> None:
        async with self._transaction() as db:
            await self._require(db, incident_id)
            # Only an open incident: resolving twice keeps the first resolution time.
            await db.execute(
                "UPDATE incidents SET status = ?, resolved_at = ? WHERE id = ? AND status = ?",
                (
                    IncidentStatus.RESOLVED.value,
                    resolved_at,
                    incident_id,
                    IncidentStatus.OPEN.value,
                ),
            )

    @staticmethod
    async def _exists(db: aiosqlite.Connection, incident_id: str) -> bool:
        async with db.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)) as cur:
            return await cur.fetchone() is not None

    async def _require(self, db: aiosqlite.Connection, incident_id: str) -> None:
        if not await self._exists(db, incident_id):
            raise KeyError(incident_id)

    async def get_incident(self, incident_id: str) -> Incident | None:
        async with self._lock:
            db = self._conn
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
        async with self._lock:
            db = self._conn
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

    async def record_action(self, rule: str, remediation: str, ts: float, outcome: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO actions (rule, remediation, ts, outcome) VALUES (?, ?, ?, ?)",
                (rule, remediation, ts, outcome),
            )

    async def last_action(self, rule: str, remediation: str) -> float | None:
        rows = await self._fetchall(
            "SELECT max(ts) FROM actions WHERE rule = ? AND remediation = ?", (rule, remediation)
        )
        ts: float | None = rows[0][0]
        return ts

    async def count_actions(self, since: float, *, exclude: frozenset[str] = frozenset()) -> int:
        # The excluded names travel as one JSON array parameter: no SQL built from strings.
        rows = await self._fetchall(
            "SELECT count(*) FROM actions WHERE ts >= ?"
            " AND remediation NOT IN (SELECT value FROM json_each(?))",
            (since, json.dumps(sorted(exclude))),
        )
        return int(rows[0][0])

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float) -> Pruned:
        """Delete history older than `before` (epoch seconds): resolved incidents resolved
        before it, with their timelines, and ledger entries recorded before it.

        Open incidents are never pruned, however old. Anything at or after `before` stays, so
        cooldowns and `count_actions(since)` with `since >= before` are unaffected.
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
        return Pruned(incidents=incidents, actions=actions)
