"""One thread that owns the store's sqlite3 connection and runs what the event loop sends it.

sqlite3 blocks, so the event loop never touches the connection: it sends callables, which the
thread runs one at a time in the order sent, and each answer comes back as a future on the
loop. One thread and one connection: SQLite takes one writer at a time anyway, and the
connection's open transaction is state that must not be shared between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# What the thread runs: it must not raise (`call` wraps what may).
Job = Callable[[sqlite3.Connection], None]


class SqliteExecutor:
    """The connection to `path` on its own thread, from `start()` until `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        # Only when a test asks (`track_idle`): jobs sent and not yet known done on the loop
        # (their answers, sent before that news, then delivered); zero: the thread is idle.
        # The daemon never pays for the extra wake-up per job.
        self._tracking = False
        self._in_flight = 0
        self._quiet = asyncio.Event()

    async def start(self) -> None:
        """Create the parent directories and connect, both on the new thread."""
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(loop, connected), name=f"sqlite {self.path.name}"
        )
        self._thread.start()
        try:
            await connected
        except BaseException:
            self._stop()
            raise

    def post(self, job: Job) -> None:
        """Run `job` on the thread after everything sent before it; nothing comes back."""
        if self._thread is None:
            raise RuntimeError(f"the connection to {self.path} is closed")
        if self._tracking:
            self._in_flight += 1
            self._quiet.clear()
            job = partial(_then, job, asyncio.get_running_loop(), self._done)
        self._jobs.put(job)

    def track_idle(self) -> None:
        """Count the jobs sent from now on, for `idle`."""
        self._tracking = True

    async def idle(self) -> bool:
        """Wait until every job sent since `track_idle` has run and its answer reached the
        loop; whether there was anything to wait for. Tests use it to let the thread catch up
        before time moves."""
        if not self._in_flight:
            return False
        await self._quiet.wait()
        return True

    def _done(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._quiet.set()

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `fn` on the thread after everything sent before it: its result or its error.

        Cancelling the future does not stop `fn`, which may already run; its answer is dropped.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.post(partial(_answer, fn, future))
        return future

    async def close(self) -> None:
        """After everything sent before: close the connection (which rolls back a transaction
        left open) and end the thread. Once it returns, no thread of the store is left."""
        if self._thread is None:
            return
        # Closed by the thread itself: a sqlite3 connection is used by the thread that made it.
        closing = self.call(lambda conn: conn.close())
        try:
            await asyncio.shield(closing)
        finally:
            self._stop()

    def _stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._jobs.put(None)
        # Nothing is left ahead of the stop (or the thread never connected): the join is the
        # thread returning, not waiting for work.
        thread.join()

    def _serve(self, loop: asyncio.AbstractEventLoop, connected: asyncio.Future[None]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit BEGIN; the store's transactions are explicit.
            conn = sqlite3.connect(self.path, isolation_level=None)
        except BaseException as exc:
            _on_loop(loop, _fail, connected, exc)
            return
        conn.row_factory = sqlite3.Row
        _on_loop(loop, _succeed, connected, None)
        try:
            while (job := self._jobs.get()) is not None:
                job(conn)
        finally:
            conn.close()  # a no-op after `close()`


def _then(
    job: Job, loop: asyncio.AbstractEventLoop, done: Callable[[], None], conn: sqlite3.Connection
) -> None:
    """On the thread: run `job`, then tell the loop it is done (after its answer)."""
    job(conn)
    _on_loop(loop, done)


def _answer(
    fn: Callable[[sqlite3.Connection], T], future: asyncio.Future[T], conn: sqlite3.Connection
) -> None:
    """On the thread: run `fn` and send its outcome to `future`'s loop."""
    loop = future.get_loop()
    try:
        result = fn(conn)
    except BaseException as exc:  # whatever it is, the caller hears of it; the thread goes on
        _on_loop(loop, _fail, future, exc)
    else:
        _on_loop(loop, _succeed, future, result)


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # A closed loop (RuntimeError): nobody waits for the answer any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():  # else cancelled by its caller meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
