"""Group commit and batches on PostgreSQL: how the store's calls become transactions.

Writes outside a batch are queued; one trip takes everything queued, runs it in the order it
was issued in one transaction on one connection, and commits once, so concurrent writers share
a commit (and its flush to disk: about 0.5 ms each on a small server, which would otherwise
bound the store to ~2,000 writes a second) and a key written by several tasks at once ends with
the last write issued. What is queued while a trip runs goes in the next one. A write is
acknowledged only after the COMMIT that holds it; a connection lost during a COMMIT fails its
callers, though the server may have committed it.

Every op the store sends is ONE statement, and raises only when that statement changed
nothing (a duplicate id, an unknown one), so a call that fails alone needs no undoing. A batch
that fails after writing, or a statement the server refuses, rolls the trip's transaction back;
the other units run again, without it, in a new one.

A batch holds the store for its block, as the SQLite store's does: other tasks' calls wait
until it ends (the `Store` protocol promises it, and the engine and pipeline rely on it: what
they read and decide inside a batch is not interleaved with other tasks' writes). Its writes
are queued as one unit when the block ends, unless it reads what it wrote or needs a result (an
id): then it takes a connection of its own, opens its transaction with its writes so far, runs
the rest there, and commits when the block ends. Reads outside a batch run side by side on the
pool's connections. Other processes on the database (replicas) are not held by a batch; they
see it once it commits, never half done.

Just over 400 lines: the trips, the batches and their connections share one state and
are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg.exceptions as pgerr

from daemon.clients.postgres import dsn_location
from daemon.store.postgres.connection import (
    DATABASE_ERRORS,
    Connection,
    Pool,
    close_pool,
    closed,
    drop_if_lost,
    open_pool,
    unreachable,
)
from daemon.store.postgres.migrations import migrate
from daemon.store.protocol import StoreUnavailable

T = TypeVar("T")
# One statement on a connection, and what it means (a row count checked, rows converted).
Op = Callable[[Connection], Awaitable[T]]
Outcome = tuple[BaseException | None, Any]  # (the error, or None and the result)

ROLLED_BACK = "the batch's transaction was rolled back; nothing of it is written"


class BatchRolledBack(RuntimeError):
    """A batch whose transaction is gone (a statement the server refused, a lost connection):
    nothing of it is written, and its later writes fail too."""


@dataclass(eq=False, slots=True)
class _Unit:
    """What one call (or one batch) queues for the next trip: its ops and its outcome."""

    ops: list[Op[Any]]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False, slots=True)
class _Batch:
    owner: asyncio.Task[Any] | None
    ops: list[Op[Any]] = field(default_factory=list)  # queued when the block ends
    # Its own connection and transaction, once it read or needed a result (`_eager`).
    conn: Connection | None = None
    held: AsyncExitStack | None = None  # gives the connection back
    failed: BaseException | None = None  # its transaction is gone


class GroupCommit:
    """The transactions on one PostgreSQL database, from `open()` to `close()`.

    A call cancelled while its writes wait in the queue writes nothing; once its trip has
    begun, they are committed (or fail) with the others, as a cancelled COMMIT would be.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 10.0,
        idle_limit: float = 30.0,
    ) -> None:
        self._dsn = dsn  # a secret: never logged, never in a message
        self.where = dsn_location(dsn)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        # How long a transaction of ours may sit idle before the server ends it: a replica
        # cut off mid-transaction (its network gone, not closed) would otherwise hold the
        # lease's row for as long as TCP keepalive takes, hours, and no standby could take
        # over. Set per transaction (SET LOCAL, in BEGIN's round trip), so it holds behind a
        # transaction-pooling proxy, which drops session settings.
        self._begin_statement = (
            "BEGIN; SET LOCAL idle_in_transaction_session_timeout = "
            f"'{max(1, round(idle_limit * 1000)):d}ms'"
        )
        self._pool: Pool | None = None
        # Held by a batch for its whole block, and taken by any other call to start: other
        # tasks wait until the block ends.
        self._gate = asyncio.Lock()
        self._batch: _Batch | None = None
        self._queue: list[_Unit] = []
        self._flusher: asyncio.Task[None] | None = None  # running while units are queued
        # Write transactions committed since open, for tests and the benchmark.
        self.commits = 0

    def __repr__(self) -> str:
        return f"<PostgresStore {self.where}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate; StoreUnavailable, naming where, if it cannot."""
        if self._pool is not None:
            return
        pool = await open_pool(
            self._dsn, min_size=1, max_size=self.pool_size, connect_timeout=self.connect_timeout
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self.where)
        except DATABASE_ERRORS as exc:
            await close_pool(pool)
            raise StoreUnavailable(unreachable(self._dsn, exc, self.connect_timeout)) from None
        except BaseException:
            await close_pool(pool)
            raise
        self._pool = pool

    async def close(self) -> None:
        """Waits for an open batch to end and commits everything queued, then closes the
        connections."""
        async with self._gate:
            if self._pool is None:
                return
            await self._idle()
            pool, self._pool = self._pool, None
            await close_pool(pool)

    def _require_open(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        return self._pool

    # -- group commit ------------------------------------------------------------------------

    def _enqueue(self, unit: _Unit) -> _Unit:
        self._queue.append(unit)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="postgres group commit")
        return unit

    async def _submit(self, unit: _Unit) -> Any:
        """Queue a unit once no batch holds the store, and wait for its outcome."""
        async with self._gate:
            self._require_open()  # before anything is queued
            self._enqueue(unit)
        return await unit.future

    async def _flush(self) -> None:
        """While units are queued: a trip with all of them, then the next."""
        try:
            while self._queue:
                # A caller cancelled while waiting: its unit is dropped, unwritten.
                units = [u for u in self._queue if not u.future.done()]
                self._queue = []
                if not units:
                    continue
                try:
                    outcomes = await self._trip(units)
                except asyncio.CancelledError:
                    for unit in units:
                        unit.future.cancel()
                    raise
                except Exception as failed:  # no connection, or BEGIN failed: nothing written
                    outcomes = [(failed, None)] * len(units)
                for unit, (error, value) in zip(units, outcomes, strict=True):
                    if unit.future.done():  # its caller was cancelled meanwhile
                        continue
                    if error is None:
                        unit.future.set_result(value)
                    else:
                        unit.future.set_exception(error)
        finally:
            self._flusher = None
            for unit in self._queue:  # only if cancelled: nobody else will run them
                unit.future.cancel()
            self._queue = []

    def _tries(self) -> list[bool]:
        """Whether each try is the last: as many as the pool has connections, and one. The
        connections the server closed while they sat in the pool (a restart, a proxy, an
        administrator) show at their next use, before anything of ours ran on them (at BEGIN,
        or in a read): each is dropped and the next tried, down to a new connection."""
        return [n == self.pool_size for n in range(self.pool_size + 1)]

    async def _begin(self) -> tuple[AsyncExitStack, Connection]:
        """A connection of the pool in a new transaction, and what gives it back."""
        pool = self._require_open()
        for last in self._tries():
            held = AsyncExitStack()
            conn = await held.enter_async_context(pool.acquire())
            try:
                await conn.execute(self._begin_statement)
            except BaseException as exc:
                gone = drop_if_lost(exc, conn)
                await held.aclose()
                if gone and not last:
                    continue
                raise
            return held, conn
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _trip(self, units: list[_Unit]) -> list[Outcome]:
        """The units in one transaction; after one fails, the rest again in another."""
        outcomes: list[Outcome] = [(None, None)] * len(units)
        todo = list(range(len(units)))
        held, conn = await self._begin()
        async with held:
            try:
                while todo := await self._attempt(conn, units, todo, outcomes):
                    await conn.execute(self._begin_statement)
            except BaseException as exc:
                drop_if_lost(exc, conn)
                raise
        return outcomes

    async def _attempt(
        self, conn: Connection, units: list[_Unit], todo: list[int], outcomes: list[Outcome]
    ) -> list[int]:
        """The units `todo` in the transaction begun, each outcome set; returns the units to
        run again in a new one (one failed and took this one with it)."""
        applied: list[int] = []
        for n, i in enumerate(todo):
            try:
                outcomes[i] = (None, await _run(conn, units[i].ops))
            except Exception as exc:
                outcomes[i] = (exc, None)
                if drop_if_lost(exc, conn):
                    for j in [*applied, *todo[n + 1 :]]:
                        outcomes[j] = (exc, None)
                    return []
                if len(units[i].ops) == 1 and not isinstance(exc, pgerr.PostgresError):
                    continue  # one statement that changed nothing: the transaction goes on
                await conn.execute("ROLLBACK")
                return [*applied, *todo[n + 1 :]]
            applied.append(i)
        try:
            await _commit(conn)
        except Exception as exc:
            drop_if_lost(exc, conn)
            for i in applied:
                outcomes[i] = (exc, None)
            return []
        if applied:
            self.commits += 1
        return []

    async def _idle(self) -> None:
        """Until everything queued is done (the caller holds the gate: nothing new comes)."""
        while (flusher := self._flusher) is not None:
            await asyncio.wait([flusher])

    # -- batches -----------------------------------------------------------------------------

    def _own_batch(self) -> _Batch | None:
        batch = self._batch
        return batch if batch is not None and batch.owner is asyncio.current_task() else None

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        if self._own_batch() is not None:
            yield  # joins the enclosing batch, which commits or rolls back for both
            return
        async with self._gate:
            self._require_open()  # before the block runs
            # Only this task: one it spawns inherits nothing and waits for the gate.
            batch = self._batch = _Batch(asyncio.current_task())
            try:
                yield
            except BaseException:
                self._batch = None
                await self._end(batch, commit=False)
                raise
            self._batch = None
            if batch.held is not None or batch.failed is not None:
                await self._end(batch, commit=True)
                return
            if not batch.ops:
                return
            unit = self._enqueue(_Unit(batch.ops))
        # Outside the gate: other tasks queue their units meanwhile, for the next trip.
        await unit.future

    async def _eager(self, batch: _Batch) -> Connection:
        """The batch's own connection, its transaction open with the writes so far: what it
        reads then sees them, and what it writes next runs at once (for the results)."""
        if batch.failed is not None:
            raise BatchRolledBack(ROLLED_BACK) from batch.failed
        if batch.conn is not None:
            return batch.conn
        await self._idle()  # the writes queued before the batch commit before it
        ops, batch.ops = batch.ops, []
        try:
            batch.held, conn = await self._begin()
            batch.conn = conn
            await _run(conn, ops)
        except BaseException as exc:
            # All or nothing, even if the block goes on after catching this.
            batch.failed = exc
            if batch.conn is not None:
                drop_if_lost(exc, batch.conn)
            raise
        return conn

    async def _in_batch(self, batch: _Batch, op: Op[T]) -> T:
        conn = await self._eager(batch)
        try:
            return await op(conn)
        except BaseException as exc:
            # A statement the server refused, or cut short, took the transaction with it; a
            # statement that changed nothing (a KeyError) did not.
            refused = isinstance(exc, pgerr.PostgresError)
            if drop_if_lost(exc, conn) or refused or not isinstance(exc, Exception):
                batch.failed = exc
            raise

    async def _end(self, batch: _Batch, *, commit: bool) -> None:
        """Commit (or roll back) an eager batch's transaction and give its connection back."""
        if batch.held is None:
            if commit and batch.failed is not None:
                raise BatchRolledBack(ROLLED_BACK) from batch.failed
            return
        async with batch.held:
            conn = batch.conn
            if commit and batch.failed is None and conn is not None:
                try:
                    await _commit(conn)
                except BaseException as exc:
                    drop_if_lost(exc, conn)
                    raise
                self.commits += 1
                return
            if conn is not None and not closed(conn):
                # A connection that broke, or a second cancellation, may fail this: the pool
                # then closes the connection, and the server rolls the transaction back.
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            if commit:
                raise BatchRolledBack(ROLLED_BACK) from batch.failed

    # -- what the store's calls use ----------------------------------------------------------

    async def _write(self, op: Op[Any]) -> None:
        """Committed before this returns; inside a batch, committed with it."""
        batch = self._own_batch()
        if batch is None:
            await self._submit(_Unit([op]))
        elif batch.held is not None or batch.failed is not None:
            await self._in_batch(batch, op)
        else:
            batch.ops.append(op)

    async def _write_returning(self, op: Op[T]) -> T:
        """A write whose result the caller needs now (an id)."""
        batch = self._own_batch()
        if batch is None:
            result: T = await self._submit(_Unit([op]))
            return result
        return await self._in_batch(batch, op)

    async def _read(self, op: Op[T]) -> T:
        """What is committed; inside a batch, with its own writes."""
        batch = self._own_batch()
        if batch is None:
            async with self._gate:  # after the batch open, if any
                pool = self._require_open()
        elif batch.ops or batch.held is not None or batch.failed is not None:
            return await self._in_batch(batch, op)
        else:
            pool = self._require_open()  # nothing of its own to see: read as anyone would
        # A read changes nothing: on a connection found gone it is tried again (`_tries`), not
        # after a timeout (the server is there, only slow).
        for last in self._tries():
            async with pool.acquire() as conn:
                try:
                    return await op(conn)
                except Exception as exc:
                    if not drop_if_lost(exc, conn) or last or isinstance(exc, TimeoutError):
                        raise
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _run(conn: Connection, ops: list[Op[Any]]) -> Any:
    result = None
    for op in ops:
        result = await op(conn)
    return result


async def _commit(conn: Connection) -> None:
    # COMMIT of a transaction a failed statement aborted answers ROLLBACK, without an error.
    if await conn.execute("COMMIT") != "COMMIT":
        raise BatchRolledBack(ROLLED_BACK)
