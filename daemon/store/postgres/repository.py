"""The store on PostgreSQL, for several replicas sharing one database: the SQL of the `Store`
protocol. How calls share transactions: group_commit.py; the schema: migrations.py; the
connections: connection.py.

Each call is one statement (sql.py), so it is atomic alone and costs one round trip. An
incident and its timeline are read by one statement too, so no write lands between them.

History does not prune itself: call `prune()` periodically (e.g. daily with now - 30 days).

Over 400 lines: one short method per call of the `Store` protocol, in the protocol's order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import records
from daemon.store.postgres import sql
from daemon.store.postgres.connection import Connection, Record, clean
from daemon.store.postgres.forwarded import PRUNE as PRUNE_FORWARDED
from daemon.store.postgres.group_commit import Op
from daemon.store.postgres.procedure_runs import PRUNE as PRUNE_PROCEDURE_RUNS
from daemon.store.postgres.procedure_runs import ProcedureRuns
from daemon.store.protocol import (
    ActionRecord,
    Claimed,
    Deploy,
    DeployEntry,
    Fenced,
    JobRun,
    Lease,
    OutboxItem,
    Pruned,
    StoreUnavailable,
)

RUNNING = "running"


def _incident(row: Record) -> Incident:
    """An incident row, with its timeline when the row carries it (sql.GET_INCIDENT)."""
    try:
        kinds = row["entry_kind"]
    except KeyError:
        return records.incident(row)
    timeline = [
        TimelineEntry(ts, kind, message, json.loads(data))
        for ts, kind, message, data in zip(
            row["entry_ts"] or (),
            kinds or (),
            row["entry_message"] or (),
            row["entry_data"] or (),
            strict=True,
        )
    ]
    return records.incident(row, timeline)


def _fetch(statement: str, *args: Any) -> Op[list[Record]]:
    """An op reading rows."""

    async def op(conn: Connection) -> list[Record]:
        return await conn.fetch(statement, *clean(args))

    return op


def _fetchval(statement: str, *args: Any) -> Op[Any]:
    """An op reading (or writing and returning) one value."""

    async def op(conn: Connection) -> Any:
        return await conn.fetchval(statement, *clean(args))

    return op


class PostgresStore(ProcedureRuns):
    """The `Store` protocol on a PostgreSQL database (its own: not the application's, so that
    runbookd still sees and acts when the application's database is down).

    Beyond the protocol, as SqliteStore: unknown incident ids raise KeyError (append,
    resolve), a duplicate id raises ValueError (create), resolving twice keeps the first
    `resolved_at`. Ending an action with "running" is a ValueError; ending it twice keeps the
    first outcome. Unknown outbox ids raise KeyError; finishing twice keeps the first outcome,
    and rescheduling a finished item changes nothing. Text cannot hold NUL in PostgreSQL: it
    is stored as U+FFFD. Batches and cancellation: `GroupCommit`.
    """

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        entries = incident.timeline
        created = _fetchval(
            sql.CREATE_INCIDENT,
            *records.incident_params(incident),
            [e.ts for e in entries],
            [e.kind for e in entries],
            [e.message for e in entries],
            [records.dumps(e.data) for e in entries],
        )

        async def op(conn: Connection) -> None:
            if not await created(conn):
                raise ValueError(f"incident {incident.id!r} already exists")

        await self._write(op)

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        args = clean(records.entry_params(incident_id, entry))

        async def op(conn: Connection) -> None:
            if await conn.execute(sql.APPEND_ENTRY, *args) == "INSERT 0 0":
                raise KeyError(incident_id)

        await self._write(op)

    async def resolve_incident(
        self, incident_id: str, resolved_at: float, *, by: str | None = None
    ) -> None:
        await self._write(
            _checked(_fetchval(sql.RESOLVE, incident_id, resolved_at, by), incident_id)
        )

    async def acknowledge_incident(self, incident_id: str, by: str, at: float) -> None:
        # Only the first acknowledgement counts: a second changes nothing.
        await self._write(
            _fetchval(
                "UPDATE incidents SET acknowledged_by = $2, acknowledged_at = $3"
                " WHERE id = $1 AND acknowledged_by IS NULL",
                incident_id,
                by,
                at,
            )
        )

    async def get_incident(self, incident_id: str) -> Incident | None:
        found = await self._read(_fetch(sql.GET_INCIDENT, incident_id))
        return _incident(found[0]) if found else None

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first (by opened_at, then id), without timelines."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._read(
            _fetch(
                sql.LIST_INCIDENTS,
                status.value if status is not None else None,
                rule,
                limit,
            )
        )
        return [records.incident(row) for row in found]

    async def open_incidents(self) -> list[Incident]:
        """Every open incident with its timeline, oldest first (by opened_at, then id)."""
        found = await self._read(_fetch(sql.OPEN_INCIDENTS))
        return [_incident(row) for row in found]

    async def incident_entries(
        self, incident_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[TimelineEntry]]:
        if not incident_ids or not kinds:
            return {}
        args = (list(incident_ids), sorted(kinds))
        found: dict[str, list[TimelineEntry]] = {}
        for row in await self._read(_fetch(sql.INCIDENT_ENTRIES, *args)):
            found.setdefault(row["incident_id"], []).append(records.entry(row))
        return found

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(
        self, incident_id: str, rule: str, remediation: str, ts: float, claim: str | None = None
    ) -> int:
        action_id: int | None = await self._write_returning(
            _fetchval(sql.BEGIN_ACTION, incident_id, rule, remediation, ts, claim)
        )
        if action_id is None:
            raise Claimed(f"{incident_id}: {claim} was claimed already")
        return action_id

    async def end_action(self, action_id: int, outcome: str) -> None:
        if outcome == RUNNING:
            raise ValueError(f"action {action_id}: end it with its outcome, not {RUNNING!r}")
        await self._write(_checked(_fetchval(sql.END_ACTION, action_id, outcome), action_id))

    async def running_actions(self) -> list[ActionRecord]:
        """Actions begun and never ended, oldest first (by begin time, then id)."""
        found = await self._read(
            _fetch(
                "SELECT id, incident_id, rule, remediation, ts, outcome FROM actions"
                " WHERE outcome = 'running' ORDER BY ts, id"
            )
        )
        return [records.action(row) for row in found]

    async def last_action(self, rule: str, remediation: str) -> float | None:
        # Any outcome, "running" included: an interrupted action may have acted.
        ts: float | None = await self._read(
            _fetchval(
                "SELECT max(ts) FROM actions WHERE rule = $1 AND remediation = $2",
                rule,
                remediation,
            )
        )
        return ts

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        count: int = await self._read(
            _fetchval(
                "SELECT count(*) FROM actions WHERE ts >= $1 AND remediation <> ALL ($2::text[])"
                " AND ($3::text IS NULL OR remediation = $3)",
                since,
                sorted(exclude),
                only,
            )
        )
        return count

    # -- small JSON values -------------------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        found = await self._read(
            _fetchval("SELECT value FROM kv WHERE namespace = $1 AND key = $2", namespace, key)
        )
        return json.loads(found) if found is not None else None

    async def values(self, namespace: str) -> dict[str, Any]:
        found = await self._read(
            _fetch("SELECT key, value FROM kv WHERE namespace = $1 ORDER BY key", namespace)
        )
        return {row["key"]: json.loads(row["value"]) for row in found}

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        """Insert or replace; None deletes. A value JSON cannot hold is a TypeError."""
        await self.put_values(namespace, {key: value})

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        # Serialised here: a bad value fails at the call, before anything is queued.
        puts = {k: records.dumps(v) for k, v in values.items() if v is not None}
        deletes = [k for k, v in values.items() if v is None]
        if not values:
            return  # nothing to write, nothing to wait for
        await self._write(
            _fetchval(sql.PUT_VALUES, namespace, deletes, list(puts), list(puts.values()))
        )

    # -- paging outbox -----------------------------------------------------------------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        item_id: int = await self._write_returning(
            _fetchval(
                "INSERT INTO outbox (incident_id, remediation, phase, created_at, next_at)"
                " VALUES ($1, $2, $3, $4, $4) RETURNING id",
                incident_id,
                remediation,
                phase,
                ts,
            )
        )
        return item_id

    async def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Unfinished items with next_at <= now, by next_at then id; limit < 0: ValueError."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._read(
            _fetch(
                sql.OUTBOX_DUE,
                now,
                limit,
            )
        )
        return [records.outbox_item(row) for row in found]

    async def outbox_pending(self, incident_id: str) -> list[OutboxItem]:
        found = await self._read(
            _fetch(
                sql.OUTBOX_PENDING,
                incident_id,
            )
        )
        return [records.outbox_item(row) for row in found]

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None:
        op = _fetchval(sql.RESCHEDULE, item_id, next_at, attempts, error)
        await self._write(_checked(op, item_id))

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        # The protocol passes no time: finished_at is the wall clock, for whoever reads the
        # table. Nothing depends on it; prune goes by created_at.
        await self._write(_checked(_fetchval(sql.FINISH, item_id, time.time(), outcome), item_id))

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float) -> Pruned:
        """Delete history older than `before` (epoch seconds), as SqliteStore.prune does:
        resolved incidents resolved before it, with their timelines, ledger entries begun
        before it, finished outbox items created before it (not counted) and forwarded requests
        done with. Open incidents and unfinished outbox items are never pruned."""

        async def op(conn: Connection) -> Pruned:
            row = (await conn.fetch(sql.PRUNE, before))[0]
            await conn.execute(PRUNE_FORWARDED, before)
            await conn.execute(PRUNE_PROCEDURE_RUNS, before)
            return Pruned(incidents=row[0], actions=row[1], job_runs=row[2], deploys=row[3])

        pruned: Pruned = await self._write_returning(op)
        return pruned

    # -- job runs ----------------------------------------------------------------------------

    async def add_job_run(
        self, job: str, trigger: str, scheduled_at: float, started_at: float | None
    ) -> int:
        op = _fetchval(sql.ADD_JOB_RUN, job, trigger, scheduled_at, started_at)
        run_id: int = await self._write_returning(op)
        return run_id

    async def finish_job_run(
        self, run_id: int, ended_at: float, outcome: str, detail: str, data: Mapping[str, Any]
    ) -> None:
        op = _fetchval(
            sql.FINISH_JOB_RUN, run_id, ended_at, outcome, detail, records.dumps(dict(data))
        )
        await self._write(_checked(op, run_id))

    async def job_runs(self, job: str, limit: int = 20) -> list[JobRun]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return [records.job_run(r) for r in await self._read(_fetch(sql.JOB_RUNS, job, limit))]

    async def latest_job_runs(self, outcome: str | None = None) -> dict[str, JobRun]:
        found = await self._read(_fetch(sql.LATEST_JOB_RUNS, outcome))
        return {row["job"]: records.job_run(row) for row in found}

    async def unfinished_job_runs(self) -> list[JobRun]:
        return [records.job_run(r) for r in await self._read(_fetch(sql.UNFINISHED_JOB_RUNS))]

    # -- deploys -----------------------------------------------------------------------------

    async def create_deploy(self, deploy: Deploy) -> None:
        entries = deploy.timeline
        created = _fetchval(
            sql.CREATE_DEPLOY,
            *records.deploy_params(deploy),
            [e.ts for e in entries],
            [str(e.kind) for e in entries],
            [e.message for e in entries],
            [records.dumps(e.data) for e in entries],
        )

        async def op(conn: Connection) -> None:
            if not await created(conn):
                raise ValueError(f"deploy {deploy.id!r} already exists")

        await self._write(op)

    async def append_deploy_timeline(self, deploy_id: str, entry: DeployEntry) -> None:
        args = clean(records.deploy_entry_params(deploy_id, entry))

        async def op(conn: Connection) -> None:
            if await conn.execute(sql.APPEND_DEPLOY_ENTRY, *args) == "INSERT 0 0":
                raise KeyError(deploy_id)

        await self._write(op)

    async def update_deploy(
        self,
        deploy_id: str,
        *,
        status: str,
        ended_at: float | None = None,
        incident: str | None = None,
    ) -> None:
        op = _fetchval(sql.UPDATE_DEPLOY, deploy_id, status, ended_at, incident)
        await self._write(_checked(op, deploy_id))

    async def get_deploy(self, deploy_id: str) -> Deploy | None:
        found = await self._read(_fetch(sql.GET_DEPLOY, deploy_id))
        if not found:
            return None
        row = found[0]
        columns = ("entry_ts", "entry_kind", "entry_message", "entry_data")
        timeline = [
            DeployEntry(ts, kind, message, json.loads(data))
            for ts, kind, message, data in zip(*(row[c] or [] for c in columns), strict=True)
        ]
        return records.deploy(row, timeline)

    async def list_deploys(self, *, status: str | None = None, limit: int = 100) -> list[Deploy]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._read(_fetch(sql.LIST_DEPLOYS, status, limit))
        return [records.deploy(row) for row in found]

    async def deploy_entries(
        self, deploy_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[DeployEntry]]:
        if not deploy_ids or not kinds:
            return {}
        rows = await self._read(_fetch(sql.DEPLOY_ENTRIES, list(deploy_ids), sorted(kinds)))
        found: dict[str, list[DeployEntry]] = {}
        for row in rows:
            found.setdefault(row["deploy_id"], []).append(records.deploy_entry(row))
        return found

    # -- the leader's lease ------------------------------------------------------------------

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        found = await self._write_returning(_fetch(sql.CLAIM_LEASE, holder, ttl))
        if not found:  # a claim racing another replica's first one: ask again next time
            raise StoreUnavailable("the lease is being claimed by another replica")
        row = found[0]
        return Lease(row["holder"], row["epoch"], row["remaining"])

    async def release_lease(self, holder: str) -> None:
        await self._write(_fetchval(sql.RELEASE_LEASE, holder))

    async def check_epoch(self, holder: str, epoch: int) -> None:
        # At once, also inside a batch (its transaction then holds the row until it ends).
        if not await self._write_returning(_fetchval(sql.CHECK_EPOCH, holder, epoch)):
            raise Fenced(f"{holder} no longer holds the lease with epoch {epoch}")


def _checked(op: Op[Any], key: object) -> Op[None]:
    """`op`, raising KeyError(key) when it answers that its row does not exist."""

    async def checked(conn: Connection) -> None:
        if not await op(conn):
            raise KeyError(key)

    return checked
