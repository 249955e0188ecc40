"""The embedded store: one SQLite file in the daemon's state directory, through aiosqlite.

Every write is committed before its call returns, alone or as part of a `batch()` that
commits as one, so a restarted daemon remembers its open incidents, their timelines, the action
ledger (cooldowns, the global budget, and actions a crash interrupted), the small values
remediations keep, and the paging outbox.

Group commit: calls queue their statements, and one trip to the connection's thread runs
everything queued as one transaction (a savepoint per call or batch, so one that fails is
rolled back alone), then the queued reads. What is queued while a trip runs goes in the next
one, so concurrent writers share commits and a trip costs one thread hop, not one per
statement.

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
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.protocol import ActionRecord, OutboxItem, Pruned

log = structlog.get_logger(__name__)

T = TypeVar("T")
# What a call runs on the connection's thread.
Op = Callable[[sqlite3.Connection], T]

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


# -- on the connection's thread ----------------------------------------------------------------

_ROLLED_BACK = "the batch's transaction was rolled back; nothing of it is written"


def _apply(conn: sqlite3.Connection, ops: Sequence[Op[Any]]) -> Any:
    """Run `ops` inside the open transaction as one: all of them, or none and the error raised.
    Returns what the last one returned."""
    conn.execute("SAVEPOINT unit")
    try:
        result = None
        for op in ops:
            result = op(conn)
    except BaseException:
        if conn.in_transaction:  # else SQLite rolled the whole transaction back (e.g. disk full)
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
        raise
    conn.execute("RELEASE unit")
    return result


Outcome = tuple[Exception | None, Any]  # (the error, or None and the result)


def _commit_together(
    conn: sqlite3.Connection, units: Sequence[Sequence[Op[Any]]]
) -> tuple[list[Outcome], int]:
    """Each unit's ops in one transaction, a savepoint per unit: a unit that fails is rolled
    back alone and gets its error, the others are committed together. Returns each unit's
    outcome and how many transactions were committed."""
    outcomes: list[Outcome] = [(None, None)] * len(units)
    commits = 0
    todo = list(range(len(units)))
    while todo:
        applied: list[int] = []
        again: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for n, i in enumerate(todo):
                try:
                    outcomes[i] = (None, _apply(conn, units[i]))
                except Exception as exc:
                    outcomes[i] = (exc, None)
                    if not conn.in_transaction:
                        # SQLite rolled the transaction back: the units applied before this
                        # one go again in a new one, without it.
                        again, applied = applied + todo[n + 1 :], []
                        break
                else:
                    applied.append(i)
            if applied:
                conn.execute("COMMIT")
                commits += 1
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception as exc:
            # BEGIN or COMMIT failed: nothing of this transaction is written.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for i in todo:
                if outcomes[i][0] is None:
                    outcomes[i] = (exc, None)
            again = []
        todo = again
    return outcomes, commits


def _begin(ops: Sequence[Op[Any]], conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        _apply(conn, ops)
    except BaseException:
        # All or nothing, even if the block goes on after catching this: the rest of the
        # batch then fails too, its transaction being gone.
        _rollback(conn)
        raise


def _in_open_transaction(op: Op[T], conn: sqlite3.Connection) -> T:
    # Were it gone, the statement would run (and commit) on its own, outside the batch.
    if not conn.in_transaction:
        raise sqlite3.OperationalError(_ROLLED_BACK)
    result: T = _apply(conn, [op])
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


@dataclass(eq=False, slots=True)
class _Unit:
    """What one call (or one batch) queues for the next trip: its ops and where the outcome
    goes. A read runs after the trip's commit, so it sees every write queued before it."""

    ops: list[Op[Any]]
    read: bool = False
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False, slots=True)
class _Batch:
    owner: asyncio.Task[Any] | None
    ops: list[Op[Any]] = field(default_factory=list)  # queued when the block ends
    # Its transaction is open on the connection: its writes run at once (see `_go_eager`).
    eager: bool = False


class SqliteStore:
    """The `Store` protocol on one SQLite file; parent directories are created on `open()`.

    Beyond the protocol: unknown incident ids raise KeyError (append, resolve), a duplicate id
    raises ValueError (create), resolving twice keeps the first `resolved_at`. Ending an action
    with "running" is a ValueError; ending it twice keeps the first outcome. Unknown outbox ids
    raise KeyError; finishing twice keeps the first outcome, and rescheduling a finished item
    changes nothing (it is never due again).

    A call cancelled while its writes wait in the queue writes nothing; once its trip has
    begun, they are committed (or fail) with the others, as a cancelled COMMIT would be.

    Inside a batch, writes are queued when the block ends, so their errors (a duplicate id,
    an unknown one) are raised there. A read, or a write whose result it needs (an id), opens
    the batch's transaction instead: its writes so far and the rest then run at once, and the
    batch commits alone when it ends. The engine's batches do neither.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # Held by a batch for its whole block, and taken by any other call to queue its unit:
        # other tasks wait until the block ends, and nothing joins the queue meanwhile.
        self._gate = asyncio.Lock()
        self._batch: _Batch | None = None
        self._queue: list[_Unit] = []
        self._flusher: asyncio.Task[None] | None = None  # running while units are queued
        # Write transactions committed since open, for tests and diagnostics; counted on the
        # connection's thread right after each COMMIT.
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: no implicit BEGIN; transactions are explicit.
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
        """Waits for an open batch to end and commits everything queued, then closes."""
        async with self._gate:
            if self._db is None:
                return
            await self._idle()
            db, self._db = self._db, None
            try:
                # Recommended before closing a connection: keeps the query planner's stats fresh.
                await db.execute("PRAGMA optimize")
            finally:
                await db.close()
                await _thread_ended(db)

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
        self._require_open()
        assert self._db is not None
        return self._db

    def _require_open(self) -> None:
        if self._db is None:
            raise RuntimeError("SqliteStore is not open")

    async def _on_thread(self, fn: Op[T]) -> T:
        """Run `fn` on the connection's thread, after everything sent there before it."""
        db = self._conn
        # aiosqlite's own queue to its thread, which owns the sqlite3 connection.
        result: T = await db._execute(fn, db._conn)  # type: ignore[no-untyped-call]
        return result

    # -- group commit ------------------------------------------------------------------------

    def _enqueue(self, unit: _Unit) -> _Unit:
        self._queue.append(unit)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="sqlite group commit")
        return unit

    async def _submit(self, unit: _Unit) -> Any:
        """Queue a unit once no batch holds the store, and wait for its outcome."""
        async with self._gate:
            self._require_open()  # before anything is queued
            self._enqueue(unit)
        return await unit.future

    async def _flush(self) -> None:
        """While units are queued: a trip to the thread with all of them, then the next."""
        try:
            while self._queue:
                # A cancelled caller's future is cancelled: its unit is dropped, unwritten.
                units = [u for u in self._queue if not u.future.done()]
                self._queue = []
                writes = [u for u in units if not u.read]
                reads = [u for u in units if u.read]
                if not units:
                    continue
                try:
                    outcomes = await self._on_thread(partial(self._trip, writes, reads))
                except asyncio.CancelledError:
                    for unit in units:
                        unit.future.cancel()
                    raise
                except Exception as failed:  # the trip never ran, e.g. the connection is gone
                    outcomes = [(failed, None)] * len(units)
                for unit, (error, value) in zip([*writes, *reads], outcomes, strict=True):
                    if unit.future.done():  # its caller was cancelled meanwhile
                        continue
                    if error is None:
                        unit.future.set_result(value)
                    else:
                        unit.future.set_exception(error)
        finally:
            self._flusher = None
            for unit in self._queue:  # only if cancelled: nobody else will run them
                unit.future.cancel()
            self._queue = []

    def _trip(
        self, writes: list[_Unit], reads: list[_Unit], conn: sqlite3.Connection
    ) -> list[Outcome]:
        """On the thread: the writes committed together, then the reads."""
        outcomes: list[Outcome] = []
        if writes:
            outcomes, commits = _commit_together(conn, [u.ops for u in writes])
            self.commits += commits
        for unit in reads:
            try:
                outcomes.append((None, unit.ops[0](conn)))
            except Exception as exc:
                outcomes.append((exc, None))
        return outcomes

    async def _idle(self) -> None:
        """Until everything queued is done (the caller holds the gate: nothing new comes)."""
        while (flusher := self._flusher) is not None:
            await asyncio.wait([flusher])

    # -- batches -----------------------------------------------------------------------------

    def _own_batch(self) -> _Batch | None:
        batch = self._batch
        return batch if batch is not None and batch.owner is asyncio.current_task() else None

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        if self._own_batch() is not None:
            yield  # joins the enclosing batch, which commits or rolls back for both
            return
        async with self._gate:
            self._require_open()  # before the block runs
            # Only this task: one it spawns inherits nothing and waits for the gate.
            batch = self._batch = _Batch(asyncio.current_task())
            try:
                yield
            except BaseException:
                self._batch = None
                if batch.eager:
                    # Sent to the thread before the gate opens, and shielded: a cancelled task
                    # cannot leave the transaction open under the next trip.
                    await asyncio.shield(asyncio.ensure_future(self._on_thread(_rollback)))
                raise
            self._batch = None
            if batch.eager:
                await self._on_thread(self._commit_open)
                return
            if not batch.ops:
                return
            unit = self._enqueue(_Unit(batch.ops))
        # Outside the gate: other tasks queue their units meanwhile, for the next trip.
        await unit.future

    async def _go_eager(self, batch: _Batch) -> None:
        """Open the batch's transaction, with its writes so far: what it reads then sees them,
        and what it writes next runs at once (for the results, e.g. an id)."""
        if batch.eager:
            return
        await self._idle()  # no trip may run BEGIN under the batch's transaction
        ops, batch.ops = batch.ops, []
        batch.eager = True  # set first: cancelled during the trip, the exit rolls it back
        await self._on_thread(partial(_begin, ops))

    def _commit_open(self, conn: sqlite3.Connection) -> None:
        """On the thread: commit a batch's open transaction, or roll it back if that fails."""
        if not conn.in_transaction:
            raise sqlite3.OperationalError(_ROLLED_BACK)
        try:
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            raise
        self.commits += 1

    async def _write(self, op: Op[Any]) -> None:
        """Committed before this returns; inside a batch, committed with it."""
        batch = self._own_batch()
        if batch is None:
            await self._submit(_Unit([op]))
        elif batch.eager:
            await self._on_thread(partial(_in_open_transaction, op))
        else:
            batch.ops.append(op)

    async def _write_returning(self, op: Op[T]) -> T:
        """A write whose result the caller needs now (an id)."""
        batch = self._own_batch()
        if batch is None:
            result: T = await self._submit(_Unit([op]))
            return result
        await self._go_eager(batch)
        return await self._on_thread(partial(_in_open_transaction, op))

    async def _read(self, fn: Op[T]) -> T:
        """What is committed, after every write queued before; inside a batch, with its own
        writes."""
        batch = self._own_batch()
        if batch is None:
            result: T = await self._submit(_Unit([fn], read=True))
            return result
        if batch.ops:
            await self._go_eager(batch)
        if batch.eager:
            return await self._on_thread(fn)
        # Nothing of its own to see: read as anyone would (the batch holds the gate).
        result = await self._enqueue(_Unit([fn], read=True)).future
        return result

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        args = tuple(params)
        rows: list[sqlite3.Row] = await self._read(lambda c: c.execute(sql, args).fetchall())
        return rows

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        params = (
            incident.id,
            incident.rule,
            incident.check,
            incident.severity,
            incident.summary,
            incident.status.value,
            incident.opened_at,
            incident.resolved_at,
            _dumps(incident.trigger),
        )
        entries = [_entry_params(incident.id, e) for e in incident.timeline]

        def op(conn: sqlite3.Connection) -> None:
            # One statement for the check and the insert.
            if conn.execute(_INSERT_INCIDENT, params).rowcount == 0:
                raise ValueError(f"incident {incident.id!r} already exists")
            if entries:
                conn.executemany(_INSERT_ENTRY, entries)

        await self._write(op)

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        params = (*_entry_params(incident_id, entry), incident_id)

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(_APPEND_ENTRY, params).rowcount == 0:
                raise KeyError(incident_id)

        await self._write(op)

    async def resolve_incident(self, incident_id: str, resolved_at: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # Only an open incident: resolving twice keeps the first resolution time.
            cur = conn.execute(
                "UPDATE incidents SET status = ?, resolved_at = ? WHERE id = ? AND status = ?",
                (
                    IncidentStatus.RESOLVED.value,
                    resolved_at,
                    incident_id,
                    IncidentStatus.OPEN.value,
                ),
            )
            if cur.rowcount == 0 and (
                conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone()
                is None
            ):
                raise KeyError(incident_id)

        await self._write(op)

    async def get_incident(self, incident_id: str) -> Incident | None:
        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            # In one trip: no write of this store can land between incident and timeline.
            rows = conn.execute(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger"
                FROM incidents
                WHERE id = ?
                """,
                (incident_id,),
            ).fetchall()
            entries = conn.execute(
                "SELECT ts, kind, message, data FROM timeline WHERE incident_id = ? ORDER BY id",
                (incident_id,),
            ).fetchall()
            return rows, entries

        rows, entries = await self._read(read)
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

        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            rows = conn.execute(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger"
                FROM incidents
                WHERE status = ?
                ORDER BY opened_at, id
                """,
                (IncidentStatus.OPEN.value,),
            ).fetchall()
            # One query for all timelines rather than one per incident.
            entries = conn.execute(
                "SELECT t.incident_id, t.ts, t.kind, t.message, t.data FROM timeline t"
                " JOIN incidents i ON i.id = t.incident_id WHERE i.status = ? ORDER BY t.id",
                (IncidentStatus.OPEN.value,),
            ).fetchall()
            return rows, entries

        rows, entries = await self._read(read)
        timelines: dict[str, list[TimelineEntry]] = {}
        for e in entries:
            timelines.setdefault(e["incident_id"], []).append(_entry(e))
        return [_incident(row, timelines.get(row["id"], [])) for row in rows]

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(self, incident_id: str, rule: str, remediation: str, ts: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO actions (incident_id, rule, remediation, ts, outcome)"
                " VALUES (?, ?, ?, ?, 'running')",
                (incident_id, rule, remediation, ts),
            )
            assert cur.lastrowid is not None  # set by any successful INSERT
            return cur.lastrowid

        return await self._write_returning(op)

    async def end_action(self, action_id: int, outcome: str) -> None:
        if outcome == RUNNING:
            raise ValueError(f"action {action_id}: end it with its outcome, not {RUNNING!r}")

        def op(conn: sqlite3.Connection) -> None:
            # Only a running action: ending twice keeps the first outcome, as resolving does.
            conn.execute(
                "UPDATE actions SET outcome = ? WHERE id = ? AND outcome = 'running'",
                (outcome, action_id),
            )
            if conn.execute("SELECT 1 FROM actions WHERE id = ?", (action_id,)).fetchone() is None:
                raise KeyError(action_id)

        await self._write(op)

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
        await self.put_values(namespace, {key: value})

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        # Serialised here: a bad value fails at the call, before anything is queued.
        puts = [(namespace, k, _dumps(v)) for k, v in values.items() if v is not None]
        deletes = [(namespace, k) for k, v in values.items() if v is None]
        if not values:
            return  # nothing to write, nothing to wait for

        def op(conn: sqlite3.Connection) -> None:
            # One statement each, whatever the number of keys.
            if puts:
                conn.executemany(_PUT_VALUE, puts)
            if deletes:
                conn.executemany(_DELETE_VALUE, deletes)

        await self._write(op)

    # -- paging outbox -----------------------------------------------------------------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO outbox (incident_id, remediation, phase, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (incident_id, remediation, phase, ts, ts),
            )
            assert cur.lastrowid is not None  # set by any successful INSERT
            return cur.lastrowid

        return await self._write_returning(op)

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

    async def outbox_pending(self, incident_id: str) -> list[OutboxItem]:
        rows = await self._fetchall(
            """
            SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
            FROM outbox
            WHERE finished_at IS NULL AND incident_id = ?
            ORDER BY id
            """,
            (incident_id,),
        )
        return [_outbox_item(row) for row in rows]

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # Only an unfinished item: a late retry must not make a finished one due again.
            conn.execute(
                "UPDATE outbox SET next_at = ?, attempts = ?, last_error = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (next_at, attempts, error, item_id),
            )
            if conn.execute("SELECT 1 FROM outbox WHERE id = ?", (item_id,)).fetchone() is None:
                raise KeyError(item_id)

        await self._write(op)

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        # The protocol passes no time: finished_at is the wall clock, for whoever reads the
        # file. Nothing depends on it; prune goes by created_at.
        finished_at = time.time()

        def op(conn: sqlite3.Connection) -> None:
            # Only an unfinished item: finishing twice keeps the first outcome.
            conn.execute(
                "UPDATE outbox SET finished_at = ?, outcome = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (finished_at, outcome, item_id),
            )
            if conn.execute("SELECT 1 FROM outbox WHERE id = ?", (item_id,)).fetchone() is None:
                raise KeyError(item_id)

        await self._write(op)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float) -> Pruned:
        """Delete history older than `before` (epoch seconds): resolved incidents resolved
        before it, with their timelines, ledger entries begun before it, and finished outbox
        items created before it (`Pruned` does not count those).

        Open incidents and unfinished outbox items are never pruned, however old. Anything at
        or after `before` stays, so cooldowns and `count_actions(since)` with `since >= before`
        are unaffected. Running actions begun before it go too, like any ledger entry.
        """

        def op(conn: sqlite3.Connection) -> Pruned:
            # Timelines go with their incident through ON DELETE CASCADE.
            incidents = conn.execute(
                "DELETE FROM incidents WHERE status = ? AND resolved_at < ?",
                (IncidentStatus.RESOLVED.value, before),
            ).rowcount
            actions = conn.execute("DELETE FROM actions WHERE ts < ?", (before,)).rowcount
            conn.execute(
                "DELETE FROM outbox WHERE finished_at IS NOT NULL AND created_at < ?", (before,)
            )
            return Pruned(incidents=incidents, actions=actions)

        return await self._write_returning(op)


async def _thread_ended(db: aiosqlite.Connection) -> None:
    """aiosqlite's close returns just before its thread ends; once closed, the store has no
    thread left (a process that stops must not wait on one, nor a test see one)."""
    thread = getattr(db, "_thread", None)  # aiosqlite < 0.23 (pinned in pyproject)
    if isinstance(thread, threading.Thread) and thread.is_alive():
        await asyncio.to_thread(thread.join, 5.0)
