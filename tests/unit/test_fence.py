"""Fencing: a replica that no longer leads neither acts, pages nor runs a job, whether it
knows it (its lease ran out by its clock) or not (its clock runs slow: the store says no)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.runner import JobRunner
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.progress import PLANS
from daemon.pipeline.safety import TargetLocks
from daemon.runtime.leadership import LeaderMetrics, Leadership, Role
from remediations.base import RemediationContext
from tests.memory_store import MemoryData, MemoryStore
from tests.world import RULE, FakeAction, FakeConfig, World, build_world


def replica(name: str, data: MemoryData, clock: ManualClock) -> tuple[MemoryStore, Leadership]:
    store = MemoryStore(data)
    store.wall = clock.now
    return store, Leadership(
        store, clock, name, ttl=9.0, metrics=LeaderMetrics(CollectorRegistry())
    )


async def fire(w: World) -> None:
    for _ in range(5):
        await w.see(0.5)


async def test_a_leader_whose_lease_ran_out_takes_no_step() -> None:
    clock, data = ManualClock(), MemoryData()
    store_a, a = replica("a", data, clock)
    _, b = replica("b", data, clock)
    await a.renew()
    w = build_world(store_a, {"errors": RULE}, clock=clock)
    w.pipeline.actor.fence = a
    await clock.advance(10.0)  # a was paused: its lease ran out
    await b.renew()
    assert (b.role, a.acting_epoch()) == (Role.LEADER, None)
    await fire(w)
    await w.settle()
    assert w.actions["rollback"].calls == []
    assert await store_a.running_actions() == []
    assert "action" not in [e.kind for e in await w.timeline()]


async def test_a_leader_with_a_slow_clock_is_stopped_by_the_store() -> None:
    clock, data = ManualClock(), MemoryData()
    store_a, a = replica("a", data, clock)
    _, b = replica("b", data, clock)
    await a.renew()
    await clock.advance(10.0)
    await b.renew()  # the lease expired on the store's clock: b leads with epoch 2
    a.valid_until = clock.now() + 100  # ...while a's clock says it still leads
    assert a.may_act()
    w = build_world(store_a, {"errors": RULE}, clock=clock)
    w.pipeline.actor.fence = a
    await fire(w)
    await w.settle()
    assert w.actions["rollback"].calls == []
    assert await store_a.running_actions() == []
    assert "action" not in [e.kind for e in await w.timeline()]


async def test_the_leader_acts_as_before() -> None:
    clock, data = ManualClock(), MemoryData()
    store_a, a = replica("a", data, clock)
    await a.renew()
    w = build_world(store_a, {"errors": RULE}, clock=clock)
    w.pipeline.actor.fence = a
    await fire(w)
    await w.settle()
    assert len(w.actions["rollback"].calls) == 1


async def test_a_replica_that_does_not_lead_runs_no_job() -> None:
    clock, data = ManualClock(), MemoryData()
    store_a, a = replica("a", data, clock)
    _, b = replica("b", data, clock)
    await b.renew()
    await a.renew()  # b leads
    action = FakeAction("backup")
    runner = JobRunner(
        store=store_a,
        clock=clock,
        metrics=JobMetrics(CollectorRegistry()),
        sink=lambda obs: clock.sleep(0),
        actions=lambda name: (action, FakeConfig()),
        ctx_for=lambda name: RemediationContext(None, clock),  # type: ignore[arg-type]
        approvals=Approvals(clock),
        locks=TargetLocks(),
        fence=a,
    )
    await runner.configure({"backup": JobConfig(run="backup", schedule="* * * * *")})
    runner.run_now("backup")
    await clock.quiet()
    assert action.calls == []
    assert await store_a.job_runs("backup") == []
    await runner.stop()


async def test_a_step_claimed_already_is_not_run_again_even_past_the_fence() -> None:
    """Defence in depth: the ledger's claim on (incident, stage/index) is unique, so a step
    another replica claimed (a fence that let both through) does not run here too."""
    probe = build_world(MemoryStore(), {"errors": RULE}, clock=ManualClock())
    await fire(probe)
    await probe.settle()
    (incident_id,) = probe.actions["rollback"].calls  # the same episode, the same id
    data = MemoryData()
    other = MemoryStore(data)  # the replica that claimed the plan's first step
    await other.begin_action(incident_id, "errors", "rollback", 0.0, "do/0")
    w = build_world(MemoryStore(data), {"errors": RULE}, clock=ManualClock())
    await fire(w)
    await w.settle()
    assert w.actions["rollback"].calls == []
    assert "action" not in [e.kind for e in await w.timeline()]


async def test_a_leader_paused_mid_action_leaves_the_plan_to_the_new_leader() -> None:
    """Its lease ran out while its action ran: on waking it records neither the action's end
    nor the plan's move past it. Both are the new leader's, which finds the action running,
    records it interrupted and escalates; a progress written over that would make a later
    leader resume the plan at a step the plan had abandoned."""
    clock, data = ManualClock(), MemoryData()
    store_a, a = replica("a", data, clock)
    _, b = replica("b", data, clock)
    await a.renew()
    rollback, scale = FakeAction("rollback", hang=True), FakeAction("scale")
    rule = RULE | {"do": ["rollback", "scale"]}
    w = build_world(store_a, {"errors": rule}, {"rollback": rollback, "scale": scale}, clock=clock)
    w.pipeline.actor.fence = a
    await fire(w)
    await w.settle_until(lambda: rollback.calls)
    progress = await store_a.values(PLANS)
    await clock.advance(10.0)  # a was paused past its lease
    await b.renew()
    rollback.release.set()  # the action ends as a wakes
    await w.settle()
    assert scale.calls == []
    assert await store_a.values(PLANS) == progress
    assert [r.remediation for r in await store_a.running_actions()] == ["rollback"]
