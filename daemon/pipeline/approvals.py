"""Operators approve or reject a waiting step; an unanswered request times out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from daemon.core.clock import Clock


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Pending:
    incident_id: str
    remediation: str
    asked_at: float
    deadline: float


class Approvals:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pending: dict[str, Pending] = {}
        self._futures: dict[str, asyncio.Future[Decision | None]] = {}

    async def wait(
        self, incident_id: str, remediation: str, asked_at: float, deadline: float
    ) -> Decision | None:
        """The operator's decision, or None when none came by `deadline` (a request asked
        before a restart keeps its time)."""
        if deadline <= self.clock.now():
            return None
        future: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self.pending[incident_id] = Pending(incident_id, remediation, asked_at, deadline)
        self._futures[incident_id] = future
        try:
            async with self.clock.timeout(max(0.0, deadline - self.clock.now())):
                return await future
        except TimeoutError:
            return None
        finally:
            self.pending.pop(incident_id, None)
            self._futures.pop(incident_id, None)

    def withdraw(self, incident_id: str) -> None:
        """The incident resolved: its request ends unanswered; a late answer finds nothing."""
        future = self._futures.get(incident_id)
        if future is not None and not future.done():
            future.set_result(None)

    def decide(self, incident_id: str, decision: Decision) -> bool:
        """Answer a waiting step; False when this incident has nothing waiting."""
        future = self._futures.get(incident_id)
        if future is None or future.done():
            return False
        future.set_result(decision)
        return True
