"""Procedure runs (the `procedure_runs` table), a part of PostgresStore: one JSON document per
run, with the columns a listing filters and orders by beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from daemon.store import records
from daemon.store.postgres.connection import Connection, Record, clean
from daemon.store.postgres.forwarded import ForwardedRequests

SAVE = """
    INSERT INTO procedure_runs (id, procedure, status, started_at, ended_at, doc)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET
        status = excluded.status, ended_at = excluded.ended_at, doc = excluded.doc
"""
GET = "SELECT doc FROM procedure_runs WHERE id = $1"
LIST = """
    SELECT doc FROM procedure_runs
    WHERE ($1::text IS NULL OR procedure = $1) AND ($2::text IS NULL OR status = $2)
    ORDER BY started_at DESC, id DESC LIMIT $3
"""
UNFINISHED = "SELECT doc FROM procedure_runs WHERE ended_at IS NULL ORDER BY started_at, id"
PRUNE = "DELETE FROM procedure_runs WHERE ended_at < $1"


class ProcedureRuns(ForwardedRequests):
    async def save_procedure_run(self, run: Mapping[str, Any]) -> None:
        args = clean(records.procedure_run_params(run))

        async def op(conn: Connection) -> None:
            await conn.execute(SAVE, *args)

        await self._write(op)

    async def get_procedure_run(self, run_id: str) -> dict[str, Any] | None:
        found = await self._docs(GET, run_id)
        return found[0] if found else None

    async def list_procedure_runs(
        self, *, procedure: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return await self._docs(LIST, procedure, status, limit)

    async def unfinished_procedure_runs(self) -> list[dict[str, Any]]:
        return await self._docs(UNFINISHED)

    async def _docs(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        async def op(conn: Connection) -> list[Record]:
            return await conn.fetch(statement, *clean(args))

        rows: list[Record] = await self._read(op)
        return [dict(json.loads(row["doc"])) for row in rows]
