"""The store's schema, versioned with SQLite's `PRAGMA user_version`.

`MIGRATIONS[n]` takes version n to n + 1. Append a migration to change the schema; never edit
a released one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # 2 -> 3: acknowledgement as state of the incident, no longer only a timeline entry;
    # incidents acknowledged before take it from their first "acknowledged" entry.
    (
        "ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT",
        "ALTER TABLE incidents ADD COLUMN acknowledged_at REAL",
        """
        UPDATE incidents SET
            acknowledged_by = (
                SELECT coalesce(json_extract(t.data, '$.by'), '') FROM timeline t
                WHERE t.incident_id = incidents.id AND t.kind = 'acknowledged'
                ORDER BY t.id LIMIT 1
            ),
            acknowledged_at = (
                SELECT t.ts FROM timeline t
                WHERE t.incident_id = incidents.id AND t.kind = 'acknowledged'
                ORDER BY t.id LIMIT 1
            )
        """,
    ),
    # 3 -> 4: who closed an incident by hand, as state (verification reads it); incidents
    # closed before take it from their "resolved" entry.
    (
        "ALTER TABLE incidents ADD COLUMN resolved_by TEXT",
        """
        UPDATE incidents SET resolved_by = (
            SELECT json_extract(t.data, '$.by') FROM timeline t
            WHERE t.incident_id = incidents.id AND t.kind = 'resolved'
            ORDER BY t.id LIMIT 1
        )
        WHERE status = 'resolved'
        """,
    ),
    # 4 -> 5: the runs of scheduled jobs.
    (
        """
        CREATE TABLE job_runs (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            job          TEXT NOT NULL,
            trigger      TEXT NOT NULL,
            scheduled_at REAL NOT NULL,
            started_at   REAL,
            ended_at     REAL,
            outcome      TEXT,
            detail       TEXT NOT NULL DEFAULT '',
            data         TEXT NOT NULL DEFAULT '{}',
            CHECK ((ended_at IS NULL) = (outcome IS NULL))
        )
        """,
        "CREATE INDEX job_runs_job ON job_runs (job, id)",
        "CREATE INDEX job_runs_unfinished ON job_runs (id) WHERE outcome IS NULL",
    ),
    # 5 -> 6: the leader's lease with its fencing epoch.
    (
        """
        CREATE TABLE lease (
            name       TEXT PRIMARY KEY,
            holder     TEXT NOT NULL,
            epoch      INTEGER NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 6 -> 7: deploys and their timelines. `commit` and `by` are SQL keywords, hence the
    # column names.
    (
        """
        CREATE TABLE deploys (
            id          TEXT PRIMARY KEY,
            version     TEXT NOT NULL,
            environment TEXT NOT NULL,
            kind        TEXT NOT NULL,
            source      TEXT NOT NULL,
            started_at  REAL NOT NULL,
            commit_id   TEXT,
            deployed_by TEXT,
            previous    TEXT,
            baseline    TEXT NOT NULL DEFAULT '{}',
            data        TEXT NOT NULL DEFAULT '{}',
            status      TEXT NOT NULL,
            ended_at    REAL,
            incident    TEXT
        )
        """,
        "CREATE INDEX deploys_started ON deploys (started_at, id)",
        "CREATE INDEX deploys_status ON deploys (status, started_at)",
        """
        CREATE TABLE deploy_timeline (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            deploy_id   TEXT NOT NULL REFERENCES deploys (id) ON DELETE CASCADE,
            ts          REAL NOT NULL,
            kind        TEXT NOT NULL,
            message     TEXT NOT NULL,
            data        TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX deploy_timeline_deploy ON deploy_timeline (deploy_id, id)",
    ),
    # 7 -> 8: requests a standby leaves for the leader (the same table on every backend), each
    # action's claim (its step, at most once per incident), and procedure runs.
    (
        "ALTER TABLE actions ADD COLUMN claim TEXT",
        "CREATE UNIQUE INDEX actions_claim ON actions (incident_id, claim) WHERE claim IS NOT NULL",
        """
        CREATE TABLE forwarded (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            operation   TEXT NOT NULL,
            args        TEXT NOT NULL,
            received_at REAL NOT NULL,
            taken       INTEGER NOT NULL DEFAULT 0,
            answer      TEXT
        )
        """,
        "CREATE INDEX forwarded_waiting ON forwarded (id) WHERE NOT taken",
        """
        CREATE TABLE procedure_runs (
            id          TEXT PRIMARY KEY,
            procedure   TEXT NOT NULL,
            status      TEXT NOT NULL,
            started_at  REAL NOT NULL,
            ended_at    REAL,
            doc         TEXT NOT NULL
        )
        """,
        "CREATE INDEX procedure_runs_started ON procedure_runs (started_at, id)",
        """
        CREATE INDEX procedure_runs_unfinished ON procedure_runs (started_at)
        WHERE ended_at IS NULL
        """,
    ),
    # The newest incidents, whatever their status or rule (the console's and the API's
    # unfiltered list): without it, every listing sorted the whole table (3 ms at 10,000).
    ("CREATE INDEX incidents_opened ON incidents (opened_at, id)",),
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction (on the connection's thread)."""
    # IMMEDIATE: two processes opening a fresh file must not both create the tables.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path}: schema version {version} is newer than this runbookd "
                f"supports ({SCHEMA_VERSION}); refusing to touch it"
            )
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            # PRAGMA takes no parameters; `target` is an int we computed.
            conn.execute(f"PRAGMA user_version = {target:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
