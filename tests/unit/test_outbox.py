"""The outbox's retry loop outlives a store that cannot be reached for a while: what is due
waits in the store and goes out once it answers again."""

from __future__ import annotations

import asyncio

from daemon.core.clock import ManualClock
from daemon.core.models import RemediationResult
from daemon.pipeline.outbox import POLL_SECONDS, Outbox
from daemon.pipeline.plan import Stopped
from daemon.store.protocol import OutboxItem
from tests.memory_store import MemoryData, MemoryStore


async def test_the_retry_loop_rides_out_a_store_that_cannot_be_reached() -> None:
    clock, store = ManualClock(), MemoryStore(MemoryData())
    delivered: list[int] = []

    async def deliver(item: OutboxItem, retry: bool) -> RemediationResult | None:
        delivered.append(item.id)
        return None

    outbox = Outbox(store, clock, deliver)
    item = await outbox.queue("inc-1", "page", "execute")
    due = store.outbox_due
    down = 2  # the next two rounds find the database restarting

    async def restarting(now: float) -> list[OutboxItem]:
        nonlocal down
        if down:
            down -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        return await due(now)

    store.outbox_due = restarting  # type: ignore[method-assign]
    loop = asyncio.create_task(outbox.run())
    try:
        await clock.quiet()
        await clock.advance(POLL_SECONDS)
        assert (loop.done(), delivered) == (False, [])
        await clock.advance(POLL_SECONDS)
        assert delivered == [item.id]
        assert await store.outbox_pending("inc-1") == []
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


class SlowFinish:
    """The store's write of an outcome waits until released: the window in which a cancel
    (a drain, a rule firing again) used to leave a delivered item pending."""

    def __init__(self, store: MemoryStore) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self._finish = store.outbox_finish
        store.outbox_finish = self.finish  # type: ignore[method-assign]

    async def finish(self, item_id: int, outcome: str) -> None:
        self.started.set()
        await self.release.wait()
        await self._finish(item_id, outcome)


async def test_a_cancelled_attempt_still_writes_its_outcome_and_is_not_sent_again() -> None:
    clock, store = ManualClock(), MemoryStore(MemoryData())
    delivered: list[int] = []

    async def deliver(item: OutboxItem, retry: bool) -> RemediationResult | None:
        delivered.append(item.id)
        return None

    outbox = Outbox(store, clock, deliver)
    item = await outbox.queue("inc-1", "page", "resolve")
    slow = SlowFinish(store)
    attempt = asyncio.create_task(outbox.attempt(item))
    await slow.started.wait()
    attempt.cancel()  # as `Notices.cancel_undo` does when the rule fires again
    await asyncio.gather(attempt, return_exceptions=True)
    assert attempt.cancelled()
    # The write goes on: until it ends, the retry loop leaves the item alone.
    loop = asyncio.create_task(outbox.run())
    try:
        await clock.quiet()
        assert delivered == [item.id]
        slow.release.set()
        await outbox.recorded()
        assert await store.outbox_pending("inc-1") == []
        await clock.advance(POLL_SECONDS)
        assert delivered == [item.id]  # delivered once, and never again
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_drain_waits_for_the_outcome_being_written() -> None:
    clock, store = ManualClock(), MemoryStore(MemoryData())

    async def deliver(item: OutboxItem, retry: bool) -> RemediationResult | None:
        return None

    outbox = Outbox(store, clock, deliver)
    item = await outbox.queue("inc-1", "page", "execute")
    slow = SlowFinish(store)
    attempt = asyncio.create_task(outbox.attempt(item))
    await slow.started.wait()
    outbox.stop()
    recorded = asyncio.create_task(outbox.recorded())
    await asyncio.sleep(0)
    assert not recorded.done()  # the write is still going
    attempt.cancel()  # the drain's grace ran out: the pipeline's tasks are cancelled
    await asyncio.gather(attempt, return_exceptions=True)
    assert not recorded.done()
    slow.release.set()
    await recorded
    assert await store.outbox_pending("inc-1") == []


async def test_a_retry_that_a_drain_stops_leaves_the_item_waiting_quietly() -> None:
    clock, store = ManualClock(), MemoryStore(MemoryData())
    attempts: list[int] = []
    outbox: Outbox

    async def deliver(item: OutboxItem, retry: bool) -> RemediationResult | None:
        attempts.append(item.id)
        outbox.stop()  # the drain began as this retry started
        raise Stopped()

    outbox = Outbox(store, clock, deliver)
    first = await outbox.queue("inc-1", "page", "execute")
    await outbox.queue("inc-2", "page", "execute")
    loop = asyncio.create_task(outbox.run())
    try:
        await clock.quiet()
        assert not loop.done()  # no store outage logged, no crash: the loop sleeps on
        assert attempts == [first.id]  # and starts nothing more once the drain began
        assert len(await store.outbox_due(clock.now())) == 2  # both wait for the next daemon
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
