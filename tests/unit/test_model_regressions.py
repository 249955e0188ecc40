"""What the model-based tests found, each as a plain test on the same world: beyond issue 11's
A-H, the single daemon's (tests/unit/test_model_based.py: the real engine, pipeline and SQLite
store, tests/model_world.py); then several replicas' (tests/unit/test_model_replicas.py: the real
leadership and fence too, on one shared store, tests/replica_world.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.core.clock import ManualClock
from daemon.core.models import Incident
from daemon.engine.alerts import Alert
from daemon.pipeline.approvals import Decision
from tests.model_world import (
    ALERT_NAME,
    BAD,
    GOOD,
    Daemon,
    Fake,
    advance,
    kill_daemon,
    make_fakes,
    observation,
    quiesce,
    start_daemon,
    stop_daemon,
)
from tests.replica_world import Database, Process, Slot, make_targets


class Box:
    """The daemon of the moment (a restart replaces it), its clock and the fakes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock()
        self.fakes: dict[str, Fake] = make_fakes()
        self.d: Daemon | None = None

    @property
    def daemon(self) -> Daemon:
        assert self.d is not None
        return self.d

    async def start(self) -> Daemon:
        self.d = await start_daemon(self.path, self.clock, self.fakes)
        await quiesce()
        return self.d

    async def wait(self, seconds: float) -> None:
        await advance(self.clock, seconds, stop=lambda: self.daemon.dead)

    async def see(self, check: str, value: float) -> None:
        await self.daemon.engine.observe(observation(check, value, self.clock.now()))
        await quiesce()

    async def incident(self, incident_id: str) -> Incident:
        got = await self.daemon.store.get_incident(incident_id)
        assert got is not None
        return got


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    box = Box(tmp_path / "state" / "runbookd.db")
    await box.start()
    yield box
    if box.d is not None and not box.d.dead:
        await stop_daemon(box.d)


def alert(fp: str, ts: float) -> Alert:
    return Alert(ALERT_NAME, True, fp, {"alertname": ALERT_NAME, "instance": fp}, starts_at=ts)


async def ledger(d: Daemon) -> list[dict[str, Any]]:
    rows = await d.store._fetchall("SELECT incident_id, remediation, outcome FROM actions")
    return [dict(r) for r in rows]


async def test_a_kill_between_the_running_entry_and_the_ledger_leaves_no_orphan_step(
    box: Box,
) -> None:
    """kill -9 after the timeline said "running restart" and before the ledger's row: the
    restarted daemon must neither claim an action that never ran nor lose the plan (it
    verifies or escalates within `verify_within`)."""
    d = box.daemon
    begin = d.store.begin_action

    async def dying(*args: Any) -> int:
        d.store.frozen = True  # the process dies right here: nothing more is written
        return await begin(*args)

    d.store.begin_action = dying  # type: ignore[method-assign]
    await d.engine.alerts([alert("a", box.clock.now())])  # opens; its plan dies in the ledger
    await quiesce()
    assert box.fakes["restart"].calls == []
    await kill_daemon(d)
    d = await box.start()
    (incident_id,) = [i.id for i in d.engine.incidents.values()]
    await box.wait(100)  # past the restart's timeout and verify_within (30 s)
    incident = await box.incident(incident_id)
    said = [e.data["remediation"] for e in incident.timeline if e.kind == "action"]
    rows = [r["remediation"] for r in await ledger(d)]
    kinds = [e.kind for e in incident.timeline]
    assert sorted(said) == sorted(rows), (kinds, said, rows)
    assert "escalate" in kinds or "verified" in kinds, kinds


async def test_an_approval_given_after_the_incident_resolved_runs_nothing(box: Box) -> None:
    """flush waits for approval; an operator closes the incident; someone approves the stale
    request: the destructive step must not run on a resolved incident."""
    await box.see("api", BAD)
    d = box.daemon
    incident = d.engine.incidents["api_errors"]
    assert d.pipeline.approvals.pending
    assert await d.engine.resolve_by_operator(incident.id, "bo", "fixed by hand")
    await quiesce()
    d.pipeline.approvals.decide(incident.id, Decision(True, "cy", "go"))
    await quiesce()
    assert box.fakes["flush"].calls == []


async def test_a_step_waiting_when_its_rule_clears_does_not_run_after(box: Box) -> None:
    """The same when the rule itself clears: the data that asked for a flush is gone."""
    await box.see("api", BAD)
    d = box.daemon
    incident = d.engine.incidents["api_errors"]
    await box.see("api", GOOD)
    assert "api_errors" not in d.engine.incidents
    d.pipeline.approvals.decide(incident.id, Decision(True, "cy", "go"))
    await quiesce()
    assert box.fakes["flush"].calls == []


async def test_no_page_goes_out_for_an_incident_already_resolved(box: Box) -> None:
    """An incident resolves while its plan waits (approval): the plan must not page afterwards
    — a page sent after the resolution is never resolved at the pager, which then shows an
    open incident nobody can close from runbookd."""
    await box.see("api", BAD)
    d = box.daemon
    incident = d.engine.incidents["api_errors"]
    assert await d.engine.resolve_by_operator(incident.id, "bo", "fixed by hand")
    await box.wait(125)  # past flush's approval_timeout (2 min)
    pager = box.fakes["page"]
    paged = {i for i, _ in pager.calls}
    assert paged <= set(pager.resolved), (pager.calls, pager.resolved)


async def test_a_slow_rollback_outlived_by_its_incident_pages_nobody_after(box: Box) -> None:
    """rollback hangs (a slow deploy API); the rule clears meanwhile; rollback returns: the
    plan's next step (page) must not page for the resolved incident, or must resolve it."""
    box.fakes["rollback"].mode = "hang"
    await box.see("app", BAD)
    await box.wait(2)
    await box.see("app", BAD)
    d = box.daemon
    incident = d.engine.incidents["errors"]
    await box.see("app", GOOD)
    assert "errors" not in d.engine.incidents
    box.fakes["rollback"].release(True)
    await quiesce()
    await box.wait(60)
    pager = box.fakes["page"]
    paged = {i for i, _ in pager.calls}
    assert paged <= set(pager.resolved), (incident.id, pager.calls, pager.resolved)


# -- several replicas (tests/unit/test_model_replicas.py, on tests/replica_world.py) ------------


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[ManualClock, Database, Slot, Slot]]:
    clock = ManualClock()
    db = Database(clock)
    fakes = make_targets()
    a, b = Slot("a", db, fakes), Slot("b", db, fakes)
    a.start()
    await quiesce()
    b.start()
    await quiesce()
    yield clock, db, a, b
    for slot in (a, b):
        await slot.kill()


def running(slot: Slot) -> Process:
    assert slot.process is not None
    return slot.process


async def test_a_leader_paused_past_its_lease_opens_no_incident_when_it_resumes(
    replicas: tuple[ManualClock, Database, Slot, Slot],
) -> None:
    """a leads and sees the app's error rate go up once (its rule pending); SIGSTOP past its
    lease; b leads and opens the incident. On SIGCONT, a's check delivers before its renewal
    runs: a must not open a second incident for the rule (nor record anything for it)."""
    clock, db, a, b = replicas
    pa = running(a)
    await pa.engine.observe(observation("app", BAD, pa.clock.now()))
    pa.pause()
    await advance(clock, 10.0, stop=lambda: False)
    pb = running(b)
    assert pb.acting
    assert pb.leadership.may_act()
    await pb.engine.observe(observation("app", BAD, pb.clock.now()))
    await advance(clock, 2.0, stop=lambda: False)
    await pb.engine.observe(observation("app", BAD, pb.clock.now()))
    await quiesce()
    opened = [i.id for i in db.data.incidents.values() if i.is_open]
    assert len(opened) == 1
    pa.unpause()  # SIGCONT: its check's timer fires before its renewal's
    await pa.engine.observe(observation("app", BAD, pa.clock.now()))
    pa.flush()
    await quiesce()
    assert [i.id for i in db.data.incidents.values() if i.is_open] == opened
    assert not db.violations


async def test_a_leader_back_under_a_new_epoch_does_not_run_a_job_time_again(
    replicas: tuple[ManualClock, Database, Slot, Slot],
) -> None:
    """a leads, its job due at the next minute; SIGSTOP past its lease; b leads and runs that
    minute's job; b dies. On SIGCONT a claims the lease again, now under epoch 3: its memory is
    from epoch 1 (the job still due), so it must not go on as the leader and run the job again."""
    clock, db, a, b = replicas
    pa = running(a)
    await advance(clock, 50.0, stop=lambda: False)
    assert pa.leadership.may_act()
    pa.pause()
    await advance(clock, 12.0, stop=lambda: False)  # b leads from 59 s and runs the 60 s job
    (run,) = db.data.job_runs.values()
    assert db.run_claims[run.id] == (running(b).holder, 2)
    await b.kill()
    await advance(clock, 12.0, stop=lambda: False)  # b's lease runs out
    pa.resume()
    await quiesce()
    assert [(r.job, r.scheduled_at) for r in db.data.job_runs.values()] == [
        (run.job, run.scheduled_at)
    ]
    assert [c.incident for c in db.calls] == [f"job-backup-{run.id}"]
    assert not db.violations
