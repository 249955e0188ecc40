"""Notifications go out through the store: queued first, then delivered, retried with
backoff (after a restart too) and finished once. A page is never lost, and its stable
dedup_key (the incident id) means a retry never pages twice. A stop waits for the outcome of
a delivery that ended to be written: only one the store could not record goes again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import structlog

from daemon.core.clock import Clock
from daemon.core.models import RemediationResult
from daemon.pipeline.plan import Stopped
from daemon.store.protocol import OutboxItem, Store

log = structlog.get_logger("runbookd.outbox")

# One attempt at an item; `retry` is true for every attempt but the one made as it is queued.
Deliver = Callable[[OutboxItem, bool], Awaitable[RemediationResult | None]]

POLL_SECONDS = 5.0
MAX_ATTEMPTS = 12
BASE_DELAY = 30.0
MAX_DELAY = 3600.0


def backoff(attempts: int) -> float:
    """30 s, 1 min, 2 min ... capped at an hour: twelve attempts span about seven hours."""
    return float(min(MAX_DELAY, BASE_DELAY * 2 ** (attempts - 1)))


class Outbox:
    def __init__(self, store: Store, clock: Clock, deliver: Deliver) -> None:
        self.store = store
        self.clock = clock
        self.deliver = deliver
        # Items being delivered right now, so the retry loop never sends one twice at once.
        self._in_flight: set[int] = set()
        # Items finished since the retry loop read what is due: a page's delivery sends the
        # resolution waiting for it at once, and the loop must not send it again.
        self._finished: set[int] = set()
        self._stopping = False  # a drain began: no new attempt starts
        # Attempts whose delivery ended and whose outcome is being written.
        self._recording = 0
        self._recorded = asyncio.Event()
        self._recorded.set()
        self._writing: set[int] = set()  # outcomes written on after their attempt's cancel

    def stop(self) -> None:
        """A drain began: no new attempt starts; those under way end as any call does."""
        self._stopping = True

    async def recorded(self) -> None:
        """Until every delivery that ended has its outcome written. A drain waits for this
        before it cancels the pipeline's tasks, past its grace too: the delivery is done, only
        the store's write is left (which the store bounds), and a cancelled write would leave
        the item pending, so that the next daemon sends it again. When it returns, none is
        being written (the caller cancels before anything else runs)."""
        while self._recording:
            await self._recorded.wait()

    async def send(
        self, incident_id: str, remediation: str, phase: str
    ) -> RemediationResult | None:
        """Queue a notification and make the first attempt now."""
        return await self.attempt(await self.queue(incident_id, remediation, phase))

    async def queue(self, incident_id: str, remediation: str, phase: str) -> OutboxItem:
        """Queue a notification, due at once; from here on it is delivered, restart or not."""
        now = self.clock.now()
        item_id = await self.store.outbox_add(incident_id, remediation, phase, now)
        return OutboxItem(item_id, incident_id, remediation, phase, now, now, 0, "")

    async def run(self) -> None:
        """Retry what is due, for as long as the daemon runs. A store that cannot be reached
        (a database restarting) is tried again at the next round: the items wait in it, and
        a leader that stays cut off steps down by its lease, not by this loop dying."""
        unreachable = False
        while True:
            try:
                await self._retry_due()
            except Exception as exc:  # the store is down or slow
                if not unreachable:
                    log.warning(
                        "outbox: cannot reach the store", error=f"{type(exc).__name__}: {exc}"
                    )
                unreachable = True
            else:
                if unreachable:
                    log.info("outbox: the store is reachable again")
                unreachable = False
            await self.clock.sleep(POLL_SECONDS)

    async def _retry_due(self) -> None:
        self._finished.clear()
        for item in await self.store.outbox_due(self.clock.now()):
            if self._stopping:
                return  # what is left is due at the next daemon's first round
            if item.id not in self._in_flight and item.id not in self._finished:
                try:
                    await self.attempt(item, retry=True)
                except Stopped:
                    if not self._stopping:
                        raise
                    return  # a drain began as it started: the item waits in the store

    async def _unsent_page(self, item: OutboxItem) -> OutboxItem | None:
        """The unfinished page (execute) that a resolution item must wait for, if any."""
        return next(
            (
                i
                for i in await self.store.outbox_pending(item.incident_id)
                if i.phase == "execute" and i.remediation == item.remediation
            ),
            None,
        )

    async def _resolutions_after(self, page: OutboxItem) -> None:
        """The page is out: a resolution that waited for it goes now, not at the next round."""
        for item in await self.store.outbox_pending(page.incident_id):
            waiting = item.phase == "resolve" and item.remediation == page.remediation
            if waiting and item.id not in self._in_flight and not self._stopping:
                await self.attempt(item, retry=True)

    async def _record(self, item: OutboxItem, result: RemediationResult | None) -> None:
        """What one delivery attempt leaves: finished, or due again after a backoff."""
        attempts = item.attempts + 1
        if result is None or result.ok:
            await self.store.outbox_finish(item.id, "delivered")
            self._finished.add(item.id)
        elif result.recoverable and attempts < MAX_ATTEMPTS:
            # A provider's Retry-After is honoured in full, even beyond our own backoff.
            wait = max(backoff(attempts), result.retry_after or 0.0)
            next_at = self.clock.now() + wait
            await self.store.outbox_reschedule(item.id, next_at, attempts, result.detail)
        else:
            await self.store.outbox_finish(item.id, "failed")
            self._finished.add(item.id)
            log.error(
                "notification given up",
                incident=item.incident_id,
                remediation=item.remediation,
                attempts=attempts,
                detail=result.detail,
            )

    async def attempt(self, item: OutboxItem, *, retry: bool = False) -> RemediationResult | None:
        """One delivery attempt; what it leaves undone is due again after a backoff."""
        self._in_flight.add(item.id)
        try:
            if item.phase == "resolve" and (page := await self._unsent_page(item)) is not None:
                # The page itself has not gone out yet: resolve after it, not before (a
                # resolution first would leave the pager with the page open for good).
                next_at = max(page.next_at, self.clock.now()) + 1.0
                why = "waiting for the page to go out first"
                await self.store.outbox_reschedule(item.id, next_at, item.attempts, why)
                return RemediationResult(False, why, recoverable=True)
            result = await self.deliver(item, retry)
            await self._write_outcome(item, result)
            if (result is None or result.ok) and item.phase == "execute":
                await self._resolutions_after(item)
            return result
        finally:
            if item.id not in self._writing:
                self._in_flight.discard(item.id)

    async def _write_outcome(self, item: OutboxItem, result: RemediationResult | None) -> None:
        """The delivery happened: its outcome is written, even if the attempt is cancelled
        meanwhile (a drain past its grace; a rule firing again, which cancels the delivery of
        its last resolution). An item delivered but left pending would go again after a
        restart, from the next leader or from the retry loop. A drain waits (`recorded`)."""
        self._recording += 1
        self._recorded.clear()
        try:
            await self._record(item, result)
        except asyncio.CancelledError:
            # Written again to the end by a task of its own (both writes are idempotent);
            # the retry loop leaves the item alone until then.
            self._writing.add(item.id)
            writing = asyncio.create_task(self._record(item, result), name=f"outbox {item.id}")
            writing.add_done_callback(partial(self._written, item))
            raise
        except BaseException:
            self._written(item, None)
            raise
        self._written(item, None)

    def _written(self, item: OutboxItem, writing: asyncio.Task[None] | None) -> None:
        self._recording -= 1
        if not self._recording:
            self._recorded.set()
        if writing is None:
            return
        self._writing.discard(item.id)
        self._in_flight.discard(item.id)
        if not writing.cancelled() and (exc := writing.exception()) is not None:
            # Still pending in the store: the retry loop sends it again (at least once).
            log.error(
                "outbox: outcome not written, the notification may go again",
                incident=item.incident_id,
                remediation=item.remediation,
                error=f"{type(exc).__name__}: {exc}",
            )
