"""The embedded store: one SQLite file in the daemon's state directory, through the standard
library's sqlite3 on a thread of its own (daemon/store/sqlite/executor.py).

Every write is committed before its call returns, alone or as part of a `batch()` that
commits as one, so a restarted daemon remembers its open incidents, their timelines, the action
ledger (cooldowns, the global budget, and actions a crash interrupted), the small values
remediations keep, and the paging outbox. How calls share transactions: group_commit.py; the
schema: migrations.py; rows to models and back: rows.py. This module is the SQL.

History does not prune itself: call `prune()` periodically (e.g. daily with now - 30 days).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.protocol import ActionRecord, Claimed, OutboxItem, Pruned
from daemon.store.sqlite import rows
from daemon.store.sqlite.deploys import Deploys, prune_deploys
from daemon.store.sqlite.forwarded import ForwardedRequests, prune_forwarded
from daemon.store.sqlite.job_runs import JobRuns, prune_job_runs
from daemon.store.sqlite.lease import Leases
from daemon.store.sqlite.procedure_runs import ProcedureRuns, prune_procedure_runs

# Inserts nothing for an unknown incident, which the row count then tells.
_APPEND_ENTRY = """
    INSERT INTO timeline (incident_id, ts, kind, message, data)
    SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM incidents WHERE id = ?)
"""

# The ids and kinds as JSON arrays: one statement whatever their number.
_SELECT_ENTRIES = """
    SELECT incident_id, ts, kind, message, data FROM timeline
    WHERE incident_id IN (SELECT value FROM json_each(?1))
      AND kind IN (SELECT value FROM json_each(?2))
    ORDER BY incident_id, id
"""

_PUT_VALUE = (
    "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"
)
_DELETE_VALUE = "DELETE FROM kv WHERE namespace = ? AND key = ?"

# The outcome of a begun, not yet ended action. Spelled as a literal in the SQL below too, so
# the planner can use the partial index `actions_running`.
RUNNING = "running"


class SqliteStore(JobRuns, Leases, Deploys, ForwardedRequests, ProcedureRuns):
    """The `Store` protocol on one SQLite file; parent directories are created on `open()`.

    Beyond the protocol: unknown incident ids raise KeyError (append, resolve), a duplicate id
    raises ValueError (create), resolving twice keeps the first `resolved_at`. Ending an action
    with "running" is a ValueError; ending it twice keeps the first outcome. Unknown outbox ids
    raise KeyError; finishing twice keeps the first outcome, and rescheduling a finished item
    changes nothing (it is never due again). Batches and cancellation: `GroupCommit`.
    """

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        params = rows.incident_params(incident)
        entries = [rows.entry_params(incident.id, e) for e in incident.timeline]

        def op(conn: sqlite3.Connection) -> None:
            # One statement for the check and the insert.
            if conn.execute(rows.INSERT_INCIDENT, params).rowcount == 0:
                raise ValueError(f"incident {incident.id!r} already exists")
            if entries:
                conn.executemany(rows.INSERT_ENTRY, entries)

        await self._write(op)

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        params = (*rows.entry_params(incident_id, entry), incident_id)

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(_APPEND_ENTRY, params).rowcount == 0:
                raise KeyError(incident_id)

        await self._write(op)

    async def resolve_incident(
        self, incident_id: str, resolved_at: float, *, by: str | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # Only an open incident: resolving twice keeps the first resolution time.
            cur = conn.execute(
                "UPDATE incidents SET status = ?, resolved_at = ?, resolved_by = ?"
                " WHERE id = ? AND status = ?",
                (
                    IncidentStatus.RESOLVED.value,
                    resolved_at,
                    by,
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

    async def acknowledge_incident(self, incident_id: str, by: str, at: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # Only the first acknowledgement counts: a second changes nothing.
            conn.execute(
                "UPDATE incidents SET acknowledged_by = ?, acknowledged_at = ?"
                " WHERE id = ? AND acknowledged_by IS NULL",
                (by, at, incident_id),
            )

        await self._write(op)

    async def get_incident(self, incident_id: str) -> Incident | None:
        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            # In one trip: no write of this store can land between incident and timeline.
            found = conn.execute(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger", acknowledged_by, acknowledged_at, resolved_by
                FROM incidents
                WHERE id = ?
                """,
                (incident_id,),
            ).fetchall()
            entries = conn.execute(
                "SELECT ts, kind, message, data FROM timeline WHERE incident_id = ? ORDER BY id",
                (incident_id,),
            ).fetchall()
            return found, entries

        found, entries = await self._read(read)
        row = next(iter(found), None)
        return None if row is None else rows.incident(row, [rows.entry(e) for e in entries])

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first (by opened_at, then id), without timelines."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        # NULL parameters switch a filter off, so the statement text stays fixed.
        found = await self._fetchall(
            """
            SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                   "trigger", acknowledged_by, acknowledged_at, resolved_by
            FROM incidents
            WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR rule = ?2)
            ORDER BY opened_at DESC, id DESC
            LIMIT ?3
            """,
            (status.value if status is not None else None, rule, limit),
        )
        return [rows.incident(row) for row in found]

    async def open_incidents(self) -> list[Incident]:
        """Every open incident with its timeline, oldest first (by opened_at, then id)."""

        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            found = conn.execute(
                """
                SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
                       "trigger", acknowledged_by, acknowledged_at, resolved_by
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
            return found, entries

        found, entries = await self._read(read)
        timelines: dict[str, list[TimelineEntry]] = {}
        for e in entries:
            timelines.setdefault(e["incident_id"], []).append(rows.entry(e))
        return [rows.incident(row, timelines.get(row["id"], [])) for row in found]

    async def incident_entries(
        self, incident_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[TimelineEntry]]:
        if not incident_ids or not kinds:
            return {}
        params = (json.dumps(list(incident_ids)), json.dumps(sorted(kinds)))
        found: dict[str, list[TimelineEntry]] = {}
        for row in await self._fetchall(_SELECT_ENTRIES, params):
            found.setdefault(row["incident_id"], []).append(rows.entry(row))
        return found

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(
        self, incident_id: str, rule: str, remediation: str, ts: float, claim: str | None = None
    ) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found = conn.execute(
                "INSERT INTO actions (incident_id, rule, remediation, ts, outcome, claim)"
                " VALUES (?, ?, ?, ?, 'running', ?)"
                " ON CONFLICT (incident_id, claim) WHERE claim IS NOT NULL DO NOTHING"
                " RETURNING id",
                (incident_id, rule, remediation, ts, claim),
            ).fetchone()
            if found is None:
                raise Claimed(f"{incident_id}: {claim} was claimed already")
            return int(found[0])

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
        found = await self._fetchall(
            "SELECT id, incident_id, rule, remediation, ts, outcome FROM actions"
            " WHERE outcome = 'running' ORDER BY ts, id"
        )
        return [rows.action(row) for row in found]

    async def last_action(self, rule: str, remediation: str) -> float | None:
        # Any outcome, "running" included: an interrupted action may have acted.
        found = await self._fetchall(
            "SELECT max(ts) FROM actions WHERE rule = ? AND remediation = ?", (rule, remediation)
        )
        ts: float | None = found[0][0]
        return ts

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        # The excluded names travel as one JSON array parameter, and a NULL `only` switches
        # that filter off: no SQL built from strings.
        found = await self._fetchall(
            "SELECT count(*) FROM actions WHERE ts >= ?1"
            " AND remediation NOT IN (SELECT value FROM json_each(?2))"
            " AND (?3 IS NULL OR remediation = ?3)",
            (since, json.dumps(sorted(exclude)), only),
        )
        return int(found[0][0])

    # -- small JSON values -------------------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        found = await self._fetchall(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return json.loads(found[0][0]) if found else None

    async def values(self, namespace: str) -> dict[str, Any]:
        found = await self._fetchall(
            "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
        )
        return {key: json.loads(value) for key, value in found}

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        """Insert or replace; None deletes. A value JSON cannot hold is a TypeError."""
        await self.put_values(namespace, {key: value})

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        # Serialised here: a bad value fails at the call, before anything is queued.
        puts = [(namespace, k, rows.dumps(v)) for k, v in values.items() if v is not None]
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
        found = await self._fetchall(
            """
            SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
            FROM outbox
            WHERE finished_at IS NULL AND next_at <= ?
            ORDER BY next_at, id
            LIMIT ?
            """,
            (now, limit),
        )
        return [rows.outbox_item(row) for row in found]

    async def outbox_pending(self, incident_id: str) -> list[OutboxItem]:
        found = await self._fetchall(
            """
            SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
            FROM outbox
            WHERE finished_at IS NULL AND incident_id = ?
            ORDER BY id
            """,
            (incident_id,),
        )
        return [rows.outbox_item(row) for row in found]

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
        before it, with their timelines, ledger entries begun before it, finished outbox
        items created before it (`Pruned` does not count those), finished job runs that
        ended before it, except each job's newest, deploys that ended before it, and forwarded
        requests received before it that were answered or never taken.

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
            job_runs = prune_job_runs(conn, before)
            deploys = prune_deploys(conn, before)
            prune_forwarded(conn, before)
            prune_procedure_runs(conn, before)
            return Pruned(incidents, actions, job_runs, deploys)

        return await self._write_returning(op)
