"""The store alone under concurrent timeline writes, on SQLite and on PostgreSQL side by side:
50 tasks append 20,000 timeline entries between them (400 each, one `append_timeline` call at
a time, each acknowledged after its commit), on the daemon's event loop. Prints, once per
round and as medians: entries/s, this process's CPU time per entry (every thread: SQLite's
work is all there), and how many transactions carried them; for PostgreSQL also the CPU its
server processes serving the store's connections spent per entry (read from /proc: the server
runs on this machine; its WAL writer and checkpointer are not counted). A timing script, not a
test and not one of the harness's scenarios.

    .venv/bin/python -m bench.store_writes [--rounds 5] [--store sqlite|postgres|both]

PostgreSQL: a scratch database per round on RUNBOOKD_BENCH_PG_DSN (a role that may create
databases; default postgresql://root@127.0.0.1:5432/postgres), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from daemon.core.models import Incident, TimelineEntry
from daemon.runtime import eventloop
from daemon.store.postgres.repository import PostgresStore
from daemon.store.sqlite.repository import SqliteStore

TASKS = 50
ENTRIES = 20_000
ADMIN_DSN = os.environ.get("RUNBOOKD_BENCH_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")

Store = SqliteStore | PostgresStore


@dataclass(frozen=True)
class Round:
    rate: float  # entries/s
    cpu_us: float  # this process, per entry
    commits: int
    server_us: float | None = None  # PostgreSQL's backends, per entry


async def one_round(
    store: Store, server_cpu: Callable[[], Awaitable[dict[int, float]]] | None = None
) -> Round:
    """Entries/s, CPU µs per entry and the commits they took, on a fresh, open store;
    `server_cpu` gives the CPU seconds of each database server process serving it."""
    for t in range(TASKS):
        await store.create_incident(Incident(f"inc-{t}", "rule", "check", "critical", "s", 0.0))

    async def writer(t: int) -> None:
        for i in range(ENTRIES // TASKS):
            entry = TimelineEntry(float(i), "alert", f"alert {i}", {"n": i})
            await store.append_timeline(f"inc-{t}", entry)

    commits = store.commits
    before = await server_cpu() if server_cpu else {}
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(t) for t in range(TASKS)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    server_us = None
    if server_cpu:
        after = await server_cpu()  # a process that connected meanwhile counts whole
        server_us = sum(t - before.get(pid, 0.0) for pid, t in after.items()) / ENTRIES * 1e6
    return Round(ENTRIES / elapsed, cpu / ENTRIES * 1e6, store.commits - commits, server_us)


async def sqlite_round(tmp: Path, n: int) -> Round:
    store = SqliteStore(tmp / f"round-{n}.db")
    await store.open()
    try:
        return await one_round(store)
    finally:
        await store.close()


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    import asyncpg

    name = f"runbookd_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)  # type: ignore[no-untyped-call]
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_round() -> Round:
    import asyncpg

    async with scratch_database() as dsn:
        store = PostgresStore(dsn)
        await store.open()
        watcher = await asyncpg.connect(dsn)  # type: ignore[no-untyped-call]
        database = urlsplit(dsn).path.lstrip("/")

        async def server_cpu() -> dict[int, float]:
            """CPU seconds of each server process serving the store's connections."""
            rows = await watcher.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                database,
                "runbookd",
            )
            return {r["pid"]: _cpu_seconds(r["pid"]) for r in rows}

        try:
            return await one_round(store, server_cpu)
        finally:
            await watcher.close()
            await store.close()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process on this machine (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _line(name: str, r: Round) -> str:
    server = f", server {r.server_us:.1f} µs" if r.server_us is not None else ""
    return (
        f"{name}: {r.rate:,.0f} entries/s, {r.cpu_us:.1f} µs CPU each{server}, {r.commits} commits"
    )


async def main(rounds: int, stores: list[str]) -> None:
    results: dict[str, list[Round]] = {name: [] for name in stores}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            # Alternating within each round: both see the same machine state.
            for name in stores:
                r = await (sqlite_round(Path(tmp), n) if name == "sqlite" else postgres_round())
                results[name].append(r)
                print(f"round {n + 1} {_line(name, r)}")
    for name, rs in results.items():
        servers = [r.server_us for r in rs if r.server_us is not None]
        median = Round(
            statistics.median(r.rate for r in rs),
            statistics.median(r.cpu_us for r in rs),
            int(statistics.median(r.commits for r in rs)),
            statistics.median(servers) if servers else None,
        )
        print(f"median of {rounds} {_line(name, median)} ({eventloop.name()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    chosen = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    eventloop.run(main(args.rounds, chosen))
