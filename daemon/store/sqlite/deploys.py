"""The SQL of deploys and their timelines (the `deploys` and `deploy_timeline` tables), a
part of SqliteStore."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

from daemon.store import records
from daemon.store.protocol import Deploy, DeployEntry
from daemon.store.sqlite.group_commit import GroupCommit

# Statements are spelled out whole, never assembled from strings.
_SELECT_ONE = """
    SELECT id, version, environment, kind, source, started_at, commit_id, deployed_by, previous,
           baseline, data, status, ended_at, incident
    FROM deploys
    WHERE id = ?
"""
_SELECT_MANY = """
    SELECT id, version, environment, kind, source, started_at, commit_id, deployed_by, previous,
           baseline, data, status, ended_at, incident
    FROM deploys
    WHERE ?1 IS NULL OR status = ?1
    ORDER BY started_at DESC, id DESC
    LIMIT ?2
"""
_INSERT = """
    INSERT INTO deploys
        (id, version, environment, kind, source, started_at, commit_id, deployed_by, previous,
         baseline, data, status, ended_at, incident)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
_INSERT_ENTRY = (
    "INSERT INTO deploy_timeline (deploy_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)"
)
# The ids and kinds as JSON arrays: one statement whatever their number.
_SELECT_ENTRIES = """
    SELECT deploy_id, ts, kind, message, data FROM deploy_timeline
    WHERE deploy_id IN (SELECT value FROM json_each(?1))
      AND kind IN (SELECT value FROM json_each(?2))
    ORDER BY deploy_id, id
"""
# Inserts nothing for an unknown deploy, which the row count then tells.
_APPEND_ENTRY = """
    INSERT INTO deploy_timeline (deploy_id, ts, kind, message, data)
    SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM deploys WHERE id = ?)
"""


def prune_deploys(conn: sqlite3.Connection, before: float) -> int:
    """Deploys that ended before `before`; their timelines go with them (ON DELETE CASCADE)."""
    return conn.execute("DELETE FROM deploys WHERE ended_at < ?", (before,)).rowcount


class Deploys(GroupCommit):
    async def create_deploy(self, deploy: Deploy) -> None:
        params = records.deploy_params(deploy)
        entries = [records.deploy_entry_params(deploy.id, e) for e in deploy.timeline]

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(_INSERT, params).rowcount == 0:
                raise ValueError(f"deploy {deploy.id!r} already exists")
            if entries:
                conn.executemany(_INSERT_ENTRY, entries)

        await self._write(op)

    async def append_deploy_timeline(self, deploy_id: str, entry: DeployEntry) -> None:
        params = (*records.deploy_entry_params(deploy_id, entry), deploy_id)

        def op(conn: sqlite3.Connection) -> None:
            if conn.execute(_APPEND_ENTRY, params).rowcount == 0:
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
        def op(conn: sqlite3.Connection) -> None:
            # Only a deploy that has not ended: its first end stays.
            cur = conn.execute(
                "UPDATE deploys SET status = ?, ended_at = ?, incident = coalesce(?, incident)"
                " WHERE id = ? AND ended_at IS NULL",
                (status, ended_at, incident, deploy_id),
            )
            if cur.rowcount == 0 and (
                conn.execute("SELECT 1 FROM deploys WHERE id = ?", (deploy_id,)).fetchone() is None
            ):
                raise KeyError(deploy_id)

        await self._write(op)

    async def get_deploy(self, deploy_id: str) -> Deploy | None:
        def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            # In one trip: no write of this store can land between deploy and timeline.
            found = conn.execute(_SELECT_ONE, (deploy_id,)).fetchall()
            entries = conn.execute(
                "SELECT ts, kind, message, data FROM deploy_timeline WHERE deploy_id = ?"
                " ORDER BY id",
                (deploy_id,),
            ).fetchall()
            return found, entries

        found, entries = await self._read(read)
        row = next(iter(found), None)
        return (
            None if row is None else records.deploy(row, [records.deploy_entry(e) for e in entries])
        )

    async def list_deploys(self, *, status: str | None = None, limit: int = 100) -> list[Deploy]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._fetchall(_SELECT_MANY, (status, limit))
        return [records.deploy(row) for row in found]

    async def deploy_entries(
        self, deploy_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[DeployEntry]]:
        if not deploy_ids or not kinds:
            return {}
        params = (json.dumps(list(deploy_ids)), json.dumps(sorted(kinds)))
        found: dict[str, list[DeployEntry]] = {}
        for row in await self._fetchall(_SELECT_ENTRIES, params):
            found.setdefault(row["deploy_id"], []).append(records.deploy_entry(row))
        return found
