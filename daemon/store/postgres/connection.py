"""The PostgreSQL store's pool of connections (asyncpg): opened with a clear error when the
server cannot be reached, and the small part of asyncpg's API the store uses, typed.

The DSN is a secret: nothing here logs it, and an error names where it points (user,
host:port, database) with any password in the server's or driver's words replaced by ***.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import asyncpg
import asyncpg.exceptions as pgerr

from daemon.clients.postgres import DsnRedactor, dsn_location
from daemon.store.protocol import StoreUnavailable

APPLICATION_NAME = "runbookd"
# A statement that takes longer is cancelled and fails its callers: a server that stopped
# answering must not hold the store's callers forever.
QUERY_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0


class Record(Protocol):
    """A result row: by column name or position."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Connection(Protocol):
    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Record]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    def is_closed(self) -> bool: ...

    def get_server_pid(self) -> int: ...

    def terminate(self) -> None: ...


class Pool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


# What a lost or refused connection raises: the socket's (OSError), a query timed out
# (TimeoutError), the driver's (InterfaceError; InternalClientError for a connection whose
# server hung up while it sat idle in the pool), the server's on connecting (class 08) and
# its goodbyes when it shuts down or an administrator ends the session (57P01-57P03).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pgerr.InterfaceError,
    pgerr.InternalClientError,
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
)

# Anything the database or the way to it may raise at a call.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, pgerr.PostgresError)


def lost(error: BaseException, conn: Connection) -> bool:
    """Whether `error` left `conn` unusable (rather than failing one statement). A parameter
    the driver could not encode (DataError) was never sent."""
    if isinstance(error, pgerr.DataError):
        return closed(conn)
    return isinstance(error, CONNECTION_ERRORS) or closed(conn)


def closed(conn: Connection) -> bool:
    try:
        return conn.is_closed()
    except pgerr.InterfaceError:  # closed, and already handed back to the pool by asyncpg
        return True


def drop_if_lost(error: BaseException, conn: Connection) -> bool:
    """If `error` shows `conn` is gone, close it, so that the pool connects afresh rather
    than hand it out again; whether it was."""
    if not lost(error, conn):
        return False
    with contextlib.suppress(pgerr.InterfaceError):  # asyncpg already did
        conn.terminate()
    return True


async def _keep_session(conn: object) -> None:
    """The pool's reset on release: nothing. The store never changes a session's state (no
    SET, LISTEN or session lock) and ends its transactions itself, so asyncpg's default reset
    would cost a round trip per release for nothing. (An open transaction is still rolled
    back by asyncpg before this runs.)"""


async def open_pool(dsn: str, *, min_size: int, max_size: int, connect_timeout: float) -> Pool:
    """A pool with `min_size` connections made (so a bad DSN or a server down fails here);
    StoreUnavailable says why it could not connect."""
    try:
        # asyncpg has no type hints: the pool is used through the `Pool` protocol.
        created = await asyncpg.create_pool(  # type: ignore[no-untyped-call]
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=QUERY_TIMEOUT,
            reset=_keep_session,
            server_settings={"application_name": APPLICATION_NAME},
        )
    except DATABASE_ERRORS as exc:
        # `from None`: the driver's own exception may quote connection parameters.
        raise StoreUnavailable(unreachable(dsn, exc, connect_timeout)) from None
    pool: Pool = created
    return pool


def unreachable(dsn: str, exc: BaseException, timeout: float) -> str:
    """One line: where, and why it could not be used, the password masked."""
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout:g}s"
    elif isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno)
    else:
        reason = str(exc) or type(exc).__name__
    return f"PostgreSQL at {dsn_location(dsn)}: {DsnRedactor(dsn)(reason)}"


async def close_pool(pool: Pool) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await pool.close()
    except TimeoutError:
        pool.terminate()


def clean(args: Sequence[Any]) -> list[Any]:
    """Statement parameters PostgreSQL's text can hold: it refuses the NUL character, which
    an alert's label or summary may carry, so NUL becomes U+FFFD (in lists too)."""
    return [_clean(a) for a in args]


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
