"""Updates while an incident is open: every `update_every`, the public status page and each
channel that announced the incident (a `slack` remediation that posted it) are told where it
stands, so a promised "next update" is kept even when nothing else happens.

One loop, on the leader only (fenced like every other write): for each open incident, when
the public's or a channel's next update falls due, one `update` entry on the timeline
(daemon/core/updates.py) records the stage and whom it tells, and the channels' updates are
queued in the outbox in the same transaction: a channel that is down is retried from there and
never holds the loop up. When each was last told comes from the store's timeline, not from
memory, so a restart or a failover neither repeats an update nor forgets one; after a long
pause (a stop, a database outage) what is overdue is one update, then the next on schedule.
A channel whose last update is still waiting in the outbox gets no second one: the one waiting
is rendered from the incident when it goes, so it says the latest. Resolved incidents get
none (one queued before the resolution is dropped as it comes up: the resolution says more).

Silences and maintenance windows do not stop updates: they hold back remediations and pages,
but the incident is open, the status page shows it, and the people a channel already told
are owed its progress as they are owed its resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from daemon.core.models import UPDATE_PHASE, Incident, Step, TimelineEntry
from daemon.core.streak import FailureStreak
from daemon.core.updates import UpdateFacts, last_public, last_told, stage
from daemon.pipeline.acting import Actor
from daemon.pipeline.outbox import Outbox
from daemon.pipeline.plan import Stopped
from daemon.store.protocol import Fenced, OutboxItem
from remediations.base import update_interval

log = structlog.get_logger("runbookd.updates")

POLL_SECONDS = 10.0
MIN_PAUSE = 0.5


@dataclass(frozen=True, slots=True)
class Due:
    """What an incident's update owes now: the public (status page) and these channels; and
    when the next one falls due, once these are given (None: never, as things stand)."""

    public: bool
    channels: tuple[str, ...]
    next_at: float | None = None

    def __bool__(self) -> bool:
        return self.public or bool(self.channels)


class Updates:
    def __init__(
        self,
        actor: Actor,
        outbox: Outbox,
        *,
        incidents: Callable[[], Iterable[Incident]],
        public_every: Callable[[Incident], float | None],
    ) -> None:
        self.actor = actor
        self.outbox = outbox
        self.incidents = incidents  # the engine's open incidents
        # How often the status page promises an update of the incident (None: not shown).
        self.public_every = public_every
        self.next_at: float | None = None  # the next update due, as the last round saw
        # Set by a new incident or announcement: the loop works out its next update at once.
        self._news = asyncio.Event()

    def on_entry(self, incident: Incident, entry: TimelineEntry) -> None:
        """A timeline listener (daemon/engine/timeline.py): an incident opened or a channel
        announced one, so an update falls due an interval from now, maybe before the loop's
        next round."""
        if entry.kind == Step.OPENED or entry.succeeded() is not None:
            self._news.set()

    def may_owe(self, incident: Incident) -> bool:
        """Whether an update of `incident` can fall due at all, whatever its timeline holds: the
        status page shows it, or a channel of the plan updates what it announced. When neither,
        its timeline is not read: in an alert storm it holds an entry per request."""
        if self.public_every(incident) is not None:
            return True
        plan = self.actor.plan
        return any(
            r.notifier and name in plan.configs and update_interval(r) is not None
            for name, r in plan.remediations.items()
        )

    def due(self, incident: Incident, now: float) -> Due:
        """What is due for `incident` (as the store has it) at `now`."""
        if not incident.is_open:
            return Due(False, ())
        next_at: list[float] = []

        def falls_due(last: float, every: float) -> bool:
            due = now >= last + every
            next_at.append(now + every if due else last + every)
            return due

        every = self.public_every(incident)
        public = every is not None and falls_due(last_public(incident), every)
        plan = self.actor.plan
        channels = []
        for name, remediation in plan.remediations.items():
            interval = update_interval(remediation)
            if interval is None or not remediation.notifier or name not in plan.configs:
                continue
            told = last_told(incident, name)
            if told is not None and falls_due(told, interval):
                channels.append(name)
        return Due(public, tuple(channels), min(next_at, default=None))

    async def round(self) -> int:
        """Post every update due now; the number of incidents updated. `next_at` says when
        the next one falls due."""
        actor = self.actor
        posted = 0
        self.next_at = None
        for current in list(self.incidents()):
            if actor.stopping or not actor.fence.may_act():
                return posted  # another replica leads: the updates are its own
            if not self.may_owe(current):
                continue
            stored = await actor.store.get_incident(current.id)
            if stored is None:
                continue
            due = self.due(stored, actor.clock.now())
            if due.next_at is not None:
                self.next_at = min(due.next_at, self.next_at or due.next_at)
            if due and await self._post(current, stage(stored), due):
                posted += 1
        return posted

    async def _post(self, incident: Incident, at: str, due: Due) -> bool:
        """Record the update and queue its channels' messages, in one transaction under our
        epoch; then a first delivery attempt of each, in the background."""
        actor = self.actor
        queued: list[OutboxItem] = []
        try:
            async with actor.recorder.batch():
                await actor.fence.check()
                if not incident.is_open:  # resolved while the store was read
                    return False
                waiting = {
                    item.remediation
                    for item in await actor.store.outbox_pending(incident.id)
                    if item.phase == UPDATE_PHASE
                }
                for name in due.channels:
                    if name not in waiting:
                        queued.append(await self.outbox.queue(incident.id, name, UPDATE_PHASE))
                facts = UpdateFacts(at, due.public, due.channels)
                await actor.recorder.record(incident, Step.UPDATE, _message(facts), **facts.data())
        except Fenced:
            return False  # nothing was recorded: the leader posts it
        for item in queued:
            actor.tasks.spawn(self._deliver(item), f"update {incident.id} {item.remediation}")
        return True

    async def _deliver(self, item: OutboxItem) -> None:
        # Stopped: the item stays in the outbox, delivered after the restart or by the leader.
        with contextlib.suppress(Stopped):
            if not self.actor.stopping:
                await self.outbox.attempt(item)

    async def run(self) -> None:
        """Post what falls due, for as long as this replica leads. A round that fails (the
        store restarting) is logged when it starts failing and when it works again; the
        next round tries again and, reading the timeline, owes the same updates."""
        streak = FailureStreak(log, "the incident update round", "trying again every round")
        while True:
            self._news.clear()  # what comes during the round is seen by the next
            try:
                await self.round()
            except Exception:
                streak.failed()
            else:
                streak.worked()
            with contextlib.suppress(TimeoutError):
                async with self.actor.clock.timeout(self._pause()):
                    await self._news.wait()

    def _pause(self) -> float:
        """Until the next update due, when that comes before the next round."""
        if self.next_at is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(MIN_PAUSE, self.next_at - self.actor.clock.now()))


def _message(facts: UpdateFacts) -> str:
    told = (["the status page"] if facts.public else []) + list(facts.told)
    return f"update ({facts.stage}): told {', '.join(told)}"
