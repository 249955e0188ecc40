"""The SQLite store alone under concurrent timeline writes: 50 tasks append 20,000 timeline
entries between them (400 each, one `append_timeline` call at a time, each acknowledged after
its commit), on the daemon's event loop. Prints entries/s, the process's CPU time per entry
(every thread) and how many transactions carried them, once per round. A timing script, not a
test and not one of the harness's scenarios.

    .venv/bin/python -m bench.store_writes [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from daemon.core.models import Incident, TimelineEntry
from daemon.runtime import eventloop
from daemon.store.sqlite.repository import SqliteStore

TASKS = 50
ENTRIES = 20_000


async def one_round(db: Path) -> tuple[float, float, int]:
    """Entries/s, CPU µs per entry and the commits they took, on a fresh store."""
    store = SqliteStore(db)
    await store.open()
    try:
        for t in range(TASKS):
            await store.create_incident(Incident(f"inc-{t}", "rule", "check", "critical", "s", 0.0))

        async def writer(t: int) -> None:
            for i in range(ENTRIES // TASKS):
                entry = TimelineEntry(float(i), "alert", f"alert {i}", {"n": i})
                await store.append_timeline(f"inc-{t}", entry)

        commits = store.commits
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(writer(t) for t in range(TASKS)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return ENTRIES / elapsed, cpu / ENTRIES * 1e6, store.commits - commits
    finally:
        await store.close()


async def main(rounds: int) -> None:
    rates, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            rate, cpu, commits = await one_round(Path(tmp) / f"round-{n}.db")
            rates.append(rate)
            cpus.append(cpu)
            print(f"round {n + 1}: {rate:,.0f} entries/s, {cpu:.1f} µs CPU each, {commits} commits")
    print(
        f"median of {rounds}: {statistics.median(rates):,.0f} entries/s,"
        f" {statistics.median(cpus):.1f} µs CPU each ({eventloop.name()})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    eventloop.run(main(parser.parse_args().rounds))
