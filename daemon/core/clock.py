"""Time, injectable: the daemon uses SystemClock, tests move a ManualClock instead of sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` on the event loop after `seconds`, unless cancelled first: a wait
        that something else may end sooner, without the task cancellation of a timeout."""
        ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """Like asyncio.timeout: the body is cancelled and TimeoutError raised after `seconds`."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)


class ManualClock:
    """A clock that only moves when a test calls `advance`.

    Sleepers and timeouts fire in deadline order, and the event loop runs between them, so a
    test can say "30 seconds pass" and see exactly what the daemon would have done.
    With `autojump`, a sleep moves the clock itself (for code that only waits on retries).
    """

    def __init__(self, start: float = 1_800_000_000.0, *, autojump: bool = False) -> None:
        self._now = start
        self._autojump = autojump
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self.slept: list[float] = []
        self._others: list[Callable[[], Awaitable[bool]]] = []

    def wait_also_for(self, idle: Callable[[], Awaitable[bool]]) -> None:
        """Before time moves, let `idle` finish too: work on another thread (a store's), which
        would otherwise race the clock. `idle` returns whether it had anything to wait for."""
        self._others.append(idle)

    async def quiet(self) -> None:
        """Until the loop is quiet and every `wait_also_for` has nothing left to wait for."""
        while True:
            await settle()
            waited = False
            for idle in self._others:
                waited = await idle() or waited
            if not waited:
                return

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        handle = next(self._seq)
        heapq.heappush(self._timers, (when, handle, callback))
        return handle

    def cancel(self, handle: int) -> None:
        self._cancelled.add(handle)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return _ManualTimer(self, self.call_at(self._now + max(0.0, seconds), callback))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self._autojump:
            self._now += max(0.0, seconds)
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.call_at(self._now + max(0.0, seconds), lambda: _wake(fut))
        try:
            await fut
        finally:
            self.cancel(handle)

    @asynccontextmanager
    async def _timeout(self, seconds: float) -> AsyncIterator[object]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as scope:
            handle = self.call_at(self._now + seconds, lambda: scope.reschedule(loop.time()))
            try:
                yield scope
            finally:
                self.cancel(handle)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return self._timeout(seconds)

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer whose deadline passes, in order."""
        target = self._now + seconds
        while True:
            await self.quiet()
            if not self._timers or self._timers[0][0] > target:
                break
            when, handle, callback = heapq.heappop(self._timers)
            if handle in self._cancelled:
                self._cancelled.discard(handle)
                continue
            self._now = max(self._now, when)
            callback()
        self._now = target
        await self.quiet()


class _ManualTimer:
    __slots__ = ("_clock", "_handle")

    def __init__(self, clock: ManualClock, handle: int) -> None:
        self._clock = clock
        self._handle = handle

    def cancel(self) -> None:
        self._clock.cancel(self._handle)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def settle(rounds: int = 30) -> None:
    """Let every ready task run until the loop is quiet (bounded, for tests)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
