"""Requests a standby left for the leader (the `forwarded` table), a part of SqliteStore.

One daemon owns a SQLite state directory, so it never stands by; the table exists so the
store keeps one contract on both backends (tests/store_contract.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from daemon.store import records
from daemon.store.protocol import Forwarded
from daemon.store.sqlite.group_commit import GroupCommit


def prune_forwarded(conn: sqlite3.Connection, before: float) -> None:
    """Requests received before `before` that were answered (nobody collected the answer) or
    never taken (no leader came): history, not work."""
    conn.execute(
        "DELETE FROM forwarded WHERE received_at < ? AND (answer IS NOT NULL OR NOT taken)",
        (before,),
    )


class ForwardedRequests(GroupCommit):
    async def forward(self, operation: str, args: Mapping[str, Any], received_at: float) -> int:
        params = (operation, records.dumps(dict(args)), received_at)

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO forwarded (operation, args, received_at) VALUES (?, ?, ?)", params
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write_returning(op)

    async def take_forwarded(self, limit: int = 100) -> list[Forwarded]:
        def op(conn: sqlite3.Connection) -> list[Forwarded]:
            found = conn.execute(
                "UPDATE forwarded SET taken = 1 WHERE id IN"
                " (SELECT id FROM forwarded WHERE NOT taken ORDER BY id LIMIT ?)"
                " RETURNING id, operation, args, received_at",
                (limit,),
            ).fetchall()
            items = [Forwarded(r[0], r[1], json.loads(r[2]), r[3]) for r in found]
            return sorted(items, key=lambda item: item.id)

        return await self._write_returning(op)

    async def answer_forwarded(self, item_id: int, answer: Mapping[str, Any]) -> None:
        params = (records.dumps(dict(answer)), item_id)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE forwarded SET answer = ? WHERE id = ? AND taken", params)

        await self._write(op)

    async def collect_answer(self, item_id: int) -> dict[str, Any] | None:
        def op(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "DELETE FROM forwarded WHERE id = ? AND answer IS NOT NULL RETURNING answer",
                (item_id,),
            ).fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._write_returning(op)

    async def withdraw_forwarded(self, item_id: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM forwarded WHERE id = ? AND NOT taken", (item_id,))
            return cur.rowcount == 1

        return await self._write_returning(op)
