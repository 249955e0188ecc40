"""The SQL of scheduled jobs' runs (the `job_runs` table), a part of SqliteStore."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from daemon.store import records
from daemon.store.protocol import JobRun
from daemon.store.sqlite.group_commit import GroupCommit


def prune_job_runs(conn: sqlite3.Connection, before: float) -> int:
    """Finished runs that ended before `before`, except each job's newest: what a job last
    did stays known however long ago it ran."""
    return conn.execute(
        """
        DELETE FROM job_runs
        WHERE ended_at < ? AND id NOT IN (SELECT max(id) FROM job_runs GROUP BY job)
        """,
        (before,),
    ).rowcount


class JobRuns(GroupCommit):
    async def add_job_run(
        self, job: str, trigger: str, scheduled_at: float, started_at: float | None
    ) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO job_runs (job, trigger, scheduled_at, started_at) VALUES (?, ?, ?, ?)",
                (job, trigger, scheduled_at, started_at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write_returning(op)

    async def finish_job_run(
        self, run_id: int, ended_at: float, outcome: str, detail: str, data: Mapping[str, Any]
    ) -> None:
        params = (ended_at, outcome, detail, records.dumps(dict(data)), run_id)

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE job_runs SET ended_at = ?, outcome = ?, detail = ?, data = ?"
                " WHERE id = ? AND outcome IS NULL",
                params,
            )
            if cur.rowcount == 0 and (
                conn.execute("SELECT 1 FROM job_runs WHERE id = ?", (run_id,)).fetchone() is None
            ):
                raise KeyError(run_id)

        await self._write(op)

    async def job_runs(self, job: str, limit: int = 20) -> list[JobRun]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._fetchall(
            "SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data"
            " FROM job_runs WHERE job = ? ORDER BY id DESC LIMIT ?",
            (job, limit),
        )
        return [records.job_run(row) for row in found]

    async def latest_job_runs(self, outcome: str | None = None) -> dict[str, JobRun]:
        found = await self._fetchall(
            """
            SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data
            FROM job_runs
            WHERE id IN (
                SELECT max(id) FROM job_runs WHERE ?1 IS NULL OR outcome = ?1 GROUP BY job
            )
            """,
            (outcome,),
        )
        return {row["job"]: records.job_run(row) for row in found}

    async def unfinished_job_runs(self) -> list[JobRun]:
        found = await self._fetchall(
            "SELECT id, job, trigger, scheduled_at, started_at, ended_at, outcome, detail, data"
            " FROM job_runs WHERE outcome IS NULL ORDER BY id"
        )
        return [records.job_run(row) for row in found]
