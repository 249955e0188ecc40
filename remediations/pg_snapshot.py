"""PostgreSQL sessions for the backup remediations: connecting with failures said plainly,
and the exported snapshot a backup is dumped from (its rows counted in it).

asyncpg is imported on first use, not with the module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from daemon.clients.processes import run_process
from remediations.backups import Failed
from remediations.postgres_maintenance import connect_failure, quote_table

CONNECT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 5.0
MAX_MESSAGE = 200
APPLICATION_NAME = "runbookd"


def message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def pg_errors() -> tuple[type[BaseException], ...]:
    import asyncpg.exceptions as pgerr

    return (pgerr.PostgresError, pgerr.InterfaceError, OSError)


async def connect(dsn: str, what: str) -> Any:
    """An asyncpg connection; Failed names `what` it was for."""
    import asyncpg
    import asyncpg.exceptions as pgerr

    try:
        return await asyncpg.connect(  # type: ignore[no-untyped-call]  # untyped
            dsn, timeout=CONNECT_TIMEOUT, server_settings={"application_name": APPLICATION_NAME}
        )
    except (OSError, TimeoutError, ValueError, pgerr.PostgresError, pgerr.InterfaceError) as exc:
        failure = connect_failure(exc, CONNECT_TIMEOUT)
        raise Failed(f"{what}: {failure.detail}", failure.recoverable) from None


async def close(conn: Any) -> None:
    """Bounded; a connection that will not close politely is dropped."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await conn.close()
    except TimeoutError:
        conn.terminate()
    except pg_errors():
        conn.terminate()


@asynccontextmanager
async def session(dsn: str, what: str) -> AsyncIterator[Any]:
    conn = await connect(dsn, what)
    try:
        yield conn
    except BaseException:
        conn.terminate()  # mid-statement (a cancellation): the server ends the backend
        raise
    await close(conn)


async def count_rows(conn: Any, tables: Iterable[str]) -> dict[str, int]:
    """Exact row counts (count(*)); Failed naming the table that could not be counted."""
    import asyncpg.exceptions as pgerr

    counts: dict[str, int] = {}
    for table in tables:
        try:
            # quote_table admits only validated identifiers, quoted.
            query = f"SELECT count(*) FROM {quote_table(table)}"  # noqa: S608
            counts[table] = int(await conn.fetchval(query))
        except pgerr.PostgresError as exc:
            raise Failed(f"counting rows of {table}: {message(exc)}", False) from None
        except (pgerr.InterfaceError, OSError) as exc:
            lost = f"counting rows of {table}: connection lost: {message(exc)}"
            raise Failed(lost, True) from None
    return counts


@dataclass(slots=True)
class Snapshot:
    snapshot_id: str
    server_version: str | None
    pg_dump_version: str | None
    row_counts: dict[str, int] = field(default_factory=dict)


async def pg_dump_version() -> str | None:
    """`pg_dump --version`'s number (e.g. 15.20); None if it cannot tell (the dump itself
    will then say why it cannot run)."""
    run = await run_process(["pg_dump", "--version"], term_after=CONNECT_TIMEOUT)
    words = run.stdout.split()
    return words[2] if run.exit_code == 0 and len(words) >= 3 else None


@asynccontextmanager
async def open_snapshot(dsn: str, tables: Iterable[str]) -> AsyncIterator[Snapshot]:
    """A REPEATABLE READ, READ ONLY transaction that exports its snapshot, with `tables`
    counted in it; open until the block ends, as `pg_dump --snapshot` needs."""
    async with session(dsn, "connecting to the database") as conn:
        try:
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot_id = str(await conn.fetchval("SELECT pg_export_snapshot()"))
            version = await conn.fetchval("SHOW server_version")
        except pg_errors() as exc:
            raise Failed(f"exporting a snapshot: {message(exc)}", True) from None
        snapshot = Snapshot(snapshot_id, str(version).split()[0], await pg_dump_version())
        snapshot.row_counts = await count_rows(conn, tables)
        yield snapshot
        try:
            await conn.execute("COMMIT")
        except pg_errors():
            pass  # a read-only transaction: nothing to keep
