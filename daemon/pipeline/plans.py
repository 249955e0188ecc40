"""The plan runner: a rule's plan from its gates to its end, and back on its feet after a
restart.

A plan is the rule's `do:` list, each step walked through the stages (daemon/pipeline/
stages.py). A failed step stops `do:` (later steps may rely on it) and runs `escalate:`; a
step held back lets the others run, then `escalate:` runs; a rejected approval ends the plan
(an operator has taken over). After the last step the rule must clear within `verify_within`,
or `escalate:` runs. The circuit breaker counts plans that acted and did not help. Where a
plan is goes to the store at every move (daemon/pipeline/progress.py), so `recover` resumes
it after a restart or a crash.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from daemon.core.models import Incident, Step
from daemon.pipeline.acting import Actor
from daemon.pipeline.notices import Notices
from daemon.pipeline.plan import STOPS, Run, StepOutcome, Stopped
from daemon.pipeline.progress import PLANS, Progress
from daemon.pipeline.safety import CircuitBreaker, TargetLocks
from daemon.pipeline.stages import Attempt, Gate, Stage, stop_resolved
from daemon.rules.config import RuleConfig
from daemon.store.protocol import Fenced

log = structlog.get_logger("runbookd.pipeline")

BLIND_SUFFIX = ":blind"

# Timeline entries an incident may have before its plan begins.
BEFORE_PLAN = frozenset({Step.OPENED, Step.RESTORED, Step.ALERT, Step.ACKNOWLEDGED})


class PlanRunner:
    def __init__(
        self,
        actor: Actor,
        notices: Notices,
        *,
        runs: dict[str, Run],
        locks: TargetLocks,
        breaker: CircuitBreaker,
        gates: list[Gate],
        stages: list[Stage],
    ) -> None:
        self.actor = actor
        self.notices = notices
        self.runs = runs  # the plans under way, by incident id
        self.locks = locks
        self.breaker = breaker
        self.gates = gates
        self.stages = stages

    def start(self, incident: Incident, rule: RuleConfig) -> None:
        # The rule fires again: a pending undo of the last episode (scale-in) is off.
        self.notices.cancel_undo(incident.rule)
        run = Run(incident, rule, Progress(list(rule.do), list(rule.escalate)))
        self.runs[incident.id] = run
        self.actor.tasks.spawn(self._begin(run), f"plan {incident.id}")

    async def _begin(self, run: Run) -> None:
        for gate in self.gates:
            if not await gate.admit(run):
                self._ended(run)
                return
        await self._run(run)

    async def _run(self, run: Run) -> None:
        """The plan from where its progress is, to the end."""
        incident, rule, progress = run.incident, run.rule, run.progress
        try:
            if progress.stage in ("do", "notify"):
                outcome = await self._steps(run, "do")
                if (
                    outcome in (StepOutcome.REJECTED, StepOutcome.RESOLVED)
                    or progress.stage == "notify"
                ):
                    progress.enter("done")
                elif outcome is StepOutcome.FAILED:
                    await self._to_escalate(run, "a step did not succeed", helped=False)
                elif outcome is StepOutcome.HELD:
                    await self._to_escalate(
                        run, f"automation held back ({', '.join(progress.held)})"
                    )
                elif rule.verify_within is not None and progress.acted:
                    await self._to_verify(run, rule.verify_within)
                else:
                    progress.enter("done")
            if progress.stage == "verify":
                await self._verify(run)
            if progress.stage == "escalate":
                await self._escalate(run)
            await self._finish(run)
        except Stopped:
            return  # the progress stays in the store: the plan resumes after the restart
        except Exception as exc:  # a bug must not take the daemon down; say so on the timeline
            log.exception("plan crashed", incident=incident.id)
            await self.actor.recorder.record(
                incident, Step.ERROR, f"plan stopped by internal error: {exc!r}"
            )
            await self.actor.store.put_value(PLANS, incident.id, None)
        finally:
            self._ended(run)

    def _ended(self, run: Run) -> None:
        self.locks.release(run.incident.id)
        if self.runs.get(run.incident.id) is run:
            del self.runs[run.incident.id]

    async def _steps(self, run: Run, phase: str) -> StepOutcome:
        """The stage's steps from `index` on, in order: DONE, HELD (one was held back), or
        the outcome that stopped them there."""
        progress = run.progress
        steps = progress.steps()
        held = progress.held and progress.stage == "do"
        outcome = StepOutcome.HELD if held else StepOutcome.DONE
        while progress.index < len(steps):
            if run.cleared.is_set():
                return await stop_resolved(self.actor, run)
            step = await self._step(run, steps[progress.index], phase)
            if step in STOPS:
                return step
            if step is StepOutcome.HELD:
                outcome = StepOutcome.HELD
        return outcome

    async def _step(self, run: Run, name: str, phase: str) -> StepOutcome:
        """One remediation through the stages, until one decides. Every way out moves the
        progress past it, in the transaction that records the outcome."""
        plan = self.actor.plan
        remediation, config = plan.remediations.get(name), plan.configs.get(name)
        if remediation is None or config is None:
            await self.actor.past(run, Step.SKIPPED, f"{name}: no longer configured")
            return StepOutcome.FAILED
        attempt = Attempt(run, name, phase, plan, remediation, config)
        for stage in self.stages:
            if (outcome := await stage.decide(attempt)) is not None:
                return outcome
        raise AssertionError("the last stage (execute) always decides")

    async def _finish(self, run: Run) -> None:
        """The plan is over: the breaker counts it (when it acted and the outcome is known),
        and its progress goes, in one transaction."""
        progress = run.progress
        counted = progress.helped is not None and progress.acted
        if not (counted or run.saved):
            return  # a plan with no steps: nothing to write
        async with self.actor.recorder.batch():
            try:
                await self.actor.fence.check()  # the plan is the leader's to end
            except Fenced:
                raise Stopped from None
            if progress.helped is not None and progress.acted:
                await self._count_for_breaker(run, progress.helped)
            await self.actor.store.put_value(PLANS, run.incident.id, None)

    async def _count_for_breaker(self, run: Run, helped: bool) -> None:
        rule = run.incident.rule
        if await self.breaker.record(rule, helped=helped, now=self.actor.clock.now()):
            await self.actor.recorder.record(
                run.incident,
                Step.CIRCUIT_OPEN,
                f"circuit opened: {self.breaker.after} plans in a row did not help; "
                f"automation for {rule} stops until an operator resets it "
                f"(POST /api/v1/rules/{rule}/reset)",
            )
            self.actor.metrics.circuit_open.labels(rule).set(1)

    async def _to_verify(self, run: Run, within: float) -> None:
        now = self.actor.clock.now()
        progress = run.progress
        progress.enter("verify")
        progress.verify_started, progress.verify_until = now, now + within
        async with self.actor.recorder.batch():
            await self.actor.recorder.record(
                run.incident, Step.VERIFY, f"verifying: the rule must clear within {within:g}s"
            )
            await self.actor.save(run)

    async def _verify(self, run: Run) -> None:
        incident, progress, clock = run.incident, run.progress, self.actor.clock
        if not incident.is_open:
            run.cleared.set()
        within = progress.verify_until - progress.verify_started
        try:
            left = progress.verify_until - clock.now()
            if left <= 0 and not run.cleared.is_set():
                raise TimeoutError  # the deadline passed while runbookd was down
            async with clock.timeout(left):
                await run.cleared.wait()
        except TimeoutError:
            await self._to_escalate(
                run, f"still firing {within:g}s after remediation", helped=False
            )
            return
        waited = clock.now() - progress.verify_started
        closed_by = incident.resolved_by
        progress.enter("done")
        recorder = self.actor.recorder
        async with recorder.batch():
            if closed_by is not None:
                # An operator closed it: whether the remediation helped is unknown, and the
                # circuit breaker counts it neither way.
                message = f"not verified: closed by {closed_by} after {waited:.0f}s"
                await recorder.record(incident, Step.VERIFY, message)
            else:
                progress.helped = True
                message = f"verified: the rule cleared {waited:.0f}s after remediating"
                await recorder.record(incident, Step.VERIFIED, message)
            await self.actor.save(run)

    async def _to_escalate(self, run: Run, why: str, *, helped: bool | None = None) -> None:
        progress = run.progress
        progress.enter("escalate")
        progress.why, progress.helped = why, helped
        await self.actor.save(run)

    async def _escalate(self, run: Run) -> None:
        """Announce the escalation once (with the move past it), then run its steps."""
        incident, progress = run.incident, run.progress
        if progress.index == 0 and progress.asked_at is None:
            why = progress.why
            if incident.acknowledged_by is not None:  # the decision reads the state...
                acked = next(  # ...and the message the record, which holds the reason too
                    (e.message for e in incident.timeline if e.kind == Step.ACKNOWLEDGED),
                    f"acknowledged by {incident.acknowledged_by}",
                )
                message, progress.escalate = f"{why}; not escalating: {acked}", []
            elif not progress.escalate:
                message = f"{why}; no escalation configured"
            else:
                message = f"{why}: escalating to {', '.join(progress.escalate)}"
            progress.why = ""
            async with self.actor.recorder.batch():
                await self.actor.recorder.record(incident, Step.ESCALATE, message)
                await self.actor.save(run)
        await self._steps(run, "escalate")
        progress.enter("done")

    # -- after a restart ---------------------------------------------------------------------

    async def recover(self, incidents: Iterable[Incident], rules: dict[str, RuleConfig]) -> None:
        """Resume every plan where its progress says (see `Pipeline.recover`)."""
        actor, store = self.actor, self.actor.store
        by_id = {i.id: i for i in incidents}
        interrupted: dict[str, str] = {}  # incident id -> the step that was running
        for action in await store.running_actions():
            await store.end_action(action.id, "interrupted")
            actor.count(action.remediation, actor.kind(action.remediation), "interrupted")
            incident = by_id.get(action.incident_id) or await store.get_incident(action.incident_id)
            if incident is None:
                continue
            remediation = actor.plan.remediations.get(action.remediation)
            if remediation is not None and remediation.notifier:
                message = (
                    f"{action.remediation} was being delivered when runbookd stopped; it is "
                    "delivered from the outbox (the same dedup key: one page, not two)"
                )
            else:
                interrupted[incident.id] = action.remediation
                message = (
                    f"{action.remediation} was running when runbookd stopped; its effect is "
                    "unknown and it is not repeated"
                )
            await actor.recorder.record(
                incident,
                Step.INTERRUPTED,
                message,
                remediation=action.remediation,
                began_at=action.ts,
            )
        saved = await store.values(PLANS)
        for incident_id, value in saved.items():
            incident = by_id.get(incident_id)
            progress = Progress.from_json(value)
            rule = _rule_for(incident, rules) if incident is not None else None
            if incident is None or progress is None or rule is None:
                # Resolved while the plan was under way, or its rule is gone: nothing to
                # resume (the resolution itself went to the remediations that acted).
                await store.put_value(PLANS, incident_id, None)
                continue
            if (step := interrupted.pop(incident_id, None)) is not None:
                _interrupted(progress, step)
            self._resume(Run(incident, rule, progress, saved=True))
        for incident in by_id.values():
            rule = _rule_for(incident, rules)
            if rule is None or incident.id in saved:
                continue
            if incident.id in interrupted:  # a plan from before progress was kept
                progress = Progress([], list(rule.escalate), stage="escalate")
                progress.why = "a remediation was interrupted"
                self._resume(Run(incident, rule, progress))
            elif not any(e.kind not in BEFORE_PLAN for e in incident.timeline):
                self.start(incident, rule)

    def _resume(self, run: Run) -> None:
        self.runs[run.incident.id] = run
        for target in run.progress.targets:
            self.locks.acquire(target, run.incident.id)
        self.actor.tasks.spawn(self._run(run), f"plan {run.incident.id}")


def _interrupted(progress: Progress, step: str) -> None:
    """The step at `index` was running: it is over, and the plan escalates."""
    if progress.stage == "do":
        progress.enter("escalate")
        progress.why = f"{step} was interrupted"
    else:
        progress.next_step()


def _rule_for(incident: Incident, rules: dict[str, RuleConfig]) -> RuleConfig | None:
    """The rule whose plan an incident runs: a "monitoring blind" incident (`RULE:blind`) runs
    its rule's `on_blind` steps, as the engine planned it."""
    rule = rules.get(incident.rule)
    if rule is not None or not incident.rule.endswith(BLIND_SUFFIX):
        return rule
    watched = rules.get(incident.rule.removesuffix(BLIND_SUFFIX))
    if watched is None:
        return None
    return watched.model_copy(
        update={"do": watched.on_blind, "escalate": [], "verify_within": None}
    )
