"""The statements of the PostgreSQL store (daemon/store/postgres/repository.py).

Each is one statement: atomic alone, one round trip. The checks SQLite makes with a second
statement (does the row exist?) are folded in with CTEs.
"""

# Spelled out whole, never assembled from strings. An incident's timeline comes in its row as
# four arrays, oldest entry first (NULL: no entries).
GET_INCIDENT = """
    SELECT i.id, i.rule, i.check_name, i.severity, i.summary, i.status, i.opened_at,
           i.resolved_at, i."trigger", i.acknowledged_by, i.acknowledged_at, i.resolved_by,
           entries.*
    FROM incidents i
    LEFT JOIN LATERAL (
        SELECT array_agg(t.ts ORDER BY t.id) AS entry_ts,
               array_agg(t.kind ORDER BY t.id) AS entry_kind,
               array_agg(t.message ORDER BY t.id) AS entry_message,
               array_agg(t.data ORDER BY t.id) AS entry_data
        FROM timeline t WHERE t.incident_id = i.id
    ) entries ON true
    WHERE i.id = $1
"""
OPEN_INCIDENTS = """
    SELECT i.id, i.rule, i.check_name, i.severity, i.summary, i.status, i.opened_at,
           i.resolved_at, i."trigger", i.acknowledged_by, i.acknowledged_at, i.resolved_by,
           entries.*
    FROM incidents i
    LEFT JOIN LATERAL (
        SELECT array_agg(t.ts ORDER BY t.id) AS entry_ts,
               array_agg(t.kind ORDER BY t.id) AS entry_kind,
               array_agg(t.message ORDER BY t.id) AS entry_message,
               array_agg(t.data ORDER BY t.id) AS entry_data
        FROM timeline t WHERE t.incident_id = i.id
    ) entries ON true
    WHERE i.status = 'open'
    ORDER BY i.opened_at, i.id
"""
INCIDENT_ENTRIES = """
    SELECT incident_id, ts, kind, message, data FROM timeline
    WHERE incident_id = ANY($1::text[]) AND kind = ANY($2::text[])
    ORDER BY incident_id, id
"""
# NULL parameters switch a filter off, so the statement text stays fixed.
LIST_INCIDENTS = """
    SELECT id, rule, check_name, severity, summary, status, opened_at, resolved_at,
           "trigger", acknowledged_by, acknowledged_at, resolved_by
    FROM incidents
    WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR rule = $2)
    ORDER BY opened_at DESC, id DESC
    LIMIT $3
"""

# Inserts the incident, unless its id exists, and then its entries in their order; the
# count says whether it was inserted.
CREATE_INCIDENT = """
    WITH incident AS (
        INSERT INTO incidents
            (id, rule, check_name, severity, summary, status, opened_at, resolved_at,
             "trigger", acknowledged_by, acknowledged_at, resolved_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), entries AS (
        INSERT INTO timeline (incident_id, ts, kind, message, data)
        SELECT incident.id, e.ts, e.kind, e.message, e.data
        FROM incident,
             unnest($13::float8[], $14::text[], $15::text[], $16::text[])
                 WITH ORDINALITY AS e (ts, kind, message, data, n)
        ORDER BY e.n
    )
    SELECT count(*) FROM incident
"""
# Inserts nothing for an unknown incident, which the status ("INSERT 0 0") then tells.
APPEND_ENTRY = """
    INSERT INTO timeline (incident_id, ts, kind, message, data)
    SELECT $1::text, $2::float8, $3::text, $4::text, $5::text
    WHERE EXISTS (SELECT 1 FROM incidents WHERE id = $1)
"""
# Only an open incident: resolving twice keeps the first time and closer. Whether it exists.
RESOLVE = """
    WITH resolved AS (
        UPDATE incidents SET status = 'resolved', resolved_at = $2, resolved_by = $3
        WHERE id = $1 AND status = 'open'
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM resolved) OR EXISTS (SELECT 1 FROM incidents WHERE id = $1)
"""
# Only a running action: ending twice keeps the first outcome. Whether it exists.
END_ACTION = """
    WITH ended AS (
        UPDATE actions SET outcome = $2 WHERE id = $1 AND outcome = 'running' RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM ended) OR EXISTS (SELECT 1 FROM actions WHERE id = $1)
"""
# Deletes the keys given None and upserts the others, in one statement.
PUT_VALUES = """
    WITH deleted AS (
        DELETE FROM kv WHERE namespace = $1 AND key = ANY ($2::text[])
    )
    INSERT INTO kv (namespace, key, value)
    SELECT $1::text, k, v FROM unnest($3::text[], $4::text[]) AS t (k, v)
    ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value
"""
# Only an unfinished item: a late retry must not make a finished one due again.
RESCHEDULE = """
    WITH rescheduled AS (
        UPDATE outbox SET next_at = $2, attempts = $3, last_error = $4
        WHERE id = $1 AND finished_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM rescheduled) OR EXISTS (SELECT 1 FROM outbox WHERE id = $1)
"""
# Only an unfinished item: finishing twice keeps the first outcome.
FINISH = """
    WITH finished AS (
        UPDATE outbox SET finished_at = $2, outcome = $3
        WHERE id = $1 AND finished_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM finished) OR EXISTS (SELECT 1 FROM outbox WHERE id = $1)
"""
OUTBOX_DUE = """
    SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
    FROM outbox
    WHERE finished_at IS NULL AND next_at <= $1
    ORDER BY next_at, id
    LIMIT $2
"""
OUTBOX_PENDING = """
    SELECT id, incident_id, remediation, phase, created_at, next_at, attempts, last_error
    FROM outbox
    WHERE finished_at IS NULL AND incident_id = $1
    ORDER BY id
"""
# Timelines go with their incident through ON DELETE CASCADE. Each job's newest run stays.
# Nothing is inserted for a claim taken already: no id comes back.
BEGIN_ACTION = """
    INSERT INTO actions (incident_id, rule, remediation, ts, outcome, claim)
    VALUES ($1, $2, $3, $4, 'running', $5)
    ON CONFLICT (incident_id, claim) WHERE claim IS NOT NULL DO NOTHING
    RETURNING id
"""
PRUNE = """
    WITH incidents_gone AS (
        DELETE FROM incidents WHERE status = 'resolved' AND resolved_at < $1 RETURNING 1
    ), actions_gone AS (
        DELETE FROM actions WHERE ts < $1 RETURNING 1
    ), outbox_gone AS (
        DELETE FROM outbox WHERE finished_at IS NOT NULL AND created_at < $1
    ), runs_gone AS (
        DELETE FROM job_runs
        WHERE ended_at < $1 AND id NOT IN (SELECT max(id) FROM job_runs GROUP BY job)
        RETURNING 1
    ), deploys_gone AS (
        DELETE FROM deploys WHERE ended_at < $1 RETURNING 1
    )
    SELECT (SELECT count(*) FROM incidents_gone), (SELECT count(*) FROM actions_gone),
           (SELECT count(*) FROM runs_gone), (SELECT count(*) FROM deploys_gone)
"""

# -- job runs ---------------------------------------------------------------------------------

ADD_JOB_RUN = """
    INSERT INTO job_runs (job, trigger, scheduled_at, started_at) VALUES ($1, $2, $3, $4)
    RETURNING id
"""
# Whether the run exists: 1 finished now or before (the first end stays), NULL unknown.
FINISH_JOB_RUN = """
    WITH done AS (
        UPDATE job_runs SET ended_at = $2, outcome = $3, detail = $4, data = $5
        WHERE id = $1 AND outcome IS NULL
        RETURNING 1
    )
    SELECT 1 FROM done UNION ALL SELECT 1 FROM job_runs WHERE id = $1 LIMIT 1
"""
JOB_RUNS = """
    SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data
    FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT $2
"""
LATEST_JOB_RUNS = """
    SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data
    FROM job_runs
    WHERE id IN (
        SELECT max(id) FROM job_runs WHERE $1::text IS NULL OR outcome = $1 GROUP BY job
    )
"""
UNFINISHED_JOB_RUNS = """
    SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data
    FROM job_runs WHERE outcome IS NULL ORDER BY id
"""

# -- the leader's lease: one row, its expiry on this server's clock ----------------------------

# One statement: take the lease if it is free, expired or already the holder's (a new holder
# gets the next epoch), and answer who holds it now. When another holds it the INSERT changes
# nothing and the SELECT reads the row as it stands.
CLAIM_LEASE = """
    WITH claimed AS (
        INSERT INTO lease (name, holder, epoch, expires_at)
        VALUES ('leader', $1, 1, clock_timestamp() + make_interval(secs => $2))
        ON CONFLICT (name) DO UPDATE SET
            epoch = CASE WHEN lease.holder = excluded.holder
                         THEN lease.epoch ELSE lease.epoch + 1 END,
            holder = excluded.holder,
            expires_at = excluded.expires_at
        WHERE lease.holder = excluded.holder OR lease.expires_at <= clock_timestamp()
        RETURNING holder, epoch, expires_at
    )
    SELECT holder, epoch,
           greatest(0, extract(epoch FROM expires_at - clock_timestamp()))::float8 AS remaining
    FROM claimed
    UNION ALL
    SELECT holder, epoch,
           greatest(0, extract(epoch FROM expires_at - clock_timestamp()))::float8
    FROM lease WHERE name = 'leader' AND NOT EXISTS (SELECT 1 FROM claimed)
"""
RELEASE_LEASE = """
    UPDATE lease SET expires_at = clock_timestamp() WHERE name = 'leader' AND holder = $1
"""
# FOR SHARE: a takeover (the claim's UPDATE) waits until the checking transaction ends, so
# it cannot commit between this check and what that transaction records.
CHECK_EPOCH = """
    SELECT 1 FROM lease
    WHERE name = 'leader' AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
    FOR SHARE
"""

# -- deploys ----------------------------------------------------------------------------------

# A deploy with its timeline so far in one statement; false when the id exists already.
CREATE_DEPLOY = """
    WITH created AS (
        INSERT INTO deploys
            (id, version, environment, kind, source, started_at, commit_id, deployed_by,
             previous, baseline, data, status, ended_at, incident)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), entries AS (
        INSERT INTO deploy_timeline (deploy_id, ts, kind, message, data)
        SELECT created.id, e.ts, e.kind, e.message, e.data
        FROM created, unnest($15::float8[], $16::text[], $17::text[], $18::text[])
            WITH ORDINALITY AS e (ts, kind, message, data, n)
        ORDER BY e.n
    )
    SELECT EXISTS (SELECT 1 FROM created)
"""
APPEND_DEPLOY_ENTRY = """
    INSERT INTO deploy_timeline (deploy_id, ts, kind, message, data)
    SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM deploys WHERE id = $1)
"""
# Whether the deploy exists; only one that has not ended changes (its first end stays).
UPDATE_DEPLOY = """
    WITH changed AS (
        UPDATE deploys SET status = $2, ended_at = $3, incident = coalesce($4, incident)
        WHERE id = $1 AND ended_at IS NULL
        RETURNING 1
    )
    SELECT 1 FROM changed UNION ALL SELECT 1 FROM deploys WHERE id = $1 LIMIT 1
"""
# The deploy and its timeline in one statement, the entries as arrays in order.
GET_DEPLOY = """
    SELECT d.id, d.version, d.environment, d.kind, d.source, d.started_at, d.commit_id,
           d.deployed_by, d.previous, d.baseline, d.data, d.status, d.ended_at, d.incident,
           t.entry_ts, t.entry_kind, t.entry_message, t.entry_data
    FROM deploys d
    LEFT JOIN LATERAL (
        SELECT array_agg(ts ORDER BY id) AS entry_ts, array_agg(kind ORDER BY id) AS entry_kind,
               array_agg(message ORDER BY id) AS entry_message,
               array_agg(data ORDER BY id) AS entry_data
        FROM deploy_timeline WHERE deploy_id = d.id
    ) t ON true
    WHERE d.id = $1
"""
DEPLOY_ENTRIES = """
    SELECT deploy_id, ts, kind, message, data FROM deploy_timeline
    WHERE deploy_id = ANY($1::text[]) AND kind = ANY($2::text[])
    ORDER BY deploy_id, id
"""
LIST_DEPLOYS = """
    SELECT id, version, environment, kind, source, started_at, commit_id, deployed_by,
           previous, baseline, data, status, ended_at, incident
    FROM deploys
    WHERE $1::text IS NULL OR status = $1
    ORDER BY started_at DESC, id DESC
    LIMIT $2
"""
