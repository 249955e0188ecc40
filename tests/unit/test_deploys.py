"""The deploy watch under a ManualClock, on the memory store, with the engine and pipeline as
the daemon wires them: a bad deploy is rolled back through the pipeline and announced, a good
one completes and becomes the last known good, missing data never rolls back."""

from __future__ import annotations

import pytest

from daemon.core.models import IncidentStatus
from daemon.deploys.models import DeployEvent, DeployStatus
from daemon.deploys.state import LAST_GOOD
from tests.deploy_world import INTERVAL, NORMAL, DeployWorld, make_deploy_world
from tests.memory_store import MemoryData

BAD = {"error_ratio": 0.2, "p95_seconds": 0.12}


async def warmed(world: DeployWorld | None = None, **kw: object) -> DeployWorld:
    """Ten minutes of normal values: the baseline is known."""
    w = world or make_deploy_world(**kw)  # type: ignore[arg-type]
    await w.run(600)
    return w


def steps(deploy: object) -> list[str]:
    return [str(e.kind) for e in deploy.timeline]  # type: ignore[attr-defined]


async def good_deploy(w: DeployWorld, version: str) -> None:
    deploy = await w.deploy(version)
    await w.run(310)
    assert (await w.deploy_record(deploy.id)).status == DeployStatus.COMPLETED


async def test_a_good_deploy_completes_and_becomes_the_last_known_good() -> None:
    w = await warmed()
    deploy = await w.deploy("v1.2.3", commit="4f2a9c1", by="ana")
    assert w.texts() == ["Starting deployment of v1.2.3 to production at 2027-01-15 08:10:00 UTC"]
    start = w.channel.announced[0]
    assert dict(start.facts)["Watching"] == "5m"
    assert dict(start.facts)["Before"] == "error ratio 0.4%, p95 latency 120ms"
    assert dict(start.facts)["Previous"] == "unknown"

    await w.run(290)
    assert (await w.deploy_record(deploy.id)).status == DeployStatus.WATCHING
    await w.run(20)
    done = await w.deploy_record(deploy.id)
    assert done.status == DeployStatus.COMPLETED
    assert done.ended_at == deploy.started_at + 300
    assert steps(done) == [
        "received", "baseline", "watching", "announced", "completed", "announced"
    ]  # fmt: skip
    assert w.texts()[-1] == "✅ Deployment of v1.2.3 completed"
    assert await w.store.get_value(LAST_GOOD, "production") == {
        "version": "v1.2.3",
        "deploy": deploy.id,
        "at": done.ended_at,
    }
    assert w.rollback.calls == []
    assert w.rollback.healthy_calls == 1  # the rollback notes what good looks like
    registry = w.world.metrics.registry
    assert registry.get_sample_value("runbookd_deploys_total", {"outcome": "completed"}) == 1
    # The next deploy knows what it would go back to.
    nxt = await w.deploy("v1.2.4")
    assert nxt.previous == "v1.2.3"


async def test_a_bad_deploy_rolls_back_within_for_plus_one_interval_and_says_so() -> None:
    w = await warmed()
    await good_deploy(w, "v1.2.2")
    deploy = await w.deploy("v1.2.3")
    await w.run(40)
    w.reports["traffic"] = BAD
    await w.run(60)

    first = w.first_failing("traffic", lambda v: v.get("error_ratio", 0) > 0.054)
    (rolled_at,) = w.rollback.called_at
    # `for: 30s`, checks every 10s: the rollback runs within `for` plus one interval of the
    # first failing observation (here on the observation that completes `for`).
    assert rolled_at - first <= 30 + INTERVAL
    assert rolled_at - first == 30

    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.ROLLED_BACK
    (incident,) = [i for i in w.store.data.incidents.values() if i.rule == "deploy:production"]
    assert record.incident == incident.id
    assert incident.trigger["breaches"] == ["error_ratio"]
    assert incident.trigger["failing_since"] == first
    assert w.rollback.calls == [incident.id]
    rolled = next(e for e in record.timeline if e.kind == "rolled_back")
    assert rolled.data["seconds_after_first_failure"] == 30
    assert rolled.data["seconds_after_deploy"] == rolled_at - deploy.started_at
    assert w.texts()[-1] == (
        "Rolled back to v1.2.2 due to error ratio 20% above 5.4% (baseline 0.4% + 5 points)"
    )
    # The plan went through the pipeline: the incident's timeline has the rollback.
    kinds = [e.kind for e in w.store.data.incidents[incident.id].timeline]
    assert kinds[:3] == ["opened", "action", "result"]
    registry = w.world.metrics.registry
    assert registry.get_sample_value("runbookd_deploys_total", {"outcome": "rolled_back"}) == 1
    assert registry.get_sample_value("runbookd_deploy_rollback_seconds_count", {}) == 1

    # Back to normal: the incident resolves after clear_for, and the rollback is verified.
    w.reports["traffic"] = dict(NORMAL["traffic"] or {})
    await w.run(40)
    assert w.store.data.incidents[incident.id].status is IncidentStatus.RESOLVED
    kinds = [e.kind for e in w.store.data.incidents[incident.id].timeline]
    assert "verified" in kinds
    record = await w.deploy_record(deploy.id)
    assert steps(record)[-1] == "cleared"
    assert w.watcher.owner is None
    assert w.watcher.watch is None
    # Still the last known good: the bad deploy never became it.
    assert (await w.store.get_value(LAST_GOOD, "production"))["version"] == "v1.2.2"


async def test_a_critical_endpoint_failing_rolls_back_and_a_pending_one_extends() -> None:
    w = await warmed()
    deploy = await w.deploy("v7")
    await w.run(280)
    w.reports["health"] = {"up": 0.0}  # fails 10s before the watch ends
    await w.run(30)
    # Pending at the end of the watch: it goes on instead of completing.
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.WATCHING
    extended = next(e for e in record.timeline if e.kind == "extended")
    assert "critical endpoint health failing (up 0), not yet for 30s" in extended.message
    await w.run(30)
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.ROLLED_BACK
    assert "extended" in steps(record)
    # No last known good before it: the message says where it went.
    assert w.texts()[-1] == (
        "Rolled back v7 to the previous deployment due to critical endpoint health failing (up 0)"
    )


async def test_missing_data_never_rolls_back_the_watch_extends_then_pages() -> None:
    w = await warmed()
    deploy = await w.deploy("v2")
    w.reports["traffic"] = None  # the metrics source is down during the whole watch
    await w.run(300)
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.WATCHING
    extended = next(e for e in record.timeline if e.kind == "extended")
    assert "no usable data of traffic.error_ratio (scrape failed)" in extended.message
    await w.run(300)
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.INCONCLUSIVE
    assert w.rollback.calls == []
    (incident,) = w.store.data.incidents.values()
    assert incident.rule == "deploy:production:unverified"
    assert record.incident == incident.id
    assert "could not be verified" in incident.summary
    assert "traffic.error_ratio" in incident.summary
    assert w.page.calls == [incident.id]
    assert w.texts()[-1].startswith("⚠️ Deployment of v2 could not be verified: ")
    assert (await w.store.get_value(LAST_GOOD, "production")) is None
    # The next deploy closes the page: it is the one watched now.
    await w.deploy("v3")
    assert w.store.data.incidents[incident.id].status is IncidentStatus.RESOLVED


async def test_bad_values_while_data_comes_and_goes_need_their_for_in_data() -> None:
    w = await warmed()
    deploy = await w.deploy("v2")
    # Bad, then blind for a minute, then bad again: the minute blind does not count.
    w.reports["traffic"] = BAD
    await w.run(20)
    w.reports["traffic"] = None
    await w.run(60)
    assert w.rollback.calls == []
    w.reports["traffic"] = BAD
    await w.run(10)
    assert w.rollback.calls == []
    await w.run(10)
    assert len(w.rollback.calls) == 1
    assert (await w.deploy_record(deploy.id)).status == DeployStatus.ROLLED_BACK


async def test_no_baseline_before_the_deploy_is_missing_data() -> None:
    w = make_deploy_world()
    await w.run(60)  # a minute of history: a quarter of the 10m window is needed
    deploy = await w.deploy("v1")
    w.reports["traffic"] = BAD  # would breach, were there a baseline to compare with
    await w.run(600)
    record = await w.deploy_record(deploy.id)
    assert record.baseline == {"traffic.error_ratio": None, "traffic.p95_seconds": None}
    assert record.status == DeployStatus.INCONCLUSIVE
    assert w.rollback.calls == []
    assert "no baseline of traffic.error_ratio before the deploy" in w.texts()[-1]


async def test_a_hotfix_is_watched_for_fifteen_minutes() -> None:
    w = await warmed()
    hotfix = await w.deploy("v3-hotfix", kind="hotfix")
    await w.run(600)
    assert (await w.deploy_record(hotfix.id)).status == DeployStatus.WATCHING
    w.reports["db"] = {"up": 0.0}
    await w.run(60)
    record = await w.deploy_record(hotfix.id)
    assert record.status == DeployStatus.ROLLED_BACK
    assert "database db failing (up 0)" in w.texts()[-1]


async def test_a_dry_run_records_the_breach_and_rolls_nothing_back() -> None:
    w = await warmed(dry_run=True)
    deploy = await w.deploy("v9")
    w.reports["traffic"] = BAD
    await w.run(60)
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.NOT_ROLLED_BACK
    assert w.rollback.calls == []
    ended = next(e for e in record.timeline if e.kind == "not_rolled_back")
    assert ended.message == "not rolled back: dry-run (global): would run rollback (fake)"
    # Announcements are not posted in a dry run either, only recorded.
    assert w.channel.announced == []
    announced = [e for e in record.timeline if e.kind == "announced"]
    assert announced[0].message.startswith("dry run: would post through channel: Starting")


async def test_a_rollback_that_fails_pages_and_says_so() -> None:
    w = await warmed(rollback_outcomes=[False])
    deploy = await w.deploy("v4")
    w.reports["traffic"] = BAD
    await w.run(60)
    record = await w.deploy_record(deploy.id)
    assert record.status == DeployStatus.NOT_ROLLED_BACK
    (incident,) = w.store.data.incidents.values()
    assert w.page.calls == [incident.id]  # escalated
    assert w.texts()[-1].startswith("⚠️ Deployment of v4 broke: error ratio 20% above 5.4%")


async def test_a_new_deploy_supersedes_the_watch_going_on() -> None:
    w = await warmed()
    first = await w.deploy("v5")
    await w.run(60)
    second = await w.deploy("v6")
    assert (await w.deploy_record(first.id)).status == DeployStatus.SUPERSEDED
    await w.run(310)
    assert (await w.deploy_record(second.id)).status == DeployStatus.COMPLETED


async def test_another_environment_is_recorded_not_watched() -> None:
    w = await warmed()
    deploy = await w.deploy("v5", environment="staging")
    assert deploy.status == DeployStatus.NOT_WATCHED
    assert w.watcher.watch is None
    assert w.channel.announced == []


async def test_a_changed_version_value_is_a_deploy_and_the_rollback_is_not() -> None:
    w = make_deploy_world({"version_from": "version.build"})
    w.reports["version"] = {"build": 41.0}
    await w.run(600)
    assert await w.store.list_deploys() == []  # the first value seen is where it starts
    w.reports["version"] = {"build": 42.0}
    await w.run(10)
    (deploy,) = await w.store.list_deploys()
    assert (deploy.version, deploy.source) == ("42", "check")
    await w.run(310)
    assert (await w.deploy_record(deploy.id)).status == DeployStatus.COMPLETED
    # A bad build, rolled back: the version going back to 42 is the rollback, not a deploy.
    w.reports["version"] = {"build": 43.0}
    w.reports["traffic"] = BAD
    await w.run(60)
    bad = (await w.store.list_deploys())[0]
    assert (bad.version, (await w.deploy_record(bad.id)).status) == ("43", "rolled_back")
    w.reports["version"] = {"build": 42.0}
    w.reports["traffic"] = dict(NORMAL["traffic"] or {})
    await w.run(20)
    assert [d.version for d in await w.store.list_deploys()] == ["43", "42"]
    record = await w.deploy_record(bad.id)
    assert any(e.kind == "note" and "42 again: the rollback" in e.message for e in record.timeline)


async def test_a_version_change_during_an_announced_deploy_is_noted_on_it() -> None:
    w = make_deploy_world({"version_from": "version.build"})
    w.reports["version"] = {"build": 41.0}
    await w.run(600)
    deploy = await w.deploy("v1.2.3")
    w.reports["version"] = {"build": 42.0}
    await w.run(20)
    assert [d.id for d in await w.store.list_deploys()] == [deploy.id]
    record = await w.deploy_record(deploy.id)
    assert any("version.build now reports 42" in e.message for e in record.timeline)


async def test_a_restart_during_the_watch_resumes_it() -> None:
    data = MemoryData()
    w = await warmed(data=data)
    deploy = await w.deploy("v8")
    await w.run(100)

    again = make_deploy_world(data=data, clock=w.clock)
    await again.watcher.restore()
    assert again.watcher.watch is not None
    registry = again.world.metrics.registry
    assert registry.get_sample_value("runbookd_deploy_watching", {}) == 1
    assert "resumed" in steps(await again.deploy_record(deploy.id))
    # It ends when it would have: five minutes after the deploy.
    await again.run(200)
    record = await again.deploy_record(deploy.id)
    assert record.status == DeployStatus.COMPLETED
    assert record.ended_at == deploy.started_at + 300


async def test_a_restart_during_the_rollback_follows_its_incident_again() -> None:
    data = MemoryData()
    w = await warmed(data=data)
    deploy = await w.deploy("v8")
    w.reports["traffic"] = BAD
    w.rollback.hang = True  # the rollback is still running when runbookd stops
    await w.run(40)
    assert (await w.deploy_record(deploy.id)).status == DeployStatus.ROLLING_BACK
    await w.world.pipeline.drain(0.0)

    again = make_deploy_world(data=data, clock=w.clock)
    await again.world.engine.restore()
    await again.watcher.restore()
    await again.world.pipeline.recover(again.world.engine.incidents.values(), again.watcher.plans())
    await again.settle()
    record = await again.deploy_record(deploy.id)
    # The rollback was cut short: its effect is unknown, it is not repeated, and it pages.
    assert record.status == DeployStatus.NOT_ROLLED_BACK
    assert again.rollback.calls == []
    assert len(again.page.calls) == 1


@pytest.mark.parametrize("source", ["ci", "check"])
def test_a_deploy_id_is_stable_for_a_keyed_event(source: str) -> None:
    from daemon.deploys.models import deploy_id

    keyed = DeployEvent("v1", "production", source=source, key="delivery-1")
    assert deploy_id(keyed, 1.0) == deploy_id(keyed, 2.0)
    assert deploy_id(DeployEvent("v1", "production"), 1.0) != deploy_id(
        DeployEvent("v1", "production"), 1.0
    )
