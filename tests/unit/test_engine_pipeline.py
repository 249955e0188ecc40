"""The engine and the pipeline together, under a ManualClock, with fake remediations.

The remediation fakes implement the Remediation protocol; the store is the in-memory one
that passes the store contract. Real remediations are tested against real servers elsewhere.
"""

from __future__ import annotations

import asyncio

from daemon.core.clock import ManualClock
from daemon.pipeline.safety import Budget
from tests.memory_store import MemoryData
from tests.world import RULE, Boom, FakeAction, FakePager, make_world


async def test_an_episode_opens_one_incident_and_runs_do_once() -> None:
    w = make_world({"errors": RULE})
    for _ in range(10):
        await w.see(0.2)
    assert len(w.opened) == 1
    assert w.actions["rollback"].calls == [w.opened[0].id]
    incident = await w.stored(w.opened[0].id)
    assert incident.trigger["value"] == 0.2
    assert incident.trigger["threshold"] == 0.05
    assert incident.trigger["condition"] == "app.error_ratio > 5%"
    # Said in the unit of the condition, not as raw fractions (value 0.2, limit 0.05).
    assert incident.summary == "errors: app.error_ratio > 5% (value 20%, limit 5%)"
    assert w.kinds() == ["opened", "action", "result"]
    result = incident.timeline[-1]
    assert result.data["remediation"] == "rollback"
    assert result.data["ok"] is True
    assert result.data["answer"] == "x"
    assert w.count("rollback", "ok") == 1


async def test_resolve_and_a_new_episode_opens_a_second_incident() -> None:
    w = make_world({"errors": RULE})
    for value in (0.2, 0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.2):
        await w.see(value)
    assert len(w.opened) == 2
    first, second = w.opened
    assert first.id != second.id
    assert (await w.stored(first.id)).status.value == "resolved"
    assert (await w.stored(second.id)).status.value == "open"


async def test_unknown_data_never_remediates() -> None:
    w = make_world({"errors": RULE})
    await w.see(0.2)
    for _ in range(100):
        await w.see(None)
    assert w.opened == []
    assert w.actions["rollback"].calls == []


async def test_global_dry_run_records_what_would_have_run() -> None:
    w = make_world({"errors": RULE}, dry_run=True)
    for _ in range(5):
        await w.see(0.2)
    assert w.actions["rollback"].calls == []
    entry = (await w.stored(w.opened[0].id)).timeline[-1]
    assert entry.kind == "dry_run"
    assert entry.message == "dry-run (global): would run rollback (fake)"
    assert w.count("rollback", "dry_run") == 1


async def test_rule_dry_run_leaves_other_rules_acting() -> None:
    w = make_world(
        {"errors": RULE | {"dry_run": True}, "errors2": RULE},
        {"rollback": FakeAction("rollback")},
    )
    for _ in range(5):
        await w.see(0.2)
    assert len(w.opened) == 2
    kinds = {i.rule: w.kinds(i) for i in w.opened}
    assert kinds["errors"][-1] == "dry_run"
    assert kinds["errors2"][-1] == "result"
    assert len(w.actions["rollback"].calls) == 1


async def test_cooldown_skips_a_repeat_and_expires() -> None:
    w = make_world({"errors": RULE}, cooldowns={"rollback": "10m"})
    for value in (0.2,) * 4 + (0.0,) + (0.2,) * 4:
        await w.see(value)
    assert len(w.opened) == 2
    assert len(w.actions["rollback"].calls) == 1
    _, skipped, escalate = (await w.stored(w.opened[1].id)).timeline
    assert skipped.kind == "skipped"
    assert skipped.data["reason"] == "cooldown"
    assert "cooldown 600s" in skipped.message
    assert escalate.message == (
        "automation held back (rollback: cooldown); no escalation configured"
    )
    await w.see(0.0)
    await w.clock.advance(600)
    for _ in range(4):
        await w.see(0.2)
    assert len(w.opened) == 3
    assert len(w.actions["rollback"].calls) == 2


async def test_budget_bounds_actions_but_not_pages() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    rules = {f"r{i}": RULE | {"do": ["rollback", "page"]} for i in range(3)}
    w = make_world(rules, actions, budget=Budget(max_actions=2, window=3600))
    for _ in range(5):
        await w.see(0.2)
    assert len(w.opened) == 3
    assert len(actions["rollback"].calls) == 2
    assert len(actions["page"].calls) == 3
    assert w.count("rollback", "budget") == 1
    budget = [
        e
        for i in w.opened
        for e in (await w.stored(i.id)).timeline
        if e.data.get("reason") == "budget"
    ]
    assert len(budget) == 1
    assert "budget exhausted (2 of 2 actions in 3600s)" in budget[0].message


async def test_verified_when_the_rule_clears_in_time() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    rule = RULE | {"verify_within": "30s", "escalate": ["page"]}
    w = make_world({"errors": rule}, actions)
    for _ in range(4):
        await w.see(0.2)
    await w.see(0.0, dt=10)
    assert w.kinds()[:6] == ["opened", "action", "result", "verify", "resolved", "verified"]
    assert actions["page"].calls == []


async def test_escalates_when_still_firing_after_verify_within() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    rule = RULE | {"verify_within": "30s", "escalate": ["page"]}
    w = make_world({"errors": rule}, actions)
    for _ in range(4):
        await w.see(0.2)
    for _ in range(29):
        await w.see(0.2)
    assert actions["page"].calls == []
    await w.see(0.2, dt=2)
    assert actions["page"].calls == [w.opened[0].id]
    escalate = [e for e in (await w.stored(w.opened[0].id)).timeline if e.kind == "escalate"]
    assert escalate[0].message == "still firing 30s after remediation: escalating to page"


async def test_a_failed_step_stops_do_and_escalates() -> None:
    actions = {
        "rollback": FakeAction("rollback", outcomes=[False]),
        "purge": FakeAction("purge"),
        "page": FakePager("page"),
    }
    rule = RULE | {"do": ["rollback", "purge"], "escalate": ["page"]}
    w = make_world({"errors": rule}, actions)
    for _ in range(4):
        await w.see(0.2)
    assert actions["purge"].calls == []
    assert len(actions["page"].calls) == 1
    assert w.count("rollback", "failed") == 1


async def test_a_raising_remediation_is_contained() -> None:
    actions = {"rollback": Boom("rollback"), "page": FakePager("page")}
    w = make_world({"errors": RULE | {"escalate": ["page"]}}, actions)
    for _ in range(4):
        await w.see(0.2)
    result = [e for e in (await w.stored(w.opened[0].id)).timeline if e.kind == "result"]
    assert "internal error: RuntimeError('bug in a remediation')" in result[0].message
    assert len(actions["page"].calls) == 1
    assert w.count("rollback", "error") == 1


async def test_a_hanging_remediation_times_out_on_the_clock() -> None:
    actions = {"rollback": FakeAction("rollback", hang=True)}
    w = make_world({"errors": RULE}, actions)
    for _ in range(4):
        await w.see(0.2)
    assert w.kinds()[-1] == "action"
    await w.clock.advance(30)
    assert w.kinds()[-2:] == ["result", "escalate"]
    assert "timed out after 30s" in (await w.stored(w.opened[0].id)).timeline[-2].message
    assert w.count("rollback", "timeout") == 1


async def test_resolution_reaches_the_remediations_that_acted() -> None:
    actions = {"rollback": FakeAction("rollback"), "page": FakePager("page")}
    w = make_world({"errors": RULE | {"do": ["page"]}}, actions)
    for _ in range(4):
        await w.see(0.2)
    await w.see(0.0)
    incident_id = w.opened[0].id
    assert actions["page"].resolved == [incident_id]
    assert actions["rollback"].resolved == []


async def test_restart_keeps_the_incident_and_the_cooldown() -> None:
    data = MemoryData()
    clock = ManualClock()
    before = make_world({"errors": RULE}, data=data, clock=clock, cooldowns={"rollback": "1h"})
    for _ in range(4):
        await before.see(0.2)
    assert len(before.opened) == 1
    # the daemon restarts: new engine and pipeline on the same store
    after = make_world({"errors": RULE}, data=data, clock=clock, cooldowns={"rollback": "1h"})
    await after.engine.restore()
    for _ in range(5):
        await after.see(0.2)
    assert after.opened == []  # still the same episode: no second incident
    assert after.actions["rollback"].calls == []
    await after.see(0.0)
    incident = data.incidents[before.opened[0].id]
    kinds = [e.kind for e in incident.timeline]
    assert kinds.index("restored") < kinds.index("resolved")
    for _ in range(4):
        await after.see(0.2)
    assert len(after.opened) == 1
    assert after.actions["rollback"].calls == []  # the cooldown outlived the restart
    assert after.kinds() == ["opened", "skipped", "escalate"]


async def test_drain_waits_for_a_running_remediation() -> None:
    actions = {"rollback": FakeAction("rollback", hang=True)}
    w = make_world({"errors": RULE}, actions)
    for _ in range(4):
        await w.see(0.2)
    assert w.pipeline.busy
    drain = asyncio.create_task(w.pipeline.drain(grace=5))
    await w.clock.advance(0)
    assert not drain.done()
    actions["rollback"].release.set()
    assert await drain is True
    assert w.kinds()[-1] == "result"
