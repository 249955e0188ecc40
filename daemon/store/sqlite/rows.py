"""The statements that insert an incident with its timeline into SQLite (shared with
bench/populate.py, which fills a store in bulk), beside the row mapping every backend shares
(daemon/store/records.py), re-exported here for the SQLite store's own use.
"""

from __future__ import annotations

from daemon.store.records import (
    action,
    dumps,
    entry,
    entry_params,
    incident,
    incident_params,
    outbox_item,
)

__all__ = [
    "INSERT_ENTRY",
    "INSERT_INCIDENT",
    "action",
    "dumps",
    "entry",
    "entry_params",
    "incident",
    "incident_params",
    "outbox_item",
]

# Statements are spelled out whole, never assembled from strings.
INSERT_INCIDENT = """
    INSERT INTO incidents
        (id, rule, check_name, severity, summary, status, opened_at, resolved_at, "trigger",
         acknowledged_by, acknowledged_at, resolved_by)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
INSERT_ENTRY = "INSERT INTO timeline (incident_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)"
