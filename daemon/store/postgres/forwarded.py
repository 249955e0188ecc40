"""Requests a standby left for the leader (the `forwarded` table), a part of PostgresStore.

The leader polls the table rather than LISTENing: notifications need a session of their own,
which transaction-pooling proxies (PgBouncer, Neon, Supabase) do not give."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from daemon.store import records
from daemon.store.postgres.connection import Connection, clean
from daemon.store.postgres.group_commit import GroupCommit
from daemon.store.protocol import Forwarded

FORWARD = "INSERT INTO forwarded (operation, args, received_at) VALUES ($1, $2, $3) RETURNING id"
# SKIP LOCKED: two leaders for a moment (one fenced a breath later) never take the same row.
TAKE = """
    UPDATE forwarded SET taken = true WHERE id IN (
        SELECT id FROM forwarded WHERE NOT taken ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    )
    RETURNING id, operation, args, received_at
"""
ANSWER = "UPDATE forwarded SET answer = $2 WHERE id = $1 AND taken"
COLLECT = "DELETE FROM forwarded WHERE id = $1 AND answer IS NOT NULL RETURNING answer"
WITHDRAW = "DELETE FROM forwarded WHERE id = $1 AND NOT taken RETURNING 1"
PRUNE = "DELETE FROM forwarded WHERE received_at < $1 AND (answer IS NOT NULL OR NOT taken)"


class ForwardedRequests(GroupCommit):
    async def forward(self, operation: str, args: Mapping[str, Any], received_at: float) -> int:
        values = clean((operation, records.dumps(dict(args)), received_at))

        async def op(conn: Connection) -> int:
            return int(await conn.fetchval(FORWARD, *values))

        item_id: int = await self._write_returning(op)
        return item_id

    async def take_forwarded(self, limit: int = 100) -> list[Forwarded]:
        async def op(conn: Connection) -> list[Forwarded]:
            found = await conn.fetch(TAKE, limit)
            items = [
                Forwarded(r["id"], r["operation"], json.loads(r["args"]), r["received_at"])
                for r in found
            ]
            return sorted(items, key=lambda item: item.id)

        taken: list[Forwarded] = await self._write_returning(op)
        return taken

    async def answer_forwarded(self, item_id: int, answer: Mapping[str, Any]) -> None:
        text = clean((records.dumps(dict(answer)),))[0]

        async def op(conn: Connection) -> None:
            await conn.execute(ANSWER, item_id, text)

        await self._write(op)

    async def collect_answer(self, item_id: int) -> dict[str, Any] | None:
        async def op(conn: Connection) -> dict[str, Any] | None:
            found = await conn.fetchval(COLLECT, item_id)
            return None if found is None else dict(json.loads(found))

        answer: dict[str, Any] | None = await self._write_returning(op)
        return answer

    async def withdraw_forwarded(self, item_id: int) -> bool:
        async def op(conn: Connection) -> bool:
            return await conn.fetchval(WITHDRAW, item_id) is not None

        withdrawn: bool = await self._write_returning(op)
        return withdrawn
