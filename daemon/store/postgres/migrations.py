"""The PostgreSQL store's schema, versioned in the table `schema_version` (one row per
migration applied).

`MIGRATIONS[n]` takes version n to n + 1. Append a migration to change the schema; never edit
a released one.

The tables are SQLite's (daemon/store/sqlite/migrations.py), in PostgreSQL's types:
- times are epoch seconds in `double precision`, as the models hold them;
- JSON is compact text, not jsonb, so a value comes back exactly as written (key order, big
  integers, float digits);
- ids and keys compare byte by byte (`COLLATE "C"`), as in SQLite, whatever the database's
  locale: the order of `list_incidents` ties does not depend on the server;
- ledger, timeline and outbox ids come from identity sequences, never reused.
"""

from __future__ import annotations

import contextlib

from daemon.store.postgres.connection import Connection
from daemon.store.protocol import StoreUnavailable

# Held by the migrating transaction: replicas starting together on an empty database take
# turns, and the second finds the schema made. A transaction-level lock is released at its
# COMMIT, so it works behind a transaction-pooling proxy, as a session-level one would not.
# The key is "runbookd" in ASCII.
MIGRATION_LOCK = 0x72756E626F6F6B64

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # `trigger` is an SQL keyword, hence quoted.
        """
        CREATE TABLE incidents (
            id              text COLLATE "C" PRIMARY KEY,
            rule            text NOT NULL,
            check_name      text NOT NULL,
            severity        text NOT NULL,
            summary         text NOT NULL,
            status          text NOT NULL CHECK (status IN ('open', 'resolved')),
            opened_at       double precision NOT NULL,
            resolved_at     double precision,
            "trigger"       text NOT NULL DEFAULT '{}',
            acknowledged_by text,
            acknowledged_at double precision,
            resolved_by     text
        )
        """,
        "CREATE INDEX incidents_status_opened ON incidents (status, opened_at)",
        "CREATE INDEX incidents_rule_opened ON incidents (rule, opened_at)",
        """
        CREATE TABLE timeline (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            incident_id text COLLATE "C" NOT NULL
                        REFERENCES incidents (id) ON DELETE CASCADE,
            ts          double precision NOT NULL,
            kind        text NOT NULL,
            message     text NOT NULL,
            data        text NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX timeline_incident ON timeline (incident_id, id)",
        """
        CREATE TABLE actions (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            incident_id text COLLATE "C" NOT NULL,
            rule        text NOT NULL,
            remediation text NOT NULL,
            ts          double precision NOT NULL,
            outcome     text NOT NULL
        )
        """,
        "CREATE INDEX actions_ts ON actions (ts)",
        "CREATE INDEX actions_rule_remediation_ts ON actions (rule, remediation, ts)",
        # Partial: only the few unfinished actions are indexed (what a restart looks for).
        "CREATE INDEX actions_running ON actions (ts, id) WHERE outcome = 'running'",
        """
        CREATE TABLE kv (
            namespace   text COLLATE "C" NOT NULL,
            key         text COLLATE "C" NOT NULL,
            value       text NOT NULL,
            PRIMARY KEY (namespace, key)
        )
        """,
        # No foreign key to incidents: the outbox is pruned by its own age, and an incident's
        # deletion must neither wait for nor take its notifications.
        """
        CREATE TABLE outbox (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            incident_id text COLLATE "C" NOT NULL,
            remediation text NOT NULL,
            phase       text NOT NULL,
            created_at  double precision NOT NULL,
            next_at     double precision NOT NULL,
            attempts    integer NOT NULL DEFAULT 0,
            last_error  text NOT NULL DEFAULT '',
            finished_at double precision,
            outcome     text,
            CHECK ((finished_at IS NULL) = (outcome IS NULL))
        )
        """,
        # Partial: finished items are never due, so the index holds only pending ones.
        "CREATE INDEX outbox_due ON outbox (next_at, id) WHERE finished_at IS NULL",
    ),
    # 1 -> 2: the runs of scheduled jobs, and the leader's lease with its fencing epoch (its
    # expiry is on this server's clock, the one every replica shares).
    (
        """
        CREATE TABLE job_runs (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job          text COLLATE "C" NOT NULL,
            trigger      text NOT NULL,
            scheduled_at double precision NOT NULL,
            started_at   double precision,
            ended_at     double precision,
            outcome      text,
            detail       text NOT NULL DEFAULT '',
            data         text NOT NULL DEFAULT '{}',
            CHECK ((ended_at IS NULL) = (outcome IS NULL))
        )
        """,
        "CREATE INDEX job_runs_job ON job_runs (job, id)",
        "CREATE INDEX job_runs_unfinished ON job_runs (id) WHERE outcome IS NULL",
        """
        CREATE TABLE lease (
            name       text COLLATE "C" PRIMARY KEY,
            holder     text NOT NULL,
            epoch      bigint NOT NULL,
            expires_at timestamptz NOT NULL
        )
        """,
    ),
    # 2 -> 3: deploys and their timelines (`commit` and `by` are keywords: the column names).
    (
        """
        CREATE TABLE deploys (
            id          text COLLATE "C" PRIMARY KEY,
            version     text NOT NULL,
            environment text NOT NULL,
            kind        text NOT NULL,
            source      text NOT NULL,
            started_at  double precision NOT NULL,
            commit_id   text,
            deployed_by text,
            previous    text,
            baseline    text NOT NULL DEFAULT '{}',
            data        text NOT NULL DEFAULT '{}',
            status      text NOT NULL,
            ended_at    double precision,
            incident    text
        )
        """,
        "CREATE INDEX deploys_started ON deploys (started_at, id)",
        "CREATE INDEX deploys_status ON deploys (status, started_at)",
        """
        CREATE TABLE deploy_timeline (
            id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            deploy_id text COLLATE "C" NOT NULL REFERENCES deploys (id) ON DELETE CASCADE,
            ts        double precision NOT NULL,
            kind      text NOT NULL,
            message   text NOT NULL,
            data      text NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX deploy_timeline_deploy ON deploy_timeline (deploy_id, id)",
    ),
    # 3 -> 4: requests a standby leaves for the leader, each action's claim (its step, at most
    # once per incident), and procedure runs.
    (
        'ALTER TABLE actions ADD COLUMN claim text COLLATE "C"',
        "CREATE UNIQUE INDEX actions_claim ON actions (incident_id, claim) WHERE claim IS NOT NULL",
        """
        CREATE TABLE forwarded (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            operation   text NOT NULL,
            args        text NOT NULL,
            received_at double precision NOT NULL,
            taken       boolean NOT NULL DEFAULT false,
            answer      text
        )
        """,
        "CREATE INDEX forwarded_waiting ON forwarded (id) WHERE NOT taken",
        """
        CREATE TABLE procedure_runs (
            id          text COLLATE "C" PRIMARY KEY,
            procedure   text NOT NULL,
            status      text NOT NULL,
            started_at  double precision NOT NULL,
            ended_at    double precision,
            doc         text NOT NULL
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

_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version     integer PRIMARY KEY,
        applied_at  timestamptz NOT NULL DEFAULT now()
    )
"""


async def migrate(conn: Connection, where: str) -> int:
    """Bring the database to SCHEMA_VERSION in one transaction; the version it had. A newer
    schema than this runbookd knows is refused (StoreUnavailable), untouched."""
    await conn.execute("BEGIN")
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(_VERSION_TABLE)
        version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"PostgreSQL at {where}: schema version {version} is newer than this runbookd "
                f"supports ({SCHEMA_VERSION}); refusing to touch it"
            )
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", target)
        await conn.execute("COMMIT")
    except BaseException:
        # A connection that broke or a cancelled task may fail here too: the error to report
        # is the first, and the pool rolls back a connection it gets back in a transaction.
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")
        raise
    return version
