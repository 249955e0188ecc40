"""The safety envelope as stages, in the spirit of Alertmanager's notifier pipeline: each
stage answers one question, and the plan runner walks them in order until one decides.

Once per plan, when it begins (`Gate`: may the plan go on?):

    silences -> circuit breaker

Then for every step (`Stage`: the step's `StepOutcome`, or None to pass it on):

    dry-run -> page -> cooldown, run limit, budget -> approval -> target lock -> execute

The order is the point. A silence comes first: a silenced incident does nothing at all, not
even a dry run or a page. The circuit breaker comes next and turns the plan into its pages
only, so the step stages never see a fix of an open circuit. A dry run acts on nothing, so
nothing after it is asked. Pages take their own short way (run limit, then the outbox) before
the limits meant for fixes: people must hear about trouble whatever the budget says. The limits
come before approval, so nobody is asked to approve what could not run anyway. The lock comes
after approval, so a step waiting for people does not hold its target from other incidents,
and right before execute, so nothing can take the target in between. Every way out of a stage
that decides moves the plan past the step in the transaction that records why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from daemon.core.models import Incident, Step, StepFacts
from daemon.core.units import format_duration
from daemon.pipeline.acting import Actor
from daemon.pipeline.approvals import Approvals, Decision
from daemon.pipeline.outbox import Outbox
from daemon.pipeline.plan import Plan, Run, StepOutcome
from daemon.pipeline.progress import Progress
from daemon.pipeline.safety import (
    CircuitBreaker,
    TargetLocks,
    cooldown,
    over_budget,
    run_limit,
)
from daemon.pipeline.silences import Silences
from remediations.base import Remediation, RemediationConfig


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step going through the envelope, with the remediations as they were when it
    began (a reload during an approval does not change the step half-way)."""

    run: Run
    name: str
    phase: str  # "do" or "escalate", for the timeline
    plan: Plan
    remediation: Remediation
    config: RemediationConfig

    @property
    def incident(self) -> Incident:
        return self.run.incident

    @property
    def progress(self) -> Progress:
        return self.run.progress

    @property
    def kind(self) -> str:
        return self.remediation.type

    @property
    def base(self) -> dict[str, str]:
        """What every timeline entry of the step carries."""
        return StepFacts(self.name, self.kind, self.phase).data()


class Gate(Protocol):
    async def admit(self, run: Run) -> bool:
        """Whether the plan goes on; a gate that says no has recorded why."""
        ...


class Stage(Protocol):
    async def decide(self, step: Attempt) -> StepOutcome | None:
        """The step's outcome, when this stage settles it; None passes it to the next."""
        ...


# -- helpers the stages and the plan runner share ---------------------------------------------


async def held(actor: Actor, step: Attempt, reason: str, why: str) -> StepOutcome:
    """The step does not run now, for `reason` (a bounded metric label)."""
    actor.count(step.name, step.kind, reason)
    # A page sent moments ago still stands; a fix that was held back needs people.
    notifier = actor.plan.remediations[step.name].notifier
    if not notifier:
        step.progress.held.append(f"{step.name}: {reason.replace('_', ' ')}")
    await actor.past(step.run, Step.SKIPPED, f"{step.name}: {why}", **step.base, reason=reason)
    return StepOutcome.DONE if notifier else StepOutcome.HELD


async def stop_resolved(actor: Actor, run: Run) -> StepOutcome:
    """The incident resolved while the plan was under way: what is left of it does not
    run. The data that called for it is gone, and a page sent now would never be
    resolved at the pager (its resolution has gone out already)."""
    progress = run.progress
    left = progress.steps()[progress.index :]
    progress.enter("done")
    message = f"the incident resolved: {', '.join(left)} not run"
    async with actor.recorder.batch():
        await actor.recorder.record(run.incident, Step.SKIPPED, message, reason="resolved")
        await actor.save(run)
    return StepOutcome.RESOLVED


# -- once per plan ----------------------------------------------------------------------------


class SilenceGate:
    """Is the incident silenced (or in a maintenance window)? Then nothing runs for it, and
    nothing is saved: the plan simply ends."""

    def __init__(self, actor: Actor, silences: Silences) -> None:
        self.actor, self.silences = actor, silences

    async def admit(self, run: Run) -> bool:
        incident = run.incident
        silence = self.silences.matching(incident, self.actor.clock.now())
        if silence is None:
            return True
        await self.actor.recorder.record(
            incident,
            Step.SILENCED,
            f"silenced by {silence.id} ({silence.created_by}: {silence.comment}) "
            f"until {_iso(silence.ends_at)}: nothing runs",
            silence=silence.id,
        )
        return False


class CircuitGate:
    """Is the rule's circuit open (plans that acted and did not help)? Then the plan runs its
    pages only, until an operator resets the circuit."""

    def __init__(self, actor: Actor, breaker: CircuitBreaker) -> None:
        self.actor, self.breaker = actor, breaker

    async def admit(self, run: Run) -> bool:
        # Nothing is saved until the first step: a plan with no progress in the store and
        # nothing on its timeline is one that never began, and starts afresh after a crash.
        incident, progress = run.incident, run.progress
        if not await self.breaker.is_open(incident.rule):
            return True
        notifiers = self.actor.plan.notifiers()
        steps = dict.fromkeys([*progress.do, *progress.escalate])
        progress.notify = [name for name in steps if name in notifiers]
        progress.enter("notify")
        async with self.actor.recorder.batch():
            await self.actor.recorder.record(
                incident,
                Step.CIRCUIT_OPEN,
                "automation for this rule is stopped (circuit open after plans that did "
                "not help); paging only, until an operator resets it",
            )
            await self.actor.save(run)
        return True


# -- every step -------------------------------------------------------------------------------


class DryRun:
    """Is the rule or the whole daemon in dry-run? Then the step is only recorded."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    async def decide(self, step: Attempt) -> StepOutcome | None:
        if not (step.plan.dry_run or step.run.rule.dry_run):
            return None
        scope = "global" if step.plan.dry_run else "rule"
        self.actor.count(step.name, step.kind, "dry_run")
        message = f"dry-run ({scope}): would run {step.name} ({step.kind})"
        await self.actor.past(step.run, Step.DRY_RUN, message, **step.base)
        return StepOutcome.DONE


class Page:
    """Is the step a page (a notifier)? A page goes out whatever else is going on: no target
    lock, budget, cooldown or circuit breaker holds it (its dedup key is the incident); only
    its own run limit does. Queued in the outbox in the transaction that moves the plan past
    it: sent once, after a restart too."""

    def __init__(self, actor: Actor, outbox: Outbox) -> None:
        self.actor, self.outbox = actor, outbox

    async def decide(self, step: Attempt) -> StepOutcome | None:
        if not step.remediation.notifier:
            return None
        actor = self.actor
        now = actor.clock.now()
        if hold := await run_limit(actor.store, name=step.name, config=step.config, now=now):
            return await held(actor, step, hold.reason, hold.why)
        step.progress.next_step()
        async with actor.recorder.batch():
            item = await self.outbox.queue(step.incident.id, step.name, "execute")
            await actor.save(step.run)
        if actor.stopping:
            return StepOutcome.DONE  # delivered after the restart
        result = await self.outbox.attempt(item)
        if result is None or result.ok:
            return StepOutcome.DONE
        if result.recoverable:
            message = f"{step.name}: will be retried from the outbox"
            await actor.recorder.record(step.incident, Step.QUEUED, message, **step.base)
            return StepOutcome.DONE
        return StepOutcome.FAILED


class Limits:
    """Cooldown (per rule and remediation), run limit, then the action budget (all rules):
    may this fix run again so soon? Not asked again for a step that already waits for its
    approval (it passed them before it asked, perhaps before a restart)."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    async def decide(self, step: Attempt) -> StepOutcome | None:
        if step.progress.asked_at is not None:
            return None
        store, now = self.actor.store, self.actor.clock.now()
        hold = (
            await cooldown(
                store, rule=step.incident.rule, name=step.name, config=step.config, now=now
            )
            or await run_limit(store, name=step.name, config=step.config, now=now)
            or await over_budget(
                store, budget=step.plan.budget, notifiers=step.plan.notifiers(), now=now
            )
        )
        if hold is None:
            return None
        return await held(self.actor, step, hold.reason, hold.why)


class Approval:
    """Does a person have to say yes first (a destructive step, or `require_approval`)? The
    request and its deadline are saved, so a restart keeps waiting with the time it had.
    No answer holds the step back; a no ends the plan."""

    def __init__(self, actor: Actor, approvals: Approvals) -> None:
        self.actor, self.approvals = actor, approvals

    async def decide(self, step: Attempt) -> StepOutcome | None:
        needs_approval = step.config.require_approval
        if needs_approval is None:
            needs_approval = step.remediation.destructive
        if not needs_approval:
            return None
        decision = await self._ask(step)
        if step.run.cleared.is_set():
            return await stop_resolved(self.actor, step.run)
        if decision is None:
            why = f"no approval within {step.config.approval_timeout:g}s; not run"
            return await held(self.actor, step, "approval_timeout", why)
        if not decision.approved:
            self.actor.count(step.name, step.kind, "rejected")
            step.progress.next_step()
            await self.actor.save(step.run)
            return StepOutcome.REJECTED
        return None

    async def _ask(self, step: Attempt) -> Decision | None:
        actor, incident, progress = self.actor, step.incident, step.progress
        name, config = step.name, step.config
        if progress.decision is not None:  # answered before a restart
            return Decision(**progress.decision)
        if progress.asked_at is None or progress.deadline is None:
            now = actor.clock.now()
            progress.asked_at, progress.deadline = now, now + config.approval_timeout
            async with actor.recorder.batch():
                await actor.recorder.record(
                    incident,
                    Step.APPROVAL,
                    f"waiting for approval to run {name} ({step.kind}) for "
                    f"{format_duration(config.approval_timeout)}: approve or reject it on the "
                    f"incident's page in the console, or `runbookd incidents approve "
                    f"{incident.id}`",
                    **step.base,
                )
                await actor.save(step.run)
        decision = await self.approvals.wait(
            incident.id, name, progress.asked_at, progress.deadline
        )
        if decision is not None:
            verdict = Step.APPROVED if decision.approved else Step.REJECTED
            progress.decision = {
                "approved": decision.approved,
                "by": decision.by,
                "reason": decision.reason,
            }
            async with actor.recorder.batch():
                await actor.recorder.record(
                    incident,
                    verdict,
                    f"{name} {verdict} by {decision.by}: {decision.reason}",
                    **step.base,
                    by=decision.by,
                    reason=decision.reason,
                )
                await actor.save(step.run)
        return decision


class TargetLock:
    """Is another incident acting on the same target? Then this step is held back: two rules
    never roll back and scale one service at once. The plan keeps its targets in its
    progress, so the lock outlives a restart."""

    def __init__(self, actor: Actor, locks: TargetLocks) -> None:
        self.actor, self.locks = actor, locks

    async def decide(self, step: Attempt) -> StepOutcome | None:
        target = step.config.target or step.name
        if (holder := self.locks.acquire(target, step.incident.id)) is not None:
            why = f"target {target!r} is busy: incident {holder} is acting on it"
            return await held(self.actor, step, "target_busy", why)
        if target not in step.progress.targets:
            step.progress.targets.append(target)
        return None


class Execute:
    """The step runs (in the ledger before and after, bounded by its deadline). Last: it
    always decides."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    async def decide(self, step: Attempt) -> StepOutcome:
        step.progress.acted = True
        result = await self.actor.run_action(
            step.incident, step.name, step.remediation, step.config, step.phase, run=step.run
        )
        return StepOutcome.DONE if result.ok else StepOutcome.FAILED


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
