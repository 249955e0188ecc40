"""The leader's lease on SQLite (the `lease` table), a part of SqliteStore.

One daemon owns a SQLite state directory (its lock file sees to that), so this lease always
goes to it; it exists so a single daemon runs the same leadership code as several replicas
on PostgreSQL. The clock is this host's (`wall`), the store's clock for a local file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from daemon.store.protocol import Fenced, Lease
from daemon.store.sqlite.group_commit import GroupCommit

NAME = "leader"

# One statement: take the lease if it is free, expired or ours; a new holder gets the next
# epoch. RETURNING gives nothing when another holds it, which a second read then tells.
_CLAIM = """
    INSERT INTO lease (name, holder, epoch, expires_at) VALUES (?1, ?2, 1, ?3 + ?4)
    ON CONFLICT (name) DO UPDATE SET
        epoch = CASE WHEN holder = excluded.holder THEN epoch ELSE epoch + 1 END,
        holder = excluded.holder,
        expires_at = excluded.expires_at
    WHERE holder = excluded.holder OR expires_at <= ?3
    RETURNING holder, epoch, expires_at - ?3
"""
_CURRENT = "SELECT holder, epoch, expires_at - ? FROM lease WHERE name = ?"


class Leases(GroupCommit):
    wall: Callable[[], float] = staticmethod(time.time)

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        now = self.wall()

        def op(conn: sqlite3.Connection) -> Lease:
            row = conn.execute(_CLAIM, (NAME, holder, now, ttl)).fetchone()
            if row is None:
                row = conn.execute(_CURRENT, (now, NAME)).fetchone()
            return Lease(row[0], row[1], max(0.0, row[2]))

        return await self._write_returning(op)

    async def release_lease(self, holder: str) -> None:
        now = self.wall()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE lease SET expires_at = ? WHERE name = ? AND holder = ?", (now, NAME, holder)
            )

        await self._write(op)

    async def check_epoch(self, holder: str, epoch: int) -> None:
        now = self.wall()

        def op(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT 1 FROM lease"
                " WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?",
                (NAME, holder, epoch, now),
            ).fetchone()
            if found is None:
                raise Fenced(f"{holder} no longer holds the lease with epoch {epoch}")

        await self._write(op)
