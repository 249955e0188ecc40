"""The safety envelope, one mechanism per test, each failing without it: approval, target
locks, the circuit breaker, run limits, the paging outbox, crash recovery, undo on resolve."""

from __future__ import annotations

from daemon.core.clock import ManualClock
from daemon.core.models import Incident, RemediationResult
from daemon.pipeline.approvals import Decision
from daemon.store.protocol import Store
from remediations.base import RemediationContext
from tests.memory_store import MemoryData
from tests.world import RULE, FakeAction, FakePager, World, make_world


async def fire(w: World, n: int = 4) -> None:
    for _ in range(n):
        await w.see(0.2)


async def clear(w: World) -> None:
    await w.see(0.0)


async def messages(w: World, kind: str) -> list[str]:
    return [e.message for e in (await w.stored(w.opened[-1].id)).timeline if e.kind == kind]


# -- approval -------------------------------------------------------------------------------


async def test_a_destructive_step_waits_for_approval_then_runs() -> None:
    actions = {"flush": FakeAction("flush", destructive=True)}
    w = make_world({"errors": RULE | {"do": ["flush"]}}, actions)
    await fire(w)
    assert actions["flush"].calls == []
    (pending,) = w.pipeline.approvals.pending.values()
    assert (pending.incident_id, pending.remediation) == (w.opened[0].id, "flush")
    assert w.pipeline.approvals.decide(w.opened[0].id, Decision(True, "ana", "cache is corrupt"))
    await w.clock.advance(0)
    assert actions["flush"].calls == [w.opened[0].id]
    assert (await messages(w, "approved")) == ["flush approved by ana: cache is corrupt"]
    assert w.kinds()[-2:] == ["action", "result"]


async def test_a_rejected_step_stops_the_plan_without_escalating() -> None:
    actions = {"flush": FakeAction("flush", destructive=True), "page": FakePager("page")}
    rule = RULE | {"do": ["flush", "page"], "escalate": ["page"]}
    w = make_world({"errors": rule}, actions)
    await fire(w)
    assert w.pipeline.approvals.decide(w.opened[0].id, Decision(False, "bo", "not now"))
    await w.clock.advance(0)
    assert actions["flush"].calls == []
    assert actions["page"].calls == []
    assert (await messages(w, "rejected")) == ["flush rejected by bo: not now"]
    assert w.count("flush", "rejected") == 1


async def test_an_unanswered_approval_times_out_and_escalates() -> None:
    actions = {"flush": FakeAction("flush", destructive=True), "page": FakePager("page")}
    rule = RULE | {"do": ["flush"], "escalate": ["page"]}
    w = make_world({"errors": rule}, actions, configs={"flush": {"approval_timeout": "10m"}})
    await fire(w)
    await w.clock.advance(599)
    assert actions["page"].calls == []
    await w.clock.advance(2)
    assert actions["flush"].calls == []
    assert actions["page"].calls == [w.opened[0].id]
    assert w.count("flush", "approval_timeout") == 1
    assert not w.pipeline.approvals.pending


async def test_require_approval_false_lets_a_destructive_step_run() -> None:
    actions = {"flush": FakeAction("flush", destructive=True)}
    w = make_world(
        {"errors": RULE | {"do": ["flush"]}},
        actions,
        configs={"flush": {"require_approval": False}},
    )
    await fire(w)
    assert len(actions["flush"].calls) == 1


# -- one plan at a time per target ----------------------------------------------------------


async def test_two_rules_never_act_on_one_target_at_once() -> None:
    actions = {
        "rollback": FakeAction("rollback", hang=True),
        "scale": FakeAction("scale"),
        "page": FakePager("page"),
    }
    rules = {
        "errors": RULE | {"do": ["rollback"]},
        "errors_again": RULE | {"do": ["scale"], "escalate": ["page"]},
    }
    web = {"target": "web"}
    w = make_world(rules, actions, configs={"rollback": web, "scale": web})
    await fire(w)
    assert actions["scale"].calls == []
    busy = [
        e
        for i in w.opened
        for e in (await w.stored(i.id)).timeline
        if e.data.get("reason") == "target_busy"
    ]
    assert len(busy) == 1
    assert "target 'web' is busy: incident" in busy[0].message
    assert len(actions["page"].calls) == 1  # held back: people are told
    # the first plan ends: the target is free again
    actions["rollback"].release.set()
    await w.clock.advance(0)
    assert w.pipeline.locks.acquire("web", "someone") is None


# -- circuit breaker ------------------------------------------------------------------------


async def test_a_rollback_that_does_not_help_opens_the_circuit() -> None:
    """The scenario on-call fears: verification fails, the plan pages, and the breaker stops
    a second rollback, until an operator resets it."""
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    rule = RULE | {"do": ["rollback"], "verify_within": "1m", "escalate": ["page"]}
    w = make_world({"errors": rule}, actions, breaker_after=1)
    await fire(w)
    for _ in range(61):
        await w.see(0.2)
    assert len(actions["rollback"].calls) == 1
    assert len(actions["page"].calls) == 1
    assert w.kinds()[-1] == "circuit_open"
    assert w.metrics.registry.get_sample_value("runbookd_circuit_open", {"rule": "errors"}) == 1
    # a new episode: no rollback, only the page
    await clear(w)
    await fire(w)
    assert len(w.opened) == 2
    assert len(actions["rollback"].calls) == 1
    assert len(actions["page"].calls) == 2
    assert w.kinds()[:2] == ["opened", "circuit_open"]
    # an operator resets it: automation is back
    assert await w.pipeline.breaker.reset("errors")
    await clear(w)
    await fire(w)
    assert len(actions["rollback"].calls) == 2


async def test_a_plan_that_helps_resets_the_failure_count() -> None:
    actions = {"rollback": FakeAction("rollback")}
    rule = RULE | {"verify_within": "1m"}
    w = make_world({"errors": rule}, actions, breaker_after=2)
    await fire(w)
    for _ in range(61):
        await w.see(0.2)  # did not help: 1 failure
    await clear(w)
    await fire(w)
    await clear(w)  # helped
    assert not await w.pipeline.breaker.is_open("errors")
    assert (await w.pipeline.breaker.state("errors"))["failures"] == 0


# -- run limits -----------------------------------------------------------------------------


async def test_a_restart_loop_stops_at_the_run_limit_and_escalates() -> None:
    actions = {"restart": FakeAction("restart"), "page": FakePager("page")}
    rule = RULE | {"do": ["restart"], "escalate": ["page"]}
    limit = {"restart": {"max_runs": {"count": 2, "window": "1h"}}}
    w = make_world({"errors": rule}, actions, configs=limit)
    for _ in range(3):
        await fire(w)
        await clear(w)
    assert len(actions["restart"].calls) == 2
    assert w.count("restart", "run_limit") == 1
    assert len(actions["page"].calls) == 1
    assert "run limit reached (2 runs in 3600s, max 2)" in (await messages(w, "skipped"))[0]


# -- the paging outbox ----------------------------------------------------------------------


async def test_a_failed_page_is_retried_from_the_outbox() -> None:
    actions = {"page": FakePager("page", outcomes=["retry", "retry", True])}
    w = make_world({"errors": RULE | {"do": ["page"]}}, actions)
    w.pipeline.start_outbox()
    await fire(w)
    assert len(actions["page"].calls) == 1
    assert (await messages(w, "queued")) == ["page: will be retried from the outbox"]
    await w.clock.advance(35)  # 30 s backoff, 5 s polling
    assert len(actions["page"].calls) == 2
    await w.clock.advance(65)
    assert len(actions["page"].calls) == 3
    assert [
        e.data["ok"] for e in (await w.stored(w.opened[0].id)).timeline if e.kind == "result"
    ] == [False, False, True]
    await w.clock.advance(600)
    assert len(actions["page"].calls) == 3  # delivered once, never again
    await w.pipeline.drain(0)


class RateLimitedPager(FakePager):
    """Its first call meets a provider's 429 asking for ten minutes' quiet."""

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        if not self.calls:
            self.calls.append(incident.id)
            return RemediationResult(False, "HTTP 429", recoverable=True, retry_after=600.0)
        return await super().execute(ctx, incident)


async def test_the_outbox_waits_out_a_providers_retry_after() -> None:
    pager = RateLimitedPager("page")
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    w.pipeline.start_outbox()
    await fire(w)
    assert len(pager.calls) == 1
    await w.clock.advance(595)  # our own backoff (30 s) would have asked again long ago
    assert len(pager.calls) == 1
    await w.clock.advance(10)
    assert len(pager.calls) == 2
    await w.pipeline.drain(0)


async def test_a_queued_page_survives_a_restart() -> None:
    data, clock = MemoryData(), ManualClock()
    before = make_world(
        {"errors": RULE | {"do": ["page"]}},
        {"page": FakePager("page", outcomes=["retry"])},
        data=data,
        clock=clock,
    )
    await fire(before)
    await before.pipeline.drain(0)  # the daemon stops with the page still queued
    pager = FakePager("page")
    after = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager}, data=data, clock=clock)
    after.pipeline.start_outbox()
    await clock.advance(40)
    assert pager.calls == [before.opened[0].id]  # same incident id: the same dedup_key
    await clock.advance(3600)
    assert len(pager.calls) == 1
    await after.pipeline.drain(0)


async def test_resolution_of_a_page_goes_through_the_outbox() -> None:
    pager = FakePager("page")
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    await fire(w)
    await clear(w)
    assert pager.resolved == [w.opened[0].id]
    # both the page and its resolution were delivered: nothing is left to retry
    assert await w.store.outbox_due(w.clock.now() + 10**9) == []


async def test_a_resolution_sent_as_its_page_goes_out_is_not_sent_again_by_the_same_round() -> None:
    """The pager is down when the page is due and the incident resolves meanwhile: the page
    and its waiting resolution fall due in the same round of the outbox. The page's delivery
    sends the resolution at once; the round, which read both as due, must not send it twice
    (found when the SQLite store's thread stopped racing the test clock)."""
    pager = FakePager("page", outcomes=["retry"])
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    w.pipeline.start_outbox()
    await fire(w)
    incident = w.opened[0].id
    assert await w.engine.resolve_by_operator(incident, "bo", "fixed by hand")
    await w.clock.advance(0)
    assert pager.resolved == []  # not before the page itself
    await w.clock.advance(35)  # both due now: the page (30 s backoff) and its resolution
    assert pager.calls == [incident, incident]
    assert pager.resolved == [incident]
    await w.clock.advance(3600)
    assert pager.resolved == [incident]
    await w.pipeline.drain(0)


# -- crash recovery -------------------------------------------------------------------------


async def test_an_action_interrupted_by_a_crash_is_not_repeated() -> None:
    data, clock = MemoryData(), ManualClock()
    rule = RULE | {"do": ["rollback"], "escalate": ["page"]}
    crashed = make_world(
        {"errors": rule}, {"rollback": FakeAction("rollback", hang=True)}, data=data, clock=clock
    )
    await fire(crashed)
    assert (await crashed.store.running_actions())[0].remediation == "rollback"
    # kill -9: nothing more runs in that process; a new one starts on the same store
    rollback, pager = FakeAction("rollback"), FakePager("page")
    after = make_world(
        {"errors": rule},
        {"rollback": rollback, "page": pager},
        data=data,
        clock=clock,
        cooldowns={"rollback": "10m"},
    )
    await after.engine.restore()
    await after.pipeline.recover(
        after.engine.incidents.values(), {"errors": after.engine.evaluators["errors"].config}
    )
    await clock.advance(0)
    store: Store = after.store
    assert await store.running_actions() == []
    incident = data.incidents[crashed.opened[0].id]
    kinds = [e.kind for e in incident.timeline]
    assert "interrupted" in kinds
    assert rollback.calls == []  # never repeated blindly
    assert pager.calls == [incident.id]  # people are told
    # the rule is still evaluated: it clears, the incident resolves
    await after.see(0.0)
    assert data.incidents[incident.id].status.value == "resolved"
    assert after.count("rollback", "interrupted") == 1


# -- undo when resolved, and the healthy hook -----------------------------------------------


async def test_an_undo_waiting_on_resolve_is_cancelled_when_the_rule_fires_again() -> None:
    scale = FakeAction("scale", resolve_after=900)
    # the deadline bounds resolve() too: it must cover the wait
    w = make_world(
        {"errors": RULE | {"do": ["scale"]}},
        {"scale": scale},
        configs={"scale": {"timeout": "20m"}},
    )
    await fire(w)
    await clear(w)
    await w.clock.advance(600)
    await fire(w)  # fires again before the 15-minute scale-in
    await w.clock.advance(600)
    assert scale.resolved == []
    await clear(w)
    await w.clock.advance(901)
    assert scale.resolved == [w.opened[1].id]


async def test_the_healthy_hook_runs_while_healthy_at_most_once_a_minute() -> None:
    rollback = FakeAction("rollback")
    w = make_world({"errors": RULE}, {"rollback": rollback})
    for _ in range(150):
        await w.see(0.01)
    assert rollback.healthy_calls == 3  # at 1 s, 61 s and 121 s
    await fire(w)
    for _ in range(120):
        await w.see(0.2)
    assert rollback.healthy_calls == 3  # never while firing


async def test_a_resolved_rule_reads_inactive_and_its_healthy_hook_runs_again() -> None:
    rollback = FakeAction("rollback")
    w = make_world({"errors": RULE}, {"rollback": rollback})
    await fire(w)
    for _ in range(120):
        await w.see(0.01)  # the first resolves the incident; the rest are a quiet rule
    assert w.store.data.incidents[w.opened[0].id].status.value == "resolved"
    assert w.engine.evaluators["errors"].state.name == "INACTIVE"
    gauge = w.metrics.registry.get_sample_value("runbookd_rule_state", {"rule": "errors"})
    assert gauge == 0
    assert rollback.healthy_calls == 2  # once a minute while quiet, as before it fired


# -- monitoring blind -----------------------------------------------------------------------


async def test_a_rule_blind_too_long_pages_and_never_remediates() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    rule = RULE | {"on_blind": ["page"], "blind_after": "10m"}
    w = make_world({"errors": rule}, actions)
    await w.see(0.2)
    await w.see(None)  # blind from here on
    for _ in range(598):
        await w.see(None)
    await w.engine.tick(w.clock.now())  # 598 s blind
    assert w.opened == []
    await w.see(None, dt=2)
    await w.engine.tick(w.clock.now())  # 600 s blind
    await w.clock.advance(0)
    (blind,) = w.opened
    assert blind.rule == "errors:blind"
    assert blind.summary.startswith("monitoring blind: errors has had no usable data for 600s")
    assert actions["page"].calls == [blind.id]
    assert actions["rollback"].calls == []
    # data comes back: the blind incident resolves, the rule carries on where it was
    await w.see(0.01)
    assert (await w.stored(blind.id)).status.value == "resolved"
    assert actions["page"].resolved == [blind.id]


async def test_stale_data_counts_as_blind_too() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    w = make_world({"errors": RULE | {"on_blind": ["page"], "blind_after": "5m"}}, actions)
    await w.see(0.01)
    await w.clock.advance(400)  # the check stopped reporting at all
    await w.engine.tick(w.clock.now())
    assert [i.rule for i in w.opened] == ["errors:blind"]


async def test_closing_by_hand_during_verification_is_not_counted_as_helping() -> None:
    actions = {"rollback": FakeAction("rollback")}
    w = make_world({"errors": RULE | {"verify_within": "1m"}}, actions, breaker_after=1)
    await fire(w)
    assert await w.engine.resolve_by_operator(w.opened[0].id, "ana", "fixed the config by hand")
    await w.clock.advance(0)
    assert (await messages(w, "verify"))[-1] == "not verified: closed by ana after 0s"
    assert "verified" not in w.kinds()
    assert (await w.pipeline.breaker.state("errors"))["failures"] == 0
