"""A restart or a crash never loses or repeats a step: plans resume where their progress is,
on the real SQLite store. Pages are never held by another incident's plan. A drain waits for
running actions only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from daemon.core.clock import ManualClock, settle
from daemon.core.models import UPDATE_PHASE, Incident, RemediationResult, TimelineEntry
from daemon.pipeline.approvals import Decision
from daemon.pipeline.progress import PLANS
from daemon.pipeline.silences import Silence
from daemon.pipeline.updates import Updates
from daemon.store.sqlite.repository import SqliteStore
from remediations.base import RemediationContext
from tests.world import RULE, FakeAction, FakePager, World, build_world

Rules = dict[str, dict[str, Any]]


class Daemonish:
    """One world after another on the same SQLite file and clock, as restarts make them."""

    def __init__(self, path: Path, rules: Rules, **options: Any) -> None:
        self.path = path
        self.rules = rules
        self.options = options
        self.clock = ManualClock()
        self.world: World[SqliteStore] | None = None

    @property
    def w(self) -> World[SqliteStore]:
        assert self.world is not None
        return self.world

    async def start(self, actions: dict[str, FakeAction]) -> World[SqliteStore]:
        store = SqliteStore(self.path)
        await store.open()
        w = build_world(store, self.rules, actions, clock=self.clock, **self.options)
        await w.engine.restore()
        await w.pipeline.recover(w.engine.incidents.values(), w.engine_rules())
        w.pipeline.start_outbox()
        self.world = w
        return w

    async def stop(self, grace: float = 5.0) -> bool:
        """SIGTERM: drain, close."""
        finished = await self.w.pipeline.drain(grace)
        await self.w.store.close()
        return finished

    async def crash(self) -> None:
        """kill -9: every task of the process stops where it is; only what was committed
        survives."""
        pipeline = self.w.pipeline
        tasks = [*pipeline._tasks, *([pipeline._outbox_task] if pipeline._outbox_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.w.store.close()

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        got = await self.w.store.get_incident(incident_id)
        assert got is not None
        return got.timeline


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Callable[..., Daemonish]]:
    made: list[Daemonish] = []

    def make(rules: Rules, **options: Any) -> Daemonish:
        made.append(Daemonish(tmp_path / f"d{len(made)}" / "runbookd.db", rules, **options))
        return made[-1]

    yield make
    for d in made:
        if d.world is not None and d.world.store._db is not None:
            await d.crash()


async def fire(w: World[Any], check: str = "app", n: int = 4) -> None:
    for _ in range(n):
        await w.see(0.2, check=check)


async def until_saved(w: World[SqliteStore], incident_id: str, stage: str) -> None:
    async def stage_now() -> str | None:
        value = await w.store.get_value(PLANS, incident_id)
        return value["stage"] if isinstance(value, dict) else None

    for _ in range(500):
        if await stage_now() == stage:
            await settle()
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the plan of {incident_id} never reached {stage}")


def kinds(timeline: list[TimelineEntry]) -> list[str]:
    return [e.kind for e in timeline]


# -- A: a page is never held by another incident's plan -----------------------------------------


async def test_a_second_incident_pages_while_the_first_one_verifies(
    daemons: Callable[..., Daemonish],
) -> None:
    """The README walkthrough: high_error_rate rolls back, pages and verifies; meanwhile
    `down` opens and pages the same pager. Two incidents, two pages."""
    rules = {
        "high_error_rate": RULE | {"do": ["rollback", "page"], "verify_within": "40s"},
        "down": {"when": "db.error_ratio > 5%", "for": "3s", "do": ["page"]},
    }
    d = daemons(rules, cooldowns={"page": "5m", "rollback": "10m"})
    pager = FakePager("page")
    w = await d.start({"rollback": FakeAction("rollback"), "page": pager})
    await fire(w)
    first = w.opened[0]
    await w.settle_until(lambda: "verify" in kinds(first.timeline))
    await fire(w, "db")
    second = w.opened[1].id
    await w.settle_until(lambda: len(pager.calls) == 2)
    assert pager.calls == [first.id, second]
    assert not [e for e in await d.timeline(second) if e.kind == "skipped"]
    await d.stop()


async def test_a_second_episode_of_one_rule_pages_within_the_pager_cooldown(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"do": ["page"]}}, cooldowns={"page": "5m"})
    pager = FakePager("page")
    w = await d.start({"page": pager})
    await fire(w)
    await w.see(0.0)
    await fire(w)  # a minute later: a new incident is news
    await w.settle_until(lambda: len(pager.calls) == 2)
    assert pager.calls == [i.id for i in w.opened]
    await d.stop()


# -- B: verification and approval outlive a restart and a crash ----------------------------------


@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_verification_resumes_after_a_restart(
    daemons: Callable[..., Daemonish], how: str
) -> None:
    rule = RULE | {"verify_within": "40s", "escalate": ["page"]}
    d = daemons({"errors": rule})
    w = await d.start({"rollback": FakeAction("rollback"), "page": FakePager("page")})
    await fire(w)
    incident = w.opened[0].id
    await until_saved(w, incident, "verify")
    acted_at = d.clock.now()
    await d.clock.advance(10)
    await (d.stop() if how == "restart" else d.crash())

    pager = FakePager("page")
    rollback = FakeAction("rollback")
    w = await d.start({"rollback": rollback, "page": pager})
    await d.clock.advance(29)
    await w.settle_until(lambda: True)
    assert pager.calls == []
    await d.clock.advance(1)  # 40 s after the remediation, as without the restart
    await w.settle_until(lambda: pager.calls == [incident])
    assert d.clock.now() == acted_at + 40
    assert rollback.calls == []  # never repeated
    timeline = await d.timeline(incident)
    escalate = [e.message for e in timeline if e.kind == "escalate"]
    assert escalate == ["still firing 40s after remediation: escalating to page"]
    assert await w.store.get_value(PLANS, incident) is None  # the plan is over
    await d.stop()


async def test_a_verification_resumed_after_a_restart_is_verified_when_the_rule_clears(
    daemons: Callable[..., Daemonish],
) -> None:
    rule = RULE | {"verify_within": "40s", "escalate": ["page"]}
    d = daemons({"errors": rule})
    w = await d.start({"rollback": FakeAction("rollback"), "page": FakePager("page")})
    await fire(w)
    incident = w.opened[0].id
    await until_saved(w, incident, "verify")
    await d.stop()
    pager = FakePager("page")
    w = await d.start({"rollback": FakeAction("rollback"), "page": pager})
    await w.see(0.0, dt=5)
    await w.settle_until(lambda: incident not in w.pipeline.runs)
    assert "verified" in kinds(await d.timeline(incident))
    assert pager.calls == []
    assert await w.pipeline.breaker.state("errors") == {"failures": 0, "open": False}
    await d.stop()


@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_a_step_waiting_for_approval_waits_on_after_a_restart(
    daemons: Callable[..., Daemonish], how: str
) -> None:
    rule = RULE | {"do": ["flush", "page"]}
    d = daemons({"errors": rule}, configs={"flush": {"approval_timeout": "10m"}})
    w = await d.start({"flush": FakeAction("flush", destructive=True), "page": FakePager("page")})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: bool(w.pipeline.approvals.pending))
    (asked,) = w.pipeline.approvals.pending.values()
    await d.clock.advance(60)
    await (d.stop() if how == "restart" else d.crash())

    flush, pager = FakeAction("flush", destructive=True), FakePager("page")
    w = await d.start({"flush": flush, "page": pager})
    await w.settle_until(lambda: bool(w.pipeline.approvals.pending))
    (pending,) = w.pipeline.approvals.pending.values()
    assert (pending.remediation, pending.asked_at, pending.deadline) == (
        "flush",
        asked.asked_at,
        asked.deadline,
    )
    assert w.pipeline.approvals.decide(incident, Decision(True, "ana", "cache is corrupt"))
    await w.settle_until(lambda: pager.calls == [incident])
    assert flush.calls == [incident]
    timeline = kinds(await d.timeline(incident))
    assert timeline.count("approval") == 1  # asked once, not again after the restart
    await d.stop()


async def test_an_approval_deadline_passed_while_down_escalates_at_start(
    daemons: Callable[..., Daemonish],
) -> None:
    rule = RULE | {"do": ["flush"], "escalate": ["page"]}
    d = daemons({"errors": rule}, configs={"flush": {"approval_timeout": "10m"}})
    w = await d.start({"flush": FakeAction("flush", destructive=True), "page": FakePager("page")})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: bool(w.pipeline.approvals.pending))
    await d.stop()
    await d.clock.advance(3600)  # down for an hour
    flush, pager = FakeAction("flush", destructive=True), FakePager("page")
    w = await d.start({"flush": flush, "page": pager})
    await w.settle_until(lambda: pager.calls == [incident])
    assert flush.calls == []
    assert any("no approval within 600s" in e.message for e in await d.timeline(incident))
    await d.stop()


async def test_a_step_that_finished_just_before_a_crash_is_not_run_again(
    daemons: Callable[..., Daemonish],
) -> None:
    rule = RULE | {"do": ["rollback", "purge"]}
    d = daemons({"errors": rule})
    purge = FakeAction("purge", hang=True)
    rollback = FakeAction("rollback")
    w = await d.start({"rollback": rollback, "purge": purge})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: bool(purge.calls))
    await d.crash()  # purge was running; rollback had finished
    rollback, purge = FakeAction("rollback"), FakeAction("purge")
    w = await d.start({"rollback": rollback, "purge": purge})
    await w.settle_until(lambda: incident not in w.pipeline.runs)
    assert rollback.calls == purge.calls == []
    timeline = await d.timeline(incident)
    assert [e.message for e in timeline if e.kind == "escalate"] == [
        "purge was interrupted; no escalation configured"
    ]
    await d.stop()


async def test_an_incident_whose_plan_never_began_starts_it_after_a_crash(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"do": ["page"]}})
    w = await d.start({"page": FakePager("page")})
    w.pipeline.start = lambda incident, rule: None  # type: ignore[method-assign]  # crashes first
    await fire(w)
    incident = w.opened[0].id
    await d.crash()
    pager = FakePager("page")
    w = await d.start({"page": pager})
    await w.settle_until(lambda: pager.calls == [incident])
    await d.stop()


# -- G: a drain waits for running actions, not for verifications ---------------------------------


async def test_sigterm_does_not_wait_out_a_verification(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"verify_within": "10m"}})
    w = await d.start({"rollback": FakeAction("rollback")})
    await fire(w)
    incident = w.opened[0].id
    await until_saved(w, incident, "verify")
    drain = asyncio.create_task(w.pipeline.drain(grace=30))
    await settle()
    assert drain.done()  # no clock moved, no grace waited
    assert drain.result() is True
    assert (await w.store.get_value(PLANS, incident))["stage"] == "verify"
    await w.store.close()


async def test_sigterm_waits_for_a_running_action_and_keeps_its_result(
    daemons: Callable[..., Daemonish],
) -> None:
    rule = RULE | {"do": ["rollback", "purge"]}
    d = daemons({"errors": rule})
    rollback, purge = FakeAction("rollback", hang=True), FakeAction("purge")
    w = await d.start({"rollback": rollback, "purge": purge})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: bool(rollback.calls))
    drain = asyncio.create_task(w.pipeline.drain(grace=30))
    await settle()
    assert not drain.done()
    rollback.release.set()
    assert await drain is True
    assert purge.calls == []  # no new step starts while stopping
    assert kinds(await d.timeline(incident))[-1] == "result"
    await w.store.close()
    # after the restart, the plan goes on with the next step
    purge = FakeAction("purge")
    w = await d.start({"rollback": FakeAction("rollback"), "purge": purge})
    await w.settle_until(lambda: purge.calls == [incident])
    await d.stop()


class HangingChannel(FakePager):
    """A channel that posts updates (like `slack`, every second) and answers one only when
    released: a delivery still in flight as the daemon stops."""

    update_every: ClassVar[float] = 1.0

    def __init__(self, name: str, *, hang: bool = False) -> None:
        super().__init__(name, hang=hang)
        self.updated: list[float] = []

    async def update(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.updated.append(ctx.clock.now())
        if self.hang:
            await self.release.wait()
        return RemediationResult(True, "posted")


def update_loop(w: World[SqliteStore]) -> Updates:
    return Updates(
        w.pipeline.actor,
        w.pipeline.outbox,
        incidents=lambda: w.engine.incidents.values(),
        public_every=lambda incident: None,
    )


async def answered_while_draining(
    w: World[SqliteStore], release: asyncio.Event, incident: str
) -> None:
    """The delivery in flight answers (`release`) while the daemon stops: the drain waits for
    its outcome to be written, so nothing is left in the outbox to send again."""
    drain = asyncio.create_task(w.pipeline.drain(grace=30))
    await settle()
    assert not drain.done()
    release.set()
    assert await drain is True
    assert await w.store.outbox_pending(incident) == []
    await w.store.close()


async def test_an_update_delivered_while_stopping_is_not_posted_again_after_the_restart(
    daemons: Callable[..., Daemonish],
) -> None:
    """Found under load (a graceful handover): the update's post answered during the drain,
    which then cancelled the task still marking its outbox item delivered. The item stayed
    pending and the next daemon posted the same update again."""
    d = daemons({"errors": RULE | {"do": ["tell"]}})
    channel = HangingChannel("tell")
    w = await d.start({"tell": channel})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: channel.calls == [incident])  # announced
    channel.hang = True
    await w.clock.advance(1.0)
    assert await update_loop(w).round() == 1
    await w.settle_until(lambda: bool(channel.updated))  # the post is in flight
    await answered_while_draining(w, channel.release, incident)
    after = HangingChannel("tell")
    w = await d.start({"tell": after})
    await w.settle_until(lambda: True)  # the outbox's first round, at start
    assert after.updated == []
    results = [e for e in await d.timeline(incident) if e.step and e.step.phase == UPDATE_PHASE]
    assert [e.kind for e in results] == ["result"]  # told once
    await d.stop()


async def test_a_page_delivered_while_stopping_is_not_sent_again_after_the_restart(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"do": ["page"]}})
    pager = FakePager("page", hang=True)
    w = await d.start({"page": pager})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: pager.calls == [incident])  # the page is in flight
    await answered_while_draining(w, pager.release, incident)
    after = FakePager("page")
    w = await d.start({"page": after})
    await w.settle_until(lambda: True)
    assert after.calls == []
    await d.stop()


async def test_a_retry_in_flight_when_stopping_gets_the_grace_and_is_not_sent_again(
    daemons: Callable[..., Daemonish],
) -> None:
    """The outbox's loop used to be cancelled first thing in a drain: a retry under way was
    cut off mid-call (perhaps delivered, never recorded) and went again after the restart."""
    d = daemons({"errors": RULE | {"do": ["page"]}})
    pager = FakePager("page", outcomes=["retry"])
    w = await d.start({"page": pager})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: "queued" in kinds(w.opened[0].timeline))
    pager.hang = True
    await w.advance_until(lambda: len(pager.calls) == 2, step=5, limit=40)  # the retry
    await answered_while_draining(w, pager.release, incident)
    after = FakePager("page")
    w = await d.start({"page": after})
    await w.settle_until(lambda: True)
    assert after.calls == []
    await d.stop()


async def test_a_delivery_whose_outcome_cannot_be_written_goes_again_after_the_restart(
    daemons: Callable[..., Daemonish],
) -> None:
    """At least once: a page delivered as the store fails stays pending, and is sent again
    (its dedup key makes it one page at the provider)."""
    d = daemons({"errors": RULE | {"do": ["page"]}})
    pager = FakePager("page", hang=True)
    w = await d.start({"page": pager})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: pager.calls == [incident])

    async def refused(*args: Any) -> None:
        raise RuntimeError("the store refuses the write")

    w.store.outbox_finish = refused  # type: ignore[method-assign]
    drain = asyncio.create_task(w.pipeline.drain(grace=30))
    await settle()
    with capture_logs():
        pager.release.set()
        assert await drain is True
    assert [i.phase for i in await w.store.outbox_pending(incident)] == ["execute"]
    await w.store.close()
    after = FakePager("page")
    w = await d.start({"page": after})
    await w.settle_until(lambda: after.calls == [incident])
    await d.stop()


# -- H: the timeline says what happened to an interrupted page -----------------------------------


async def test_a_page_interrupted_by_a_crash_is_delivered_from_the_outbox(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"do": ["page"]}})
    w = await d.start({"page": FakePager("page", hang=True)})  # the pager does not answer
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: bool(w.actions["page"].calls))
    await d.crash()
    pager = FakePager("page")
    w = await d.start({"page": pager})
    await w.advance_until(lambda: pager.calls == [incident], step=5, limit=10)  # its next round
    timeline = await d.timeline(incident)
    interrupted = [e.message for e in timeline if e.kind == "interrupted"]
    assert interrupted == [
        "page was being delivered when runbookd stopped; it is delivered from the outbox "
        "(the same dedup key: one page, not two)"
    ]
    assert not any("not repeated" in e.message for e in timeline)
    actions = [e.message for e in timeline if e.kind == "action"]
    assert actions[-1] == "delivering page (fake) from the outbox"
    assert "escalate" not in kinds(timeline)
    await d.stop()


# -- found by the model-based test ---------------------------------------------------------------


async def test_a_silence_holds_after_a_restart(daemons: Callable[..., Daemonish]) -> None:
    """Silences live in the store; a restarted daemon used to forget them, and the next
    incident under a maintenance window acted."""
    d = daemons({"errors": RULE | {"do": ["rollback"]}})
    w = await d.start({"rollback": FakeAction("rollback")})
    now = d.clock.now()
    silence = Silence("sil-1", now, now + 3600, "ana", "deploy 42", now, rule="errors")
    await w.pipeline.silences.add(silence)
    await d.stop()
    rollback = FakeAction("rollback")
    w = await d.start({"rollback": rollback})
    await fire(w)
    incident = w.opened[0]
    await w.settle_until(lambda: "silenced" in kinds(incident.timeline))
    assert rollback.calls == []
    await d.stop()


async def test_a_page_still_queued_when_the_incident_resolves_is_resolved_after_it(
    daemons: Callable[..., Daemonish],
) -> None:
    """Found by the soak: the pager was down when the page was due; the incident resolved
    before the retry. The page goes out, then its resolution, in that order; the pager does
    not keep an incident open for good."""
    d = daemons({"errors": RULE | {"do": ["page"]}})
    pager = FakePager("page", outcomes=["retry"])
    w = await d.start({"page": pager})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: "queued" in kinds(w.opened[0].timeline))
    assert await w.engine.resolve_by_operator(incident, "bo", "fixed by hand")
    await w.settle_until(lambda: incident not in w.pipeline.runs)
    await w.pipeline.idle(5.0)
    assert pager.resolved == []  # not before the page itself
    # the page's retry (30 s backoff, 5 s polling), then the resolution right after it
    await w.advance_until(lambda: len(pager.calls) == 2, step=5, limit=40)
    await w.settle_until(lambda: pager.resolved == [incident])  # as soon as the page is out
    assert await w.store.outbox_pending(incident) == []
    await d.stop()


async def test_a_crash_as_an_incident_resolves_never_leaves_its_page_open(
    daemons: Callable[..., Daemonish],
) -> None:
    """Found by the soak: the resolution was committed, then the process died before the
    page's resolution was queued: the pager kept the incident open for good. Now they are one
    transaction: after the restart the incident is still open, resolves, and so does its
    page."""
    d = daemons({"errors": RULE | {"do": ["page"]}})
    w = await d.start({"page": FakePager("page")})
    await fire(w)
    incident = w.opened[0].id
    await w.settle_until(lambda: w.actions["page"].calls == [incident])

    async def dies(*args: Any) -> Any:
        raise RuntimeError("kill -9")  # nothing after this point runs

    w.pipeline.outbox.queue = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="kill -9"):
        await w.see(0.0)
    await d.crash()
    pager = FakePager("page")
    w = await d.start({"page": pager})
    got = await w.store.get_incident(incident)
    assert got is not None
    assert got.is_open
    await w.see(0.0)
    await w.settle_until(lambda: pager.resolved == [incident])
    await d.stop()


async def test_a_plan_that_dies_where_it_cannot_record_is_logged(
    daemons: Callable[..., Daemonish],
) -> None:
    d = daemons({"errors": RULE | {"do": ["rollback"]}})
    rollback = FakeAction("rollback", hang=True)
    w = await d.start({"rollback": rollback})
    await fire(w)
    await w.settle_until(lambda: bool(rollback.calls))
    await w.store.close()  # the store goes away under a running plan
    with capture_logs() as logs:
        rollback.release.set()
        await w.pipeline.idle(5.0)
    (died,) = [e for e in logs if e["event"] == "pipeline task died"]
    assert died["log_level"] == "error"
    assert "SqliteStore is not open" in repr(died["exc_info"])
