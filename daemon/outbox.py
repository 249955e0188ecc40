"""Notifications go out through the store: queued first, then delivered, retried with
backoff (after a restart too) and finished once. A page is never lost, and its stable
dedup_key (the incident id) means a retry never pages twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from daemon.clock import Clock
from daemon.models import RemediationResult
from daemon.store import OutboxItem, Store

log = structlog.get_logger("runbookd.outbox")

Deliver = Callable[[OutboxItem], Awaitable[RemediationResult | None]]

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

    async def send(
        self, incident_id: str, remediation: str, phase: str
    ) -> RemediationResult | None:
        """Queue a notification and make the first attempt now."""
        now = self.clock.now()
        item_id = await self.store.outbox_add(incident_id, remediation, phase, now)
        item = OutboxItem(item_id, incident_id, remediation, phase, now, now, 0, "")
        return await self._attempt(item)

    async def run(self) -> None:
        """Retry what is due, for as long as the daemon runs."""
        while True:
            for item in await self.store.outbox_due(self.clock.now()):
                if item.id not in self._in_flight:
                    await self._attempt(item)
            await self.clock.sleep(POLL_SECONDS)

    async def _attempt(self, item: OutboxItem) -> RemediationResult | None:
        self._in_flight.add(item.id)
        try:
            result = await self.deliver(item)
            attempts = item.attempts + 1
            if result is None or result.ok:
                await self.store.outbox_finish(item.id, "delivered")
            elif result.recoverable and attempts < MAX_ATTEMPTS:
                next_at = self.clock.now() + backoff(attempts)
                await self.store.outbox_reschedule(item.id, next_at, attempts, result.detail)
            else:
                await self.store.outbox_finish(item.id, "failed")
                log.error(
                    "notification given up",
                    incident=item.incident_id,
                    remediation=item.remediation,
                    attempts=attempts,
                    detail=result.detail,
                )
            return result
        finally:
            self._in_flight.discard(item.id)
