"""The incident update loop (daemon/pipeline/updates.py) on a moved clock: updates fall due
every `update_every`, one per interval, to the public and to each channel that announced the
incident; none after the resolution, none twice across a restart, one (not a storm) after a
long pause, none from a replica that does not lead."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from daemon.core.clock import ManualClock
from daemon.core.models import UPDATE_PHASE, Incident, RemediationResult, Step
from daemon.core.updates import UpdateFacts, last_public, last_told, updates
from daemon.pipeline.updates import Updates
from daemon.store.protocol import Fenced
from remediations.base import RemediationContext, update_interval
from tests.memory_store import MemoryData, MemoryStore
from tests.world import RULE, FakePager, World, make_world

EVERY = 1800.0


class FakeChannel(FakePager):
    """A notifier that posts updates (like `slack`): `update_every`, and an `update` hook."""

    update_every: ClassVar[float] = EVERY

    def __init__(self, name: str, updates: list[bool | str] | None = None) -> None:
        super().__init__(name)
        self.updated: list[float] = []
        self.update_outcomes = updates or []

    async def update(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.updated.append(ctx.clock.now())
        outcome = self.update_outcomes.pop(0) if self.update_outcomes else True
        if outcome == "retry":
            return RemediationResult(False, "HTTP 503", recoverable=True)
        return RemediationResult(bool(outcome), "posted")


class Leaderless:
    """A replica that does not lead (or a leader paused past its lease, which learns so in
    the store's transaction)."""

    def __init__(self, *, knows: bool) -> None:
        self.knows = knows

    def may_act(self) -> bool:
        return not self.knows

    async def check(self) -> None:
        raise Fenced("another replica leads")


def world(
    *,
    public: float | None = EVERY,
    data: MemoryData | None = None,
    clock: ManualClock | None = None,
) -> tuple[World[MemoryStore], Updates, FakeChannel]:
    channel = FakeChannel("tell")
    w = make_world({"errors": RULE | {"do": ["tell"]}}, {"tell": channel}, data=data, clock=clock)
    loop = Updates(
        w.pipeline.actor,
        w.pipeline.outbox,
        incidents=lambda: w.engine.incidents.values(),
        public_every=lambda incident: public,
    )
    return w, loop, channel


async def fire(w: World[MemoryStore]) -> Incident:
    for _ in range(4):
        await w.see(0.2)
    await w.settle()
    (incident,) = w.engine.incidents.values()
    return incident


async def posted(w: World[MemoryStore], incident: Incident) -> list[UpdateFacts]:
    return [p.facts for p in updates(await w.stored(incident.id))]


async def test_an_update_falls_due_every_interval_and_only_then() -> None:
    w, loop, channel = world()
    incident = await fire(w)
    assert channel.calls == [incident.id]  # announced
    announced = w.clock.now()
    await w.clock.advance(EVERY - 1)
    assert await loop.round() == 0
    await w.clock.advance(1)
    assert await loop.round() == 1
    await w.clock.advance(0)
    assert await loop.round() == 0  # the same instant: not again
    assert loop.next_at == w.clock.now() + EVERY  # the loop sleeps until then, or a round
    assert channel.updated == [announced + EVERY]
    [facts] = await posted(w, incident)
    # The announcement told people; nobody is on it yet.
    assert facts == UpdateFacts("investigating", public=True, told=("tell",))
    stored = await w.stored(incident.id)
    # The channel's result, in the update phase, does not count as its announcement.
    [result] = [e for e in stored.timeline if e.step and e.step.phase == UPDATE_PHASE]
    assert result.kind == Step.RESULT
    assert result.data["ok"] is True
    assert not result.succeeded("tell")
    assert last_told(stored, "tell") == announced + EVERY

    for _ in range(3):
        await w.clock.advance(EVERY / 2)
        await loop.round()
    assert channel.updated == [announced + EVERY * (n + 1) for n in range(2)]
    assert len(await posted(w, incident)) == 2


async def test_no_update_after_the_resolution_nor_one_queued_before_it() -> None:
    w, loop, channel = world()
    channel.update_outcomes = ["retry"]
    incident = await fire(w)
    await w.clock.advance(EVERY)
    assert await loop.round() == 1
    await w.clock.advance(0)
    assert channel.updated == [w.clock.now()]  # failed: waiting in the outbox
    [waiting] = await w.store.outbox_pending(incident.id)
    assert waiting.phase == UPDATE_PHASE
    await w.see(0.0)  # the rule clears: resolved
    await w.settle()
    assert channel.resolved == [incident.id]
    await w.clock.advance(3 * EVERY)
    assert await loop.round() == 0
    await w.pipeline.outbox._retry_due()  # the queued update comes up: dropped, not sent
    assert len(channel.updated) == 1
    assert await w.store.outbox_pending(incident.id) == []
    assert len(await posted(w, incident)) == 1


async def test_a_restart_neither_repeats_nor_forgets_an_update() -> None:
    data, clock = MemoryData(), ManualClock()
    before, loop, _ = world(data=data, clock=clock)
    incident = await fire(before)
    await clock.advance(EVERY)
    assert await loop.round() == 1
    await before.settle()

    after, loop, channel = world(data=data, clock=clock)  # the daemon restarts
    await after.engine.restore()
    assert await loop.round() == 0  # the update just given is in the store
    await clock.advance(EVERY - 1)
    assert await loop.round() == 0
    await clock.advance(1)
    assert await loop.round() == 1
    await clock.advance(0)
    assert channel.updated == [clock.now()]
    assert len(await posted(after, incident)) == 2


async def test_after_a_long_pause_one_update_then_the_next_on_schedule() -> None:
    w, loop, channel = world()
    incident = await fire(w)
    await w.clock.advance(10 * EVERY)  # stopped for five hours
    assert await loop.round() == 1
    assert await loop.round() == 0
    await w.clock.advance(EVERY - 1)
    assert await loop.round() == 0
    await w.clock.advance(1)
    assert await loop.round() == 1
    await w.clock.advance(0)
    assert len(channel.updated) == 2
    assert len(await posted(w, incident)) == 2


async def test_a_channel_down_gets_no_second_update_while_one_waits() -> None:
    w, loop, channel = world()
    channel.update_outcomes = ["retry"] * 3
    incident = await fire(w)
    for _ in range(3):
        await w.clock.advance(EVERY)
        assert await loop.round() == 1
        await w.clock.advance(0)
    # One attempt when it was queued; the later updates found it waiting and added none.
    assert len(channel.updated) == 1
    pending = await w.store.outbox_pending(incident.id)
    assert [item.phase for item in pending] == [UPDATE_PHASE]
    assert [f.told for f in await posted(w, incident)] == [("tell",)] * 3


async def test_only_the_public_when_no_channel_announced_it() -> None:
    w, loop, channel = world()
    channel.outcomes = [False]  # the announcement failed: the channel never told anyone
    incident = await fire(w)
    await w.clock.advance(EVERY)
    assert await loop.round() == 1
    assert channel.updated == []
    [facts] = await posted(w, incident)
    assert facts == UpdateFacts("investigating", public=True, told=())
    assert last_public(await w.stored(incident.id)) == w.clock.now()


async def test_nothing_at_all_without_a_status_page_or_an_announcing_channel() -> None:
    w, loop, channel = world(public=None)
    channel.outcomes = [False]
    incident = await fire(w)
    await w.clock.advance(10 * EVERY)
    assert await loop.round() == 0
    assert await posted(w, incident) == []


async def test_the_timeline_is_not_read_when_no_update_can_fall_due() -> None:
    """No status page and no channel that updates: the round does not read the incident's
    timeline (in an alert storm, an entry per request) every time it comes round."""
    pager = FakePager("page")
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    public: list[float | None] = [None]
    loop = Updates(
        w.pipeline.actor,
        w.pipeline.outbox,
        incidents=lambda: w.engine.incidents.values(),
        public_every=lambda incident: public[0],
    )
    await fire(w)
    reads: list[str] = []
    read = w.store.get_incident

    async def counted(incident_id: str) -> Incident | None:
        reads.append(incident_id)
        return await read(incident_id)

    w.store.get_incident = counted  # type: ignore[method-assign]
    await w.clock.advance(10 * EVERY)
    assert await loop.round() == 0
    assert reads == []
    public[0] = EVERY  # the status page shows it: read, and updated
    assert await loop.round() == 1
    assert len(reads) == 1


async def test_a_replica_that_does_not_lead_posts_nothing() -> None:
    for knows in (True, False):
        w, loop, channel = world()
        incident = await fire(w)
        w.pipeline.actor.fence = Leaderless(knows=knows)
        await w.clock.advance(EVERY)
        assert await loop.round() == 0
        await w.clock.advance(0)
        assert channel.updated == []
        assert await posted(w, incident) == []
        assert await w.store.outbox_pending(incident.id) == []


def test_only_a_remediation_with_an_update_hook_has_an_interval() -> None:
    assert update_interval(FakeChannel("tell")) == EVERY
    assert update_interval(FakePager("page")) is None


async def test_the_loop_wakes_for_a_new_incident_and_keeps_time() -> None:
    w, loop, _ = world(public=2.0)
    w.pipeline.actor.recorder.listeners.append(loop.on_entry)
    task = asyncio.create_task(loop.run())
    try:
        await w.clock.advance(0)  # a round: nothing open, so it would sleep its full 10 s
        incident = await fire(w)
        await w.clock.advance(5)
        await w.settle()
        stored = await w.stored(incident.id)
        # Woken by the opening: due 2 s after it, then every 2 s, not at the next 10 s round.
        first = incident.opened_at + 2
        assert [p.ts for p in updates(stored)] == [first, first + 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
