"""How the models map to a store's rows and back, for every backend.

JSON columns hold compact text with unicode kept as is, so what comes back is exactly what
went in (key order, big integers, float digits), whatever the database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.protocol import ActionRecord, Deploy, DeployEntry, JobRun, OutboxItem


class Row(Protocol):
    """A result row read by column name: sqlite3.Row and asyncpg's Record both are."""

    def __getitem__(self, key: str, /) -> Any: ...


# One encoder for every call: json.dumps with options builds a new one each time.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON text; a value JSON cannot hold is a TypeError."""
    return _COMPACT.encode(value)


# -- models to parameters ---------------------------------------------------------------------


def incident_params(incident: Incident) -> tuple[Any, ...]:
    """An incident's columns in the order of the stores' INSERT statements (the timeline goes
    in apart): id, rule, check_name, severity, summary, status, opened_at, resolved_at,
    trigger, acknowledged_by, acknowledged_at, resolved_by."""
    return (
        incident.id,
        incident.rule,
        incident.check,
        incident.severity,
        incident.summary,
        incident.status.value,
        incident.opened_at,
        incident.resolved_at,
        dumps(incident.trigger),
        incident.acknowledged_by,
        incident.acknowledged_at,
        incident.resolved_by,
    )


def entry_params(incident_id: str, e: TimelineEntry) -> tuple[str, float, str, str, str]:
    """A timeline row: incident_id, ts, kind, message, data."""
    return (incident_id, e.ts, e.kind, e.message, dumps(e.data))


# -- rows to models ---------------------------------------------------------------------------


def incident(row: Row, timeline: list[TimelineEntry] | None = None) -> Incident:
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
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        resolved_by=row["resolved_by"],
    )


def entry(row: Row) -> TimelineEntry:
    return TimelineEntry(
        ts=row["ts"], kind=row["kind"], message=row["message"], data=json.loads(row["data"])
    )


def action(row: Row) -> ActionRecord:
    return ActionRecord(
        id=row["id"],
        # NULL only on SQLite rows from schema version 1, which are never running.
        incident_id=row["incident_id"] or "",
        rule=row["rule"],
        remediation=row["remediation"],
        ts=row["ts"],
        outcome=row["outcome"],
    )


def outbox_item(row: Row) -> OutboxItem:
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


def job_run(row: Row) -> JobRun:
    return JobRun(
        id=row["id"],
        job=row["job"],
        trigger=row["trigger"],
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=row["outcome"],
        detail=row["detail"],
        data=json.loads(row["data"]),
    )


def deploy_params(d: Deploy) -> tuple[Any, ...]:
    return (
        d.id,
        d.version,
        d.environment,
        d.kind,
        d.source,
        d.started_at,
        d.commit,
        d.by,
        d.previous,
        dumps(d.baseline),
        dumps(d.data),
        d.status,
        d.ended_at,
        d.incident,
    )


def deploy_entry_params(deploy_id: str, e: DeployEntry) -> tuple[str, float, str, str, str]:
    return (deploy_id, e.ts, str(e.kind), e.message, dumps(e.data))


def deploy(row: Row, timeline: list[DeployEntry] | None = None) -> Deploy:
    return Deploy(
        id=row["id"],
        version=row["version"],
        environment=row["environment"],
        kind=row["kind"],
        source=row["source"],
        started_at=row["started_at"],
        commit=row["commit_id"],
        by=row["deployed_by"],
        previous=row["previous"],
        baseline=json.loads(row["baseline"]),
        data=json.loads(row["data"]),
        status=row["status"],
        ended_at=row["ended_at"],
        incident=row["incident"],
        timeline=timeline if timeline is not None else [],
    )


def deploy_entry(row: Row) -> DeployEntry:
    return DeployEntry(row["ts"], row["kind"], row["message"], json.loads(row["data"]))


def procedure_run_params(run: Mapping[str, Any]) -> tuple[Any, ...]:
    """A procedure run's row: the columns a listing filters and orders by, then the document."""
    columns = (run["id"], run["procedure"], run["status"], run["started_at"], run["ended_at"])
    return (*columns, dumps(dict(run)))
