"""Group commit: how the SQLite store's calls become transactions on its connection's thread.

Calls queue their statements, and one trip to the thread (daemon/store/sqlite/executor.py)
runs everything queued as one transaction (a savepoint per call or batch, so one that fails is
rolled back alone), then the queued reads. What is queued while a trip runs goes in the next
one, so concurrent writers share commits and a trip costs one thread hop, not one per
statement. A write is acknowledged only after the transaction that holds it commits; a failed
commit reaches every caller in it.

WAL with `synchronous=NORMAL`: a crash of the daemon loses nothing committed; a power loss
may lose the last few transactions but never corrupts the file. Readers never block the writer.

`GroupCommit` is the base of `SqliteStore` (daemon/store/sqlite/repository.py), which says
what to write and read through `_write`, `_write_returning` and `_read`. A base class rather
than a member, so that the store's tests can reach its trips (`_on_thread`, `_queue`,
`_flusher`) and the model-based tests can replace the hop to the thread in one place.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from daemon.store.sqlite import transactions
from daemon.store.sqlite.executor import SqliteExecutor
from daemon.store.sqlite.migrations import migrate
from daemon.store.sqlite.transactions import Op, Outcome

log = structlog.get_logger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


def _prepare(path: Path, conn: sqlite3.Connection) -> str | None:
    """On the thread, once connected: the connection's settings and the schema. Returns the
    journal mode SQLite took."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn, path)
    return row[0] if row else None


def _optimize(conn: sqlite3.Connection) -> None:
    # Recommended before closing a connection: keeps the query planner's stats fresh.
    conn.execute("PRAGMA optimize")


@dataclass(eq=False, slots=True)
class _Unit:
    """What one call (or one batch) queues for the next trip: its ops and where the outcome
    goes. A read runs after the trip's commit, so it sees every write queued before it."""

    ops: list[Op[Any]]
    read: bool = False
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False, slots=True)
class _Batch:
    owner: asyncio.Task[Any] | None
    ops: list[Op[Any]] = field(default_factory=list)  # queued when the block ends
    # Its transaction is open on the connection: its writes run at once (see `_go_eager`).
    eager: bool = False


class GroupCommit:
    """The transactions on one SQLite file, from `open()` to `close()`.

    A call cancelled while its writes wait in the queue writes nothing; once its trip has
    begun, they are committed (or fail) with the others, as a cancelled COMMIT would be.

    Inside a batch, writes are queued when the block ends, so their errors (a duplicate id,
    an unknown one) are raised there. A read, or a write whose result it needs (an id), opens
    the batch's transaction instead: its writes so far and the rest then run at once, and the
    batch commits alone when it ends. The engine's batches do neither.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: SqliteExecutor | None = None
        # Held by a batch for its whole block, and taken by any other call to queue its unit:
        # other tasks wait until the block ends, and nothing joins the queue meanwhile.
        self._gate = asyncio.Lock()
        self._batch: _Batch | None = None
        self._queue: list[_Unit] = []
        self._flusher: asyncio.Task[None] | None = None  # running while units are queued
        # Write transactions committed since open, for tests and diagnostics; counted on the
        # connection's thread right after each COMMIT.
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        db = SqliteExecutor(self.path)
        await db.start()
        try:
            mode = await db.call(partial(_prepare, self.path))
        except BaseException:
            await db.close()
            raise
        if mode != "wal":
            # e.g. a filesystem without shared memory: slower, still correct, so go on.
            log.warning("sqlite_wal_unavailable", path=str(self.path), journal_mode=mode)
        self._db = db

    async def close(self) -> None:
        """Waits for an open batch to end and commits everything queued, then closes the
        connection and ends its thread."""
        async with self._gate:
            if self._db is None:
                return
            await self._idle()
            db, self._db = self._db, None
            try:
                await db.call(_optimize)
            finally:
                await db.close()

    def track_idle(self) -> None:
        """From now on `idle` can wait for the thread (tests; see SqliteExecutor.idle)."""
        self._conn.track_idle()

    async def idle(self) -> bool:
        """Wait until the thread has done all it was sent since `track_idle`."""
        return self._db is not None and await self._db.idle()

    @property
    def _conn(self) -> SqliteExecutor:
        self._require_open()
        assert self._db is not None
        return self._db

    def _require_open(self) -> None:
        if self._db is None:
            raise RuntimeError("SqliteStore is not open")

    async def _on_thread(self, fn: Op[T]) -> T:
        """Run `fn` on the connection's thread, after everything sent there before it."""
        return await self._conn.call(fn)

    # -- group commit ------------------------------------------------------------------------

    def _enqueue(self, unit: _Unit) -> _Unit:
        self._queue.append(unit)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="sqlite group commit")
        return unit

    async def _submit(self, unit: _Unit) -> Any:
        """Queue a unit once no batch holds the store, and wait for its outcome."""
        async with self._gate:
            self._require_open()  # before anything is queued
            self._enqueue(unit)
        return await unit.future

    async def _flush(self) -> None:
        """While units are queued: a trip to the thread with all of them, then the next."""
        try:
            while self._queue:
                # A cancelled caller's future is cancelled: its unit is dropped, unwritten.
                units = [u for u in self._queue if not u.future.done()]
                self._queue = []
                writes = [u for u in units if not u.read]
                reads = [u for u in units if u.read]
                if not units:
                    continue
                try:
                    outcomes = await self._on_thread(partial(self._trip, writes, reads))
                except asyncio.CancelledError:
                    for unit in units:
                        unit.future.cancel()
                    raise
                except Exception as failed:  # the trip never ran, e.g. the connection is gone
                    outcomes = [(failed, None)] * len(units)
                for unit, (error, value) in zip([*writes, *reads], outcomes, strict=True):
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

    def _trip(
        self, writes: list[_Unit], reads: list[_Unit], conn: sqlite3.Connection
    ) -> list[Outcome]:
        """On the thread: the writes committed together, then the reads."""
        outcomes: list[Outcome] = []
        if writes:
            outcomes, commits = transactions.commit_together(conn, [u.ops for u in writes])
            self.commits += commits
        for unit in reads:
            try:
                outcomes.append((None, unit.ops[0](conn)))
            except Exception as exc:
                outcomes.append((exc, None))
        return outcomes

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
                if batch.eager:
                    # Sent to the thread before the gate opens, and shielded: a cancelled task
                    # cannot leave the transaction open under the next trip.
                    await asyncio.shield(
                        asyncio.ensure_future(self._on_thread(transactions.rollback))
                    )
                raise
            self._batch = None
            if batch.eager:
                await self._on_thread(self._commit_open)
                return
            if not batch.ops:
                return
            unit = self._enqueue(_Unit(batch.ops))
        # Outside the gate: other tasks queue their units meanwhile, for the next trip.
        await unit.future

    async def _go_eager(self, batch: _Batch) -> None:
        """Open the batch's transaction, with its writes so far: what it reads then sees them,
        and what it writes next runs at once (for the results, e.g. an id)."""
        if batch.eager:
            return
        await self._idle()  # no trip may run BEGIN under the batch's transaction
        ops, batch.ops = batch.ops, []
        batch.eager = True  # set first: cancelled during the trip, the exit rolls it back
        await self._on_thread(partial(transactions.begin, ops))

    def _commit_open(self, conn: sqlite3.Connection) -> None:
        """On the thread: commit a batch's own transaction (counted there, as trips are)."""
        transactions.commit(conn)
        self.commits += 1

    async def _write(self, op: Op[Any]) -> None:
        """Committed before this returns; inside a batch, committed with it."""
        batch = self._own_batch()
        if batch is None:
            await self._submit(_Unit([op]))
        elif batch.eager:
            await self._on_thread(partial(transactions.in_open_transaction, op))
        else:
            batch.ops.append(op)

    async def _write_returning(self, op: Op[T]) -> T:
        """A write whose result the caller needs now (an id)."""
        batch = self._own_batch()
        if batch is None:
            result: T = await self._submit(_Unit([op]))
            return result
        await self._go_eager(batch)
        return await self._on_thread(partial(transactions.in_open_transaction, op))

    async def _read(self, fn: Op[T]) -> T:
        """What is committed, after every write queued before; inside a batch, with its own
        writes."""
        batch = self._own_batch()
        if batch is None:
            result: T = await self._submit(_Unit([fn], read=True))
            return result
        if batch.ops:
            await self._go_eager(batch)
        if batch.eager:
            return await self._on_thread(fn)
        # Nothing of its own to see: read as anyone would (the batch holds the gate).
        result = await self._enqueue(_Unit([fn], read=True)).future
        return result

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        args = tuple(params)
        rows: list[sqlite3.Row] = await self._read(lambda c: c.execute(sql, args).fetchall())
        return rows
