"""StepFacts: the one place where a timeline entry's plan-step keys are written and read."""

from __future__ import annotations

from daemon.core.models import RESOLVE_PHASE, Step, StepFacts, TimelineEntry


def entry(kind: Step, **data: object) -> TimelineEntry:
    return TimelineEntry(0.0, kind, "m", dict(data))


def test_the_written_keys_read_back_and_unknown_facts_are_left_out() -> None:
    facts = StepFacts("rollback", "vercel_rollback", "execute", ok=True)
    assert StepFacts.read(facts.data()) == facts
    assert StepFacts("page").data() == {"remediation": "page"}


def test_an_entry_about_no_step_has_none() -> None:
    assert entry(Step.OPENED, value=0.2).step is None
    assert entry(Step.RESULT, remediation=3).step is None  # not a name


def test_facts_of_the_wrong_type_are_unknown_not_guessed() -> None:
    step = entry(Step.RESULT, remediation="rollback", type=1, phase=None, ok="yes").step
    assert step == StepFacts("rollback")


def test_succeeded_is_a_good_result_of_a_plan_step_only() -> None:
    good = entry(Step.RESULT, **StepFacts("page", "pagerduty", "execute", ok=True).data())
    assert (
        good.succeeded()
        == good.succeeded("page")
        == StepFacts("page", "pagerduty", "execute", True)
    )
    assert good.succeeded("other") is None
    failed = entry(Step.RESULT, **StepFacts("page", ok=False).data())
    undone = entry(Step.RESULT, **StepFacts("page", phase=RESOLVE_PHASE, ok=True).data())
    started = entry(Step.ACTION, **StepFacts("page", "pagerduty", "execute").data())
    assert [e.succeeded() for e in (failed, undone, started)] == [None, None, None]
    assert undone.step is not None
    assert undone.step.on_resolve
