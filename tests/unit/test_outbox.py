"""The outbox's retry loop outlives a store that cannot be reached for a while: what is due
waits in the store and goes out once it answers again."""

from __future__ import annotations

import asyncio

from daemon.core.clock import ManualClock
from daemon.core.models import RemediationResult
from daemon.pipeline.outbox import POLL_SECONDS, Outbox
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
