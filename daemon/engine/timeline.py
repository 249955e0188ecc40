"""Writes an incident's timeline: memory, store, log and live listeners, in one call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident, Step, TimelineEntry
from daemon.store.protocol import Store

Listener = Callable[[Incident, TimelineEntry], None]
log = structlog.get_logger("runbookd.timeline")

# Entries that change no state (alerts joining an open incident): in a storm they would grow
# the incident in memory without bound and be most of the log, so they are kept in the store
# only, and not logged (a log call costs more than the rest of recording them).
STORE_ONLY = frozenset({Step.ALERT})


class Recorder:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.listeners: list[Listener] = []
        # The task in a batch, and what it recorded: announced once the batch is committed.
        self._batch_task: asyncio.Task[Any] | None = None
        self._held: list[tuple[Incident, TimelineEntry]] = []
        # What the batch's task does once it is committed, and undoes if it is not.
        self._after: list[tuple[Callable[[], object], Callable[[], object]]] = []

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Everything the calling task records inside, and whatever else it writes to the
        store, is one store transaction (`Store.batch`); the entries are logged and passed to
        the listeners only after it is committed, and not at all if it is rolled back."""
        task = asyncio.current_task()
        if task is not None and self._batch_task is task:
            yield  # joins the enclosing batch
            return
        held: list[tuple[Incident, TimelineEntry]] = []
        after: list[tuple[Callable[[], object], Callable[[], object]]] = []
        try:
            async with self.store.batch():
                # Set once the store is ours: another task's batch has ended by then.
                self._batch_task, self._held, self._after = task, held, after
                try:
                    yield
                finally:
                    self._batch_task, self._held, self._after = None, [], []
        except BaseException:
            for _, undo in reversed(after):
                undo()
            raise
        for incident, entry in held:
            self._announce(incident, entry)
        for then, _ in after:
            then()

    def once_committed(self, then: Callable[[], object], undo: Callable[[], object]) -> None:
        """`then` once what the calling task wrote is committed: at once outside a batch, else
        when its batch commits; `undo` instead if the batch is rolled back."""
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            self._after.append((then, undo))
        else:
            then()

    async def open(self, incident: Incident, message: str, **data: Any) -> None:
        """Persist a new incident with its first timeline entry."""
        entry = TimelineEntry(self.clock.now(), Step.OPENED, message, data)
        incident.timeline.append(entry)
        await self.store.create_incident(incident)
        self._told(incident, entry)

    async def record(self, incident: Incident, kind: Step, message: str, **data: Any) -> None:
        entry = TimelineEntry(self.clock.now(), kind, message, data)
        if kind not in STORE_ONLY:
            incident.timeline.append(entry)
        await self.store.append_timeline(incident.id, entry)
        self._told(incident, entry)

    def _told(self, incident: Incident, entry: TimelineEntry) -> None:
        """The entry is in the store: announce it now, or when this task's batch commits."""
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            self._held.append((incident, entry))
        else:
            self._announce(incident, entry)

    def _announce(self, incident: Incident, entry: TimelineEntry) -> None:
        if entry.kind not in STORE_ONLY:
            log.info(entry.message, incident=incident.id, rule=incident.rule, step=entry.kind)
        for listener in self.listeners:
            listener(incident, entry)
