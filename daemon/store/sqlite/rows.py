"""How the models map to the store's rows and back, and the statements that insert an
incident with its timeline (shared with bench/populate.py, which fills a store in bulk).

JSON columns hold compact text with unicode kept as is: the columns are TEXT, not ASCII.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.protocol import ActionRecord, OutboxItem

# Statements are spelled out whole, never assembled from strings.
INSERT_INCIDENT = """
    INSERT INTO incidents
        (id, rule, check_name, severity, summary, status, opened_at, resolved_at, "trigger",
         acknowledged_by, acknowledged_at, resolved_by)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
INSERT_ENTRY = "INSERT INTO timeline (incident_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- models to parameters ---------------------------------------------------------------------


def incident_params(incident: Incident) -> tuple[Any, ...]:
    """INSERT_INCIDENT's parameters (the timeline goes in with INSERT_ENTRY)."""
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
    """INSERT_ENTRY's parameters."""
    return (incident_id, e.ts, e.kind, e.message, dumps(e.data))


# -- rows to models ---------------------------------------------------------------------------


def incident(row: sqlite3.Row, timeline: list[TimelineEntry] | None = None) -> Incident:
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


def entry(row: sqlite3.Row) -> TimelineEntry:
    return TimelineEntry(
        ts=row["ts"], kind=row["kind"], message=row["message"], data=json.loads(row["data"])
    )


def action(row: sqlite3.Row) -> ActionRecord:
    return ActionRecord(
        id=row["id"],
        # NULL only on rows from schema version 1, which are never running.
        incident_id=row["incident_id"] or "",
        rule=row["rule"],
        remediation=row["remediation"],
        ts=row["ts"],
        outcome=row["outcome"],
    )


def outbox_item(row: sqlite3.Row) -> OutboxItem:
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
