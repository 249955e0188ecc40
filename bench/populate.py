"""Scenario 4's set-up: fill a state directory's SQLite store with resolved incidents before
the daemon starts on it.

The schema comes from runbookd's own store (`SqliteStore.open()` runs its migrations) and the
first incidents go through `SqliteStore.create_incident`. The rest are written with the very
statements and serialisation `create_incident` uses (daemon/store/sqlite/rows.py) in one
transaction: through the API one at a time costs a commit each (about 1.2 ms of CPU, 12 s for
10,000, measured when the store ran on aiosqlite), which the quick mode's three minutes cannot
afford. Each incident is stored resolved, with the timeline a real one has: opened, an action,
resolved.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from pathlib import Path

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.sqlite import rows
from daemon.store.sqlite.repository import SqliteStore

RULES = 20
THROUGH_API = 200


def incident(n: int, base: float) -> Incident:
    opened = base + n
    rule, check = f"rule_{n % RULES}", f"check_{n % RULES}"
    return Incident(
        id=f"inc-bench-{n:06d}",
        rule=rule,
        check=check,
        severity="critical",
        summary=f"{rule}: {check}.up < 1 (value 0, limit 1)",
        opened_at=opened,
        status=IncidentStatus.RESOLVED,
        resolved_at=opened + 30,
        trigger={"check": check, "value_name": "up", "value": 0.0, "threshold": 1.0},
        timeline=[
            TimelineEntry(opened, "opened", f"firing: {rule}", {"value": 0.0, "threshold": 1.0}),
            TimelineEntry(opened + 1, "action", "running restart (command)", {}),
            TimelineEntry(opened + 2, "result", "restart succeeded: exit 0", {"ok": True}),
            TimelineEntry(opened + 30, "resolved", f"resolved: {check}.up >= 1", {"value": 1.0}),
        ],
    )


async def through_api(db: Path, count: int, base: float) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        for n in range(count):
            await store.create_incident(incident(n, base))
    finally:
        await store.close()


def in_bulk(db: Path, first: int, count: int, base: float) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for n in range(first, count):
                inc = incident(n, base)
                conn.execute(rows.INSERT_INCIDENT, rows.incident_params(inc))
                conn.executemany(
                    rows.INSERT_ENTRY, [rows.entry_params(inc.id, e) for e in inc.timeline]
                )
        stored = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
    finally:
        conn.close()
    if stored != count:
        raise SystemExit(f"populate: {stored} incidents stored, expected {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    base = time.time() - 30 * 86400.0 + 3600.0  # inside the default 30-day retention
    api = min(THROUGH_API, args.count)
    asyncio.run(through_api(args.db, api, base))
    in_bulk(args.db, api, args.count, base)


if __name__ == "__main__":
    main()
