"""Procedures on a moved clock: steps in order, each recorded; a failure undoes the steps done,
newest first, then pages; a cancel undoes without paging; a restart resumes at the step, and
a step whose effect is unknown runs again only once an operator approves."""

from __future__ import annotations

import pytest

from daemon.config.document import config_model
from daemon.core.models import Incident, RemediationResult, Status
from daemon.pipeline.approvals import Decision
from daemon.procedures.config import ProcedureConfig
from daemon.procedures.models import RunStatus, StepStatus
from daemon.procedures.runner import (
    PreconditionsNotMet,
    Refused,
    UnknownProcedure,
)
from remediations.base import RemediationContext
from tests.memory_store import MemoryData
from tests.procedure_world import Harness
from tests.world import FakeConfig


def ran(h: Harness) -> dict[str, int]:
    return {name: len(a.calls) for name, a in h.actions.items() if a.calls}


async def test_a_run_goes_through_every_step_in_order_and_records_each() -> None:
    h = await Harness().open()
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(5)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.SUCCEEDED
    assert [s.status for s in stored.steps] == [StepStatus.SUCCEEDED] * 5
    assert h.order == ["backup", "maintenance_on", "migrate", "maintenance_off"]
    assert h.actions["migrate"].calls == [run.id]
    kinds = [e.kind for e in stored.timeline]
    assert (kinds[0], kinds[-1]) == ("started", "succeeded")
    assert kinds.count("step") == 5
    (job_run,) = await h.store.job_runs("nightly_backup")
    assert (job_run.trigger, job_run.outcome) == ("procedure", "succeeded")
    await h.close()


async def test_a_failed_step_undoes_the_steps_done_newest_first_then_pages() -> None:
    h = await Harness().open()
    h.actions["migrate"].outcomes = [False]
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(5)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.FAILED
    statuses = [s.status for s in stored.steps]
    assert statuses == [
        StepStatus.SUCCEEDED,  # a backup has no undo
        StepStatus.UNDONE,  # maintenance turned off again
        StepStatus.FAILED,
        StepStatus.PENDING,
        StepStatus.PENDING,
    ]
    assert h.order == ["backup", "maintenance_on", "migrate", "maintenance_off", "page"]
    assert h.actions["page"].calls == [run.id]
    assert "migrate failed" in stored.timeline[-1].message
    await h.close()


async def test_a_check_that_does_not_come_back_fails_the_run_after_its_timeout() -> None:
    h = await Harness().open()
    h.checks.status["app"] = Status.CRITICAL
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(59)
    assert (await h.stored(run.id)).status is RunStatus.RUNNING
    assert h.checks.runs.count("app") >= 25  # run again and again, not at its interval
    await h.clock.advance(2)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.FAILED
    assert "app not OK within 60s (critical: seen)" in stored.steps[-1].detail
    assert h.actions["page"].calls == [run.id]
    await h.close()


async def test_the_page_says_what_failed_and_is_critical() -> None:
    h = await Harness().open()
    h.actions["migrate"].outcomes = [False]
    seen: list[Incident] = []
    page = h.actions["page"]
    execute = page.execute

    async def noted(ctx: RemediationContext, incident: Incident) -> RemediationResult:
        seen.append(incident)
        return await execute(ctx, incident)

    page.execute = noted  # type: ignore[method-assign]
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(5)
    [incident] = seen
    assert incident.severity == "critical"  # "info" pages nobody awake
    assert incident.summary == "procedure migrate failed: migrate failed: migrate: it broke"
    assert (incident.id, incident.trigger["params"]) == (run.id, {"version": "v1.2.3"})
    await h.close()


class RetryingConfig(FakeConfig):
    """Like an API remediation's: `timeout` bounds one attempt, `deadline()` the retries and
    waits of one execution."""

    def deadline(self) -> float:
        return 4 * self.timeout


async def test_a_remediation_step_is_bounded_by_its_deadline_not_by_one_attempt() -> None:
    h = await Harness().open()
    config = RetryingConfig()
    h.runner.actions = lambda name: (h.actions[name], config) if name in h.actions else None
    h.actions["maintenance_on"].hang = True  # a redeploy still building
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(2 * config.timeout)
    assert (await h.stored(run.id)).steps[1].status is StepStatus.RUNNING
    h.actions["maintenance_on"].release.set()
    await h.clock.advance(5)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.SUCCEEDED, stored.timeline[-1].message
    await h.close()


async def test_a_job_step_is_bounded_by_its_timeout_and_its_run_recorded_interrupted() -> None:
    procedure = {
        "steps": [
            {"name": "on", "run": "maintenance_on", "undo": ["maintenance_off"]},
            {"name": "backup", "job": "nightly_backup", "timeout": "20s"},  # the job's: 30s
        ]
    }
    h = await Harness(**procedure).open()
    h.actions["backup"].hang = True
    run = await h.runner.start("migrate", {}, "ana")
    await h.clock.advance(19)
    assert (await h.stored(run.id)).status is RunStatus.RUNNING
    await h.clock.advance(2)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.FAILED
    assert stored.steps[1].detail == "job nightly_backup did not finish within 20s"
    (job_run,) = await h.store.job_runs("nightly_backup")
    assert job_run.outcome == "interrupted"
    assert h.actions["maintenance_off"].calls == [run.id]
    await h.close()


async def test_bad_params_and_unmet_preconditions_refuse_the_start_and_record_nothing() -> None:
    h = await Harness().open()
    with pytest.raises(Refused, match=r"params.version: required"):
        await h.runner.start("migrate", {}, "ana")
    with pytest.raises(Refused, match=r"params.version: 'latest' does not match"):
        await h.runner.start("migrate", {"version": "latest"}, "ana")
    with pytest.raises(Refused, match=r"params.force: not a parameter"):
        await h.runner.start("migrate", {"version": "v1.0.0", "force": "yes"}, "ana")
    with pytest.raises(Refused, match=r"one line"):
        await h.runner.start("migrate", {"version": "v1.0.0\nrm -rf /"}, "ana")
    h.checks.status["database"] = Status.CRITICAL
    h.checks.run_now("database")
    with pytest.raises(PreconditionsNotMet, match=r"database is critical: seen"):
        await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    with pytest.raises(UnknownProcedure):
        await h.runner.start("nope", {}, "ana")
    assert await h.store.list_procedure_runs() == []
    assert ran(h) == {}
    await h.close()


async def test_a_cancel_cuts_the_step_short_and_undoes_without_paging() -> None:
    h = await Harness().open()
    h.actions["migrate"].hang = True
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(1)
    assert h.runner.cancel(run.id, "ana", "wrong release")
    await h.clock.advance(1)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.CANCELLED
    assert stored.steps[2].status is StepStatus.CANCELLED
    assert stored.steps[1].status is StepStatus.UNDONE
    assert h.actions["page"].calls == []
    assert not h.runner.cancel(run.id, "ana", "again")  # over
    await h.close()


async def test_an_approval_step_waits_for_an_operator_and_a_rejection_fails_the_run() -> None:
    steps = [
        {"name": "on", "run": "maintenance_on", "undo": ["maintenance_off"]},
        {"name": "approve", "approval": True, "timeout": "15m"},
        {"name": "migrate", "run": "migrate"},
    ]
    h = await Harness(steps=steps).open()
    run = await h.runner.start("migrate", {}, "ana")
    await h.clock.advance(60)
    assert [p.incident_id for p in h.approvals.pending.values()] == [run.id]
    assert h.approvals.decide(run.id, Decision(False, "bob", "not tonight"))
    await h.clock.advance(1)
    stored = await h.stored(run.id)
    assert stored.status is RunStatus.FAILED
    assert stored.steps[1].detail == "rejected by bob: not tonight"
    assert ran(h) == {"maintenance_on": 1, "maintenance_off": 1}
    await h.close()


async def test_a_restart_resumes_at_the_step_and_asks_before_running_one_of_unknown_effect() -> (
    None
):
    data = MemoryData()
    h = await Harness(data).open()
    h.actions["migrate"].hang = True
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(1)
    await h.close()  # runbookd stops mid-migration: the step's effect is unknown
    assert (await h.stored(run.id)).steps[2].status is StepStatus.RUNNING

    again = await Harness(data).open()
    await again.clock.advance(10)
    assert again.actions["migrate"].calls == []  # not run again blindly
    assert [p.incident_id for p in again.approvals.pending.values()] == [run.id]
    assert again.approvals.decide(run.id, Decision(True, "ana", "checked: it did not run"))
    await again.clock.advance(5)
    stored = await again.stored(run.id)
    assert stored.status is RunStatus.SUCCEEDED
    assert again.actions["migrate"].calls == [run.id]
    assert again.actions["maintenance_on"].calls == []  # done before the restart: not again
    assert any(e.kind == "unknown" for e in stored.timeline)
    await again.close()


async def test_a_step_of_unknown_effect_not_let_run_again_ends_failed_and_is_undone() -> None:
    """Tried as a user: after a restart mid-migration, a rejection left the run failed with
    its step still "running"."""
    data = MemoryData()
    h = await Harness(data).open()
    h.actions["migrate"].hang = True
    run = await h.runner.start("migrate", {"version": "v1.2.3"}, "ana")
    await h.clock.advance(1)
    await h.close()
    again = await Harness(data).open()
    await again.clock.advance(1)
    assert again.approvals.decide(run.id, Decision(False, "ana", "it ran: checked the db"))
    await again.clock.advance(1)
    stored = await again.stored(run.id)
    assert stored.status is RunStatus.FAILED
    assert stored.steps[2].status is StepStatus.FAILED
    assert "rejected by ana: it ran: checked the db" in stored.steps[2].detail
    assert stored.steps[1].status is StepStatus.UNDONE
    assert again.actions["migrate"].calls == []
    await again.close()


def test_a_procedure_naming_what_the_config_lacks_is_refused_at_load() -> None:
    from daemon.config.document import reference_problems

    doc = {
        "procedures": {
            "p": {
                "preconditions": ["nope"],
                "steps": [{"name": "a", "run": "x", "undo": ["y"]}, {"name": "b", "job": "j"}],
                "on_failure": ["z"],
            }
        }
    }
    config = config_model().model_validate(doc)
    found = {".".join(map(str, path)): message for path, message in reference_problems(config)}
    assert set(found) == {
        "procedures.p.preconditions.0",
        "procedures.p.steps.0.run",
        "procedures.p.steps.0.undo.0",
        "procedures.p.steps.1.job",
        "procedures.p.on_failure.0",
    }
    assert found["procedures.p.steps.1.job"].startswith("no job named 'j'")


def test_a_step_is_exactly_one_kind_and_names_are_unique() -> None:
    with pytest.raises(ValueError, match="exactly one of run, job, wait_for or approval"):
        ProcedureConfig.model_validate({"steps": [{"name": "a", "run": "x", "job": "y"}]})
    with pytest.raises(ValueError, match="two steps are named 'a'"):
        ProcedureConfig.model_validate(
            {"steps": [{"name": "a", "run": "x"}, {"name": "a", "run": "y"}]}
        )
