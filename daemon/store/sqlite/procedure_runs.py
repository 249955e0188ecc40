"""Procedure runs (the `procedure_runs` table), a part of SqliteStore: one JSON document per
run, with the columns a listing filters and orders by beside it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from daemon.store import records
from daemon.store.sqlite.group_commit import GroupCommit

_SAVE = """
    INSERT INTO procedure_runs (id, procedure, status, started_at, ended_at, doc)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        status = excluded.status, ended_at = excluded.ended_at, doc = excluded.doc
"""


def prune_procedure_runs(conn: sqlite3.Connection, before: float) -> None:
    conn.execute("DELETE FROM procedure_runs WHERE ended_at < ?", (before,))


class ProcedureRuns(GroupCommit):
    async def save_procedure_run(self, run: Mapping[str, Any]) -> None:
        params = records.procedure_run_params(run)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_SAVE, params)

        await self._write(op)

    async def get_procedure_run(self, run_id: str) -> dict[str, Any] | None:
        found = await self._fetchall("SELECT doc FROM procedure_runs WHERE id = ?", (run_id,))
        return dict(json.loads(found[0]["doc"])) if found else None

    async def list_procedure_runs(
        self, *, procedure: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = await self._fetchall(
            "SELECT doc FROM procedure_runs"
            " WHERE (?1 IS NULL OR procedure = ?1) AND (?2 IS NULL OR status = ?2)"
            " ORDER BY started_at DESC, id DESC LIMIT ?3",
            (procedure, status, limit),
        )
        return [dict(json.loads(row["doc"])) for row in found]

    async def unfinished_procedure_runs(self) -> list[dict[str, Any]]:
        found = await self._fetchall(
            "SELECT doc FROM procedure_runs WHERE ended_at IS NULL ORDER BY started_at, id"
        )
        return [dict(json.loads(row["doc"])) for row in found]
