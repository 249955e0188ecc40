"""Faithful local stand-ins for the services runbookd talks to, served on loopback.

Each fake implements the documented subset of a provider's API, records what it received,
and can be told to fail the next requests (429 with Retry-After, 500) to exercise retries.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from daemon.core.models import Incident


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the provider saw it: body parsed as JSON when it is JSON, else text."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    retry_after: float | None = None
    # A rate limit's wait told only by its reset time (X-RateLimit-Reset), not Retry-After.
    reset_in: float | None = None


class FailureQueue:
    """Failures to answer, in order, before the fake behaves normally again."""

    def __init__(self) -> None:
        self._pending: deque[Failure] = deque()

    def add(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        self._pending.extend(Failure(status, retry_after) for _ in range(count))

    def pop(self) -> Failure | None:
        return self._pending.popleft() if self._pending else None


async def receive(request: web.Request) -> Received:
    raw = await request.text()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return Received(request.method, request.path, dict(request.headers), body)


def retry_after_headers(failure: Failure) -> dict[str, str]:
    if failure.retry_after is None:
        return {}
    return {"Retry-After": f"{failure.retry_after:g}"}


def make_incident(**overrides: Any) -> Incident:
    """An incident as the engine would open it for "error rate > 5% for 5m"."""
    fields: dict[str, Any] = {
        "id": "inc-20270115-0001",
        "rule": "high_error_rate",
        "check": "error_rate",
        "severity": "critical",
        "summary": "Error rate 7.2% above 5% for 5m",
        "opened_at": 1_800_000_000.0,
        "trigger": {"value": 0.072, "threshold": 0.05},
    }
    fields.update(overrides)
    return Incident(**fields)
