"""Writes an incident's timeline: memory, store, log and live listeners, in one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.models import Incident, TimelineEntry
from daemon.store import Store

Listener = Callable[[Incident, TimelineEntry], None]
log = structlog.get_logger("runbookd.timeline")


class Recorder:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.listeners: list[Listener] = []

    async def open(self, incident: Incident, message: str, **data: Any) -> None:
        """Persist a new incident with its first timeline entry."""
        entry = TimelineEntry(self.clock.now(), "opened", message, data)
        incident.timeline.append(entry)
        await self.store.create_incident(incident)
        self._announce(incident, entry)

    async def record(self, incident: Incident, kind: str, message: str, **data: Any) -> None:
        entry = TimelineEntry(self.clock.now(), kind, message, data)
        incident.timeline.append(entry)
        await self.store.append_timeline(incident.id, entry)
        self._announce(incident, entry)

    def _announce(self, incident: Incident, entry: TimelineEntry) -> None:
        log.info(entry.message, incident=incident.id, rule=incident.rule, step=entry.kind)
        for listener in self.listeners:
            listener(incident, entry)
