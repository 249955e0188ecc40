"""A fresh PostgreSQL database per test, created and dropped through an admin connection;
or one per test module, emptied before each test (`emptied`), which is faster.

The server comes from RUNBOOKD_TEST_PG_DSN (a superuser, or a role allowed to create
databases); tests are skipped, saying why, when it cannot be reached (and fail under CI=true).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# asyncpg ships no type hints (hence the ignores on its calls).
import asyncpg
import asyncpg.exceptions as pgerr

from daemon.store.postgres.repository import PostgresStore
from tests.services import missing

ADMIN_DSN = os.environ.get("RUNBOOKD_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/postgres")
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Database:
    name: str
    dsn: str
    admin: Any  # an asyncpg connection to the admin database

    async def connect(self) -> Any:
        """A connection to this database, for setting up data; the caller closes it."""
        return await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]


def dsn_for(
    database: str, dsn: str = ADMIN_DSN, *, user: str | None = None, password: str | None = None
) -> str:
    """`dsn` with its database replaced, and its user or password if given."""
    parts = urlsplit(dsn)
    user = user if user is not None else unquote(parts.username or "")
    password = password if password is not None else unquote(parts.password or "")
    credentials = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{credentials}@{host}" if credentials else host
    return urlunsplit(parts._replace(netloc=netloc, path="/" + database))


def _where(dsn: str) -> str:
    """host:port of a DSN, for messages (never the password)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[Database]:
    """An empty database named runbookd_test_<random>, dropped afterwards even if
    connections to it are still open."""
    try:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, pgerr.PostgresError, pgerr.InterfaceError) as exc:
        missing(f"PostgreSQL not reachable at {_where(ADMIN_DSN)} (RUNBOOKD_TEST_PG_DSN): {exc}")
    name = f"runbookd_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Database(name, dsn_for(name), admin)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextmanager
def module_database() -> Iterator[str]:
    """The DSN of an empty database for a whole test module (from a sync module fixture:
    the database is made and dropped on loops of their own)."""

    async def create() -> tuple[str, str]:
        async with _admin() as admin:
            name = f"runbookd_test_{secrets.token_hex(6)}"
            await admin.execute(f'CREATE DATABASE "{name}"')
            return name, dsn_for(name)

    async def drop(name: str) -> None:
        async with _admin() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    name, dsn = asyncio.run(create())
    try:
        yield dsn
    finally:
        asyncio.run(drop(name))


# Every row of runbookd's PostgreSQL store (for `emptied`), children before parents.
EMPTY_STORE = (
    "DELETE FROM timeline; DELETE FROM incidents; DELETE FROM actions; DELETE FROM kv;"
    " DELETE FROM outbox; DELETE FROM job_runs; DELETE FROM lease; DELETE FROM deploy_timeline;"
    " DELETE FROM deploys; DELETE FROM forwarded; DELETE FROM procedure_runs"
)


@contextmanager
def module_store_database() -> Iterator[str]:
    """`module_database` with runbookd's store schema made in it (what EMPTY_STORE empties)."""

    async def migrated(dsn: str) -> None:
        store = PostgresStore(dsn)
        await store.open()
        await store.close()

    with module_database() as dsn:
        asyncio.run(migrated(dsn))
        yield dsn


async def emptied(dsn: str, deletes: str) -> None:
    """Run `deletes` (statements that empty the tables) and restart every sequence. DELETE
    rather than TRUNCATE: on a few rows it takes ~25 ms, not ~190."""
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    try:
        # A test that left a transaction open on a table would make this wait: fail instead.
        await conn.execute("SET lock_timeout = '5s'")
        await conn.execute(deletes)
        await conn.execute(
            "SELECT setval(oid::regclass, 1, false) FROM pg_class WHERE relkind = 'S'"
        )
    finally:
        await conn.close()


@asynccontextmanager
async def _admin() -> AsyncIterator[Any]:
    try:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, pgerr.PostgresError, pgerr.InterfaceError) as exc:
        missing(f"PostgreSQL not reachable at {_where(ADMIN_DSN)} (RUNBOOKD_TEST_PG_DSN): {exc}")
    try:
        yield admin
    finally:
        await admin.close()
