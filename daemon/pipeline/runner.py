"""The pipeline: runs a rule's plan inside the safety envelope, verifies, escalates.

A plan is the rule's `do:` list. Each step passes, in order:

    dry-run -> cooldown, run limit, budget -> approval (destructive steps) -> target lock
    -> execute (in the ledger before and after, bounded by the remediation's deadline)

and every outcome, including what was held back and why, lands on the incident's timeline.
Pages and other notifiers go through the store's outbox, so a failed page is retried later,
after a restart too. A failed step stops `do:` (later steps may rely on it) and runs
`escalate:`; a step held back lets the others run, then `escalate:` runs; a rejected approval
ends the plan (an operator has taken over). After the last step the rule must clear within
`verify_within`, or `escalate:` runs. The circuit breaker counts plans that acted and did not
help; once it opens, that rule's plans only page until an operator resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident, RemediationResult, Step
from daemon.engine.timeline import Recorder
from daemon.pipeline.approvals import Approvals, Decision
from daemon.pipeline.outbox import Outbox
from daemon.pipeline.progress import PLANS, Progress
from daemon.pipeline.safety import Budget, CircuitBreaker, TargetLocks, hold_back
from daemon.pipeline.silences import Silences
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import OUTCOMES, Metrics
from daemon.store.protocol import OutboxItem, Store
from remediations.base import Remediation, RemediationConfig, RemediationContext

log = structlog.get_logger("runbookd.pipeline")

# A remediation's `healthy` hook runs at most this often.
HEALTHY_EVERY = 60.0


@dataclass(slots=True)
class Plan:
    """What the pipeline has at hand for the remediations named in the config."""

    remediations: dict[str, Remediation]
    configs: dict[str, RemediationConfig]
    dry_run: bool = False
    budget: Budget = field(default_factory=Budget)
    breaker_after: int = 3

    def notifiers(self) -> frozenset[str]:
        return frozenset(n for n, r in self.remediations.items() if r.notifier)


@dataclass(slots=True)
class Run:
    incident: Incident
    rule: RuleConfig
    progress: Progress
    cleared: asyncio.Event = field(default_factory=asyncio.Event)
    saved: bool = False  # the progress is in the store


class Stopped(Exception):
    """The daemon is stopping: no new action starts; the plan resumes after the restart."""


BLIND_SUFFIX = ":blind"

# What a step came to: "done", "held" (held back), "failed" or "rejected" (the plan stops).
StepOutcome = str


class StoreState:
    """A remediation's own keys in the store (remediations.base.StateStore)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.namespace = f"remediation:{name}"

    async def get(self, key: str) -> Any:
        return await self.store.get_value(self.namespace, key)

    async def put(self, key: str, value: Any) -> None:
        await self.store.put_value(self.namespace, key, value)


class Pipeline:
    def __init__(
        self,
        plan: Plan,
        *,
        ctx: RemediationContext,
        store: Store,
        recorder: Recorder,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.store = store
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.approvals = Approvals(clock)
        self.locks = TargetLocks()
        self.breaker = CircuitBreaker(store, plan.breaker_after)
        self.outbox = Outbox(store, clock, self._deliver)
        self.silences = Silences(store)
        self.runs: dict[str, Run] = {}
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self._healthy_at: dict[str, float] = {}
        self._outbox_task: asyncio.Task[None] | None = None
        # Remediation calls under way (execute or resolve): what a drain waits for.
        self._acting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._zero_series(plan)

    def set_plan(self, plan: Plan) -> None:
        """A reload: later steps use the new remediations; running steps finish as they are."""
        self.plan = plan
        self.breaker.after = plan.breaker_after
        self._zero_series(plan)

    def _zero_series(self, plan: Plan) -> None:
        # Every outcome series exists from the start at 0, so increase() in an alert rule
        # sees the very first failure (a series born at 1 shows no increase).
        for name, remediation in plan.remediations.items():
            for outcome in OUTCOMES:
                self.metrics.remediations.labels(name, remediation.type, outcome)

    async def reset_circuit(self, rule: str) -> bool:
        """An operator resumes a rule's automation; False if its circuit was not open."""
        was_open = await self.breaker.reset(rule)
        self.metrics.circuit_open.labels(rule).set(0)
        log.info("circuit reset", rule=rule, was_open=was_open)
        return was_open

    def ctx_for(self, name: str) -> RemediationContext:
        return RemediationContext(self.ctx.session, self.clock, StoreState(self.store, name))

    # -- what the engine calls -------------------------------------------------------------

    def start(self, incident: Incident, rule: RuleConfig) -> None:
        # The rule fires again: a pending undo of the last episode (scale-in) is off.
        for task in self._resolving.pop(incident.rule, set()):
            task.cancel()
        run = Run(incident, rule, Progress(list(rule.do), list(rule.escalate)))
        self.runs[incident.id] = run
        self._spawn(self._begin_plan(run), f"plan {incident.id}")

    async def resolved(self, incident: Incident) -> None:
        run = self.runs.get(incident.id)
        if run is not None:
            run.cleared.set()
            self.approvals.withdraw(incident.id)
        owed = await self._owed(incident)
        task = self._spawn(self._notify_resolved(incident, owed), f"resolve {incident.id}")
        self._resolving[incident.rule].add(task)
        task.add_done_callback(self._resolving[incident.rule].discard)

    def healthy(self, rule: RuleConfig) -> None:
        """The rule is healthy: let its remediations note what good looks like (throttled)."""
        now = self.clock.now()
        for name in dict.fromkeys([*rule.do, *rule.escalate]):
            remediation = self.plan.remediations.get(name)
            if remediation is None or now - self._healthy_at.get(name, -HEALTHY_EVERY) < (
                HEALTHY_EVERY
            ):
                continue
            self._healthy_at[name] = now
            self._spawn(self._call_healthy(name, remediation), f"healthy {name}")

    # -- lifecycle ---------------------------------------------------------------------------

    def start_outbox(self) -> asyncio.Task[None]:
        """The retry loop, for as long as the daemon runs; the caller watches the task."""
        self._outbox_task = asyncio.create_task(self.outbox.run(), name="outbox")
        return self._outbox_task

    async def recover(self, incidents: Iterable[Incident], rules: dict[str, RuleConfig]) -> None:
        """After a restart or a crash: resume every plan where its progress says.

        An action left running is marked interrupted and never repeated (its effect is
        unknown): the plan escalates. A page left running is delivered from the outbox,
        whose dedup key makes that safe. A verification or an approval carries on with the
        deadline it had. An open incident whose plan never began (a crash right after it
        opened) starts its plan now."""
        await self.silences.load()  # the silences and maintenance windows of before
        by_id = {i.id: i for i in incidents}
        interrupted: dict[str, str] = {}  # incident id -> the step that was running
        for action in await self.store.running_actions():
            await self.store.end_action(action.id, "interrupted")
            self._count(action.remediation, self._kind(action.remediation), "interrupted")
            incident = by_id.get(action.incident_id) or await self.store.get_incident(
                action.incident_id
            )
            if incident is None:
                continue
            remediation = self.plan.remediations.get(action.remediation)
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
            await self.recorder.record(
                incident,
                Step.INTERRUPTED,
                message,
                remediation=action.remediation,
                began_at=action.ts,
            )
        saved = await self.store.values(PLANS)
        for incident_id, value in saved.items():
            incident = by_id.get(incident_id)
            progress = Progress.from_json(value)
            rule = _rule_for(incident, rules) if incident is not None else None
            if incident is None or progress is None or rule is None:
                # Resolved while the plan was under way, or its rule is gone: nothing to
                # resume (the resolution itself went to the remediations that acted).
                await self.store.put_value(PLANS, incident_id, None)
                continue
            if (step := interrupted.pop(incident_id, None)) is not None:
                self._interrupted(progress, step)
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

    @staticmethod
    def _interrupted(progress: Progress, step: str) -> None:
        """The step at `index` was running: it is over, and the plan escalates."""
        if progress.stage == "do":
            progress.enter("escalate")
            progress.why = f"{step} was interrupted"
        else:
            progress.next_step()

    def _resume(self, run: Run) -> None:
        self.runs[run.incident.id] = run
        for target in run.progress.targets:
            self.locks.acquire(target, run.incident.id)
        self._spawn(self._run_plan(run), f"plan {run.incident.id}")

    @property
    def busy(self) -> bool:
        """A remediation is being called."""
        return self._acting > 0

    async def idle(self, within: float) -> bool:
        """Wait up to `within` (real seconds) for every plan to end; True if they did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        return not pending

    async def drain(self, grace: float) -> bool:
        """Stop: no new action starts; the running ones get up to `grace` seconds to finish.
        Plans that are only waiting (a verification, an approval, the next step) stop at
        once: their progress is in the store and they resume after the restart. True if no
        running action had to be cancelled."""
        self.stopping = True
        if self._outbox_task is not None:
            self._outbox_task.cancel()
            await asyncio.gather(self._outbox_task, return_exceptions=True)
        finished = True
        if self._acting:
            try:
                async with asyncio.timeout(grace):
                    await self._quiet.wait()
            except TimeoutError:
                finished = False
                log.warning(
                    "drain grace over: cancelling running remediations", running=self._acting
                )
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return finished

    @contextmanager
    def _acting_on(self) -> Iterator[None]:
        """A remediation call, from its ledger entry to its recorded result: what a drain
        waits for, so a result is never cut off from its action."""
        if self.stopping:
            raise Stopped
        self._acting += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._acting -= 1
            if not self._acting:
                self._quiet.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_loud)
        return task

    # -- the plan ----------------------------------------------------------------------------

    async def _begin_plan(self, run: Run) -> None:
        incident, progress = run.incident, run.progress
        if (silence := self.silences.matching(incident, self.clock.now())) is not None:
            await self.recorder.record(
                incident,
                Step.SILENCED,
                f"silenced by {silence.id} ({silence.created_by}: {silence.comment}) "
                f"until {_iso(silence.ends_at)}: nothing runs",
                silence=silence.id,
            )
            self._ended(run)
            return
        # Nothing is saved until the first step: a plan with no progress in the store and
        # nothing on its timeline is one that never began, and starts afresh after a crash.
        if await self.breaker.is_open(incident.rule):
            notifiers = self.plan.notifiers()
            steps = dict.fromkeys([*progress.do, *progress.escalate])
            progress.notify = [name for name in steps if name in notifiers]
            progress.enter("notify")
            async with self.recorder.batch():
                await self.recorder.record(
                    incident,
                    Step.CIRCUIT_OPEN,
                    "automation for this rule is stopped (circuit open after plans that did "
                    "not help); paging only, until an operator resets it",
                )
                await self._save(run)
        await self._run_plan(run)

    async def _run_plan(self, run: Run) -> None:
        """The plan from where its progress is, to the end."""
        incident, rule, progress = run.incident, run.rule, run.progress
        try:
            if progress.stage in ("do", "notify"):
                outcome = await self._steps(run, "do")
                if outcome in ("rejected", "resolved") or progress.stage == "notify":
                    progress.enter("done")
                elif outcome == "failed":
                    await self._to_escalate(run, "a step did not succeed", helped=False)
                elif outcome == "held":
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
            await self.recorder.record(
                incident, Step.ERROR, f"plan stopped by internal error: {exc!r}"
            )
            await self.store.put_value(PLANS, incident.id, None)
        finally:
            self._ended(run)

    def _ended(self, run: Run) -> None:
        self.locks.release(run.incident.id)
        if self.runs.get(run.incident.id) is run:
            del self.runs[run.incident.id]

    async def _save(self, run: Run) -> None:
        await self.store.put_value(PLANS, run.incident.id, run.progress.to_json())
        run.saved = True

    async def _finish(self, run: Run) -> None:
        """The plan is over: the breaker counts it (when it acted and the outcome is known),
        and its progress goes, in one transaction."""
        progress = run.progress
        counted = progress.helped is not None and progress.acted
        if not (counted or run.saved):
            return  # a plan with no steps: nothing to write
        async with self.recorder.batch():
            if progress.helped is not None and progress.acted:
                await self._count_for_breaker(run, progress.helped)
            await self.store.put_value(PLANS, run.incident.id, None)

    async def _to_verify(self, run: Run, within: float) -> None:
        now = self.clock.now()
        progress = run.progress
        progress.enter("verify")
        progress.verify_started, progress.verify_until = now, now + within
        async with self.recorder.batch():
            await self.recorder.record(
                run.incident, Step.VERIFY, f"verifying: the rule must clear within {within:g}s"
            )
            await self._save(run)

    async def _verify(self, run: Run) -> None:
        incident, progress = run.incident, run.progress
        if not incident.is_open:
            run.cleared.set()
        within = progress.verify_until - progress.verify_started
        try:
            left = progress.verify_until - self.clock.now()
            if left <= 0 and not run.cleared.is_set():
                raise TimeoutError  # the deadline passed while runbookd was down
            async with self.clock.timeout(left):
                await run.cleared.wait()
        except TimeoutError:
            await self._to_escalate(
                run, f"still firing {within:g}s after remediation", helped=False
            )
            return
        waited = self.clock.now() - progress.verify_started
        closed_by = next(
            (e.data["by"] for e in incident.timeline if e.kind == Step.RESOLVED and "by" in e.data),
            None,
        )
        progress.enter("done")
        async with self.recorder.batch():
            if closed_by is not None:
                # An operator closed it: whether the remediation helped is unknown, and the
                # circuit breaker counts it neither way.
                message = f"not verified: closed by {closed_by} after {waited:.0f}s"
                await self.recorder.record(incident, Step.VERIFY, message)
            else:
                progress.helped = True
                message = f"verified: the rule cleared {waited:.0f}s after remediating"
                await self.recorder.record(incident, Step.VERIFIED, message)
            await self._save(run)

    async def _count_for_breaker(self, run: Run, helped: bool) -> None:
        rule = run.incident.rule
        if await self.breaker.record(rule, helped=helped, now=self.clock.now()):
            await self.recorder.record(
                run.incident,
                Step.CIRCUIT_OPEN,
                f"circuit opened: {self.breaker.after} plans in a row did not help; "
                f"automation for {rule} stops until an operator resets it "
                f"(POST /api/v1/rules/{rule}/reset)",
            )
            self.metrics.circuit_open.labels(rule).set(1)

    async def _to_escalate(self, run: Run, why: str, *, helped: bool | None = None) -> None:
        progress = run.progress
        progress.enter("escalate")
        progress.why, progress.helped = why, helped
        await self._save(run)

    async def _escalate(self, run: Run) -> None:
        """Announce the escalation once (with the move past it), then run its steps."""
        incident, progress = run.incident, run.progress
        if progress.index == 0 and progress.asked_at is None:
            why = progress.why
            acked = next((e for e in incident.timeline if e.kind == Step.ACKNOWLEDGED), None)
            if acked is not None:
                message, progress.escalate = f"{why}; not escalating: {acked.message}", []
            elif not progress.escalate:
                message = f"{why}; no escalation configured"
            else:
                message = f"{why}: escalating to {', '.join(progress.escalate)}"
            progress.why = ""
            async with self.recorder.batch():
                await self.recorder.record(incident, Step.ESCALATE, message)
                await self._save(run)
        await self._steps(run, "escalate")
        progress.enter("done")

    async def _steps(self, run: Run, phase: str) -> StepOutcome:
        """The stage's steps from `index` on, in order: "done", "held" (one was held back),
        "failed" or "rejected" (stopped there)."""
        progress = run.progress
        steps = progress.steps()
        outcome = "held" if progress.held and progress.stage == "do" else "done"
        while progress.index < len(steps):
            if run.cleared.is_set():
                return await self._stop_resolved(run)
            step = await self._step(run, steps[progress.index], phase)
            if step in ("failed", "rejected", "resolved"):
                return step
            if step == "held":
                outcome = "held"
        return outcome

    async def _step(self, run: Run, name: str, phase: str) -> StepOutcome:
        """One remediation through the envelope. Every way out moves the progress past it,
        in the transaction that records the outcome."""
        incident, rule, plan, progress = run.incident, run.rule, self.plan, run.progress
        remediation, config = plan.remediations.get(name), plan.configs.get(name)
        if remediation is None or config is None:
            await self._past(run, Step.SKIPPED, f"{name}: no longer configured")
            return "failed"
        kind = remediation.type
        base = {"remediation": name, "type": kind, "phase": phase}

        if plan.dry_run or rule.dry_run:
            scope = "global" if plan.dry_run else "rule"
            self._count(name, kind, "dry_run")
            message = f"dry-run ({scope}): would run {name} ({kind})"
            await self._past(run, Step.DRY_RUN, message, **base)
            return "done"

        if remediation.notifier:
            return await self._notify(run, name, base)

        if progress.asked_at is None:
            hold = await hold_back(
                self.store,
                rule=incident.rule,
                name=name,
                remediation=remediation,
                config=config,
                budget=plan.budget,
                notifiers=plan.notifiers(),
                now=self.clock.now(),
            )
            if hold is not None:
                return await self._held(run, name, kind, hold.reason, hold.why, base)

        needs_approval = config.require_approval
        if needs_approval is None:
            needs_approval = remediation.destructive
        if needs_approval:
            decision = await self._approval(run, name, kind, config, base)
            if run.cleared.is_set():
                return await self._stop_resolved(run)
            if decision is None:
                why = f"no approval within {config.approval_timeout:g}s; not run"
                return await self._held(run, name, kind, "approval_timeout", why, base)
            if not decision.approved:
                self._count(name, kind, "rejected")
                progress.next_step()
                await self._save(run)
                return "rejected"

        target = config.target or name
        if (holder := self.locks.acquire(target, incident.id)) is not None:
            why = f"target {target!r} is busy: incident {holder} is acting on it"
            return await self._held(run, name, kind, "target_busy", why, base)
        if target not in progress.targets:
            progress.targets.append(target)
        progress.acted = True
        result = await self._run_action(incident, name, remediation, config, phase, run=run)
        return "done" if result.ok else "failed"

    async def _notify(self, run: Run, name: str, base: dict[str, str]) -> StepOutcome:
        """A page goes out whatever else is going on: no target lock, budget, cooldown or
        circuit breaker holds it (its dedup key is the incident). Queued in the outbox in the
        transaction that moves the plan past it: sent once, after a restart too."""
        incident, progress = run.incident, run.progress
        config = self.plan.configs[name]
        if (limit := config.max_runs) is not None:
            runs = await self.store.count_actions(self.clock.now() - limit.window, only=name)
            if runs >= limit.count:
                why = f"run limit reached ({runs} runs in {limit.window:g}s, max {limit.count})"
                return await self._held(run, name, base["type"], "run_limit", why, base)
        progress.next_step()
        async with self.recorder.batch():
            item = await self.outbox.queue(incident.id, name, "execute")
            await self._save(run)
        if self.stopping:
            return "done"  # delivered after the restart
        result = await self.outbox.attempt(item)
        if result is None or result.ok:
            return "done"
        if result.recoverable:
            await self.recorder.record(
                incident, Step.QUEUED, f"{name}: will be retried from the outbox", **base
            )
            return "done"
        return "failed"

    async def _stop_resolved(self, run: Run) -> StepOutcome:
        """The incident resolved while the plan was under way: what is left of it does not
        run. The data that called for it is gone, and a page sent now would never be
        resolved at the pager (its resolution has gone out already)."""
        progress = run.progress
        left = progress.steps()[progress.index :]
        progress.enter("done")
        message = f"the incident resolved: {', '.join(left)} not run"
        async with self.recorder.batch():
            await self.recorder.record(run.incident, Step.SKIPPED, message, reason="resolved")
            await self._save(run)
        return "resolved"

    async def _past(self, run: Run, kind: Step, message: str, **data: Any) -> None:
        """Record a step's outcome and move past it, in one transaction."""
        run.progress.next_step()
        async with self.recorder.batch():
            await self.recorder.record(run.incident, kind, message, **data)
            await self._save(run)

    async def _held(
        self, run: Run, name: str, kind: str, reason: str, why: str, base: dict[str, str]
    ) -> StepOutcome:
        self._count(name, kind, reason)
        # A page sent moments ago still stands; a fix that was held back needs people.
        notifier = self.plan.remediations[name].notifier
        if not notifier:
            run.progress.held.append(f"{name}: {reason.replace('_', ' ')}")
        await self._past(run, Step.SKIPPED, f"{name}: {why}", **base, reason=reason)
        return "done" if notifier else "held"

    async def _approval(
        self, run: Run, name: str, kind: str, config: RemediationConfig, base: dict[str, str]
    ) -> Decision | None:
        incident, progress = run.incident, run.progress
        if progress.decision is not None:  # answered before a restart
            return Decision(**progress.decision)
        if progress.asked_at is None or progress.deadline is None:
            now = self.clock.now()
            progress.asked_at, progress.deadline = now, now + config.approval_timeout
            async with self.recorder.batch():
                await self.recorder.record(
                    incident,
                    Step.APPROVAL,
                    f"waiting for approval to run {name} ({kind}): POST /api/v1/incidents/"
                    f"{incident.id}/approve or /reject within {config.approval_timeout:g}s",
                    **base,
                )
                await self._save(run)
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
            async with self.recorder.batch():
                await self.recorder.record(
                    incident,
                    verdict,
                    f"{name} {verdict} by {decision.by}: {decision.reason}",
                    **base,
                    by=decision.by,
                    reason=decision.reason,
                )
                await self._save(run)
        return decision

    async def _run_action(
        self,
        incident: Incident,
        name: str,
        remediation: Remediation,
        config: RemediationConfig,
        phase: str,
        *,
        run: Run | None = None,
        retry: bool = False,
    ) -> RemediationResult:
        """Execute with the ledger written before and after, so a crash mid-run is found. The
        end, its result and the plan's move past the step are one transaction."""
        with self._acting_on():
            return await self._act(incident, name, remediation, config, phase, run, retry)

    async def _act(
        self,
        incident: Incident,
        name: str,
        remediation: Remediation,
        config: RemediationConfig,
        phase: str,
        run: Run | None,
        retry: bool,
    ) -> RemediationResult:
        kind = remediation.type
        base = {"remediation": name, "type": kind, "phase": phase}
        message = f"running {name} ({kind})"
        if retry:
            message = f"delivering {name} ({kind}) from the outbox"
        started = self.clock.now()
        # One transaction: the timeline never says "running" without the ledger's row, which
        # is what a restart finds interrupted.
        async with self.recorder.batch():
            await self.recorder.record(incident, Step.ACTION, message, **base)
            action_id = await self.store.begin_action(incident.id, incident.rule, name, started)
        returned, outcome = await self._execute(
            remediation.execute(self.ctx_for(name), incident), config, remediation
        )
        result = returned or RemediationResult(True, "done")
        self._count(name, kind, outcome)
        self.metrics.remediation_duration.labels(name, kind).observe(self.clock.now() - started)
        verdict = "succeeded" if result.ok else "failed"
        if run is not None:
            run.progress.next_step()
        async with self.recorder.batch():
            await self.store.end_action(action_id, outcome)
            await self.recorder.record(
                incident,
                Step.RESULT,
                f"{name} {verdict}: {result.detail}",
                # What the remediation reports comes first, so it cannot mask the step's facts.
                **{**result.data, **base, "ok": result.ok, "recoverable": result.recoverable},
                outcome=outcome,
            )
            if run is not None:
                await self._save(run)
        return result

    async def _execute(
        self,
        call: Coroutine[Any, Any, RemediationResult | None],
        config: RemediationConfig,
        remediation: Remediation,
    ) -> tuple[RemediationResult | None, str]:
        """Await a remediation's call bounded by its deadline; failures become results."""
        deadline = config.deadline()
        try:
            async with self.clock.timeout(deadline):
                result = await call
        except TimeoutError:
            return RemediationResult(False, f"timed out after {deadline:g}s", True), "timeout"
        except Exception as exc:  # the remediation broke its contract; contain it
            log.exception("remediation raised", remediation=remediation.type)
            return RemediationResult(False, f"internal error: {exc!r}"), "error"
        return result, "ok" if result is None or result.ok else "failed"

    # -- notifications through the outbox ----------------------------------------------------

    async def _deliver(self, item: OutboxItem, retry: bool) -> RemediationResult | None:
        """One attempt at an outbox item (a page or its resolution)."""
        run = self.runs.get(item.incident_id)
        incident = run.incident if run else await self.store.get_incident(item.incident_id)
        remediation = self.plan.remediations.get(item.remediation)
        config = self.plan.configs.get(item.remediation)
        if incident is None or remediation is None or config is None:
            return RemediationResult(False, f"{item.remediation}: no longer configured")
        if item.phase == "execute":
            phase = "outbox retry" if retry else "do"
            return await self._run_action(
                incident, item.remediation, remediation, config, phase, retry=retry
            )
        return await self._resolve_one(incident, item.remediation, remediation, config)

    async def _owed(self, incident: Incident) -> list[tuple[str, OutboxItem | None]]:
        """What a resolution owes every remediation that acted on the incident: the pages'
        resolutions, queued in the outbox now (in the caller's transaction, with the
        resolution itself), and the other remediations' undo (a scale-out scales back in).
        A page still waiting in the outbox is owed one too: it goes out, then its resolution
        (the outbox keeps that order), or the pager would keep an incident open for good. In
        the order they acted: a change event may report the undo of the step before it."""
        stored = await self.store.get_incident(incident.id) or incident
        pending = [
            i.remediation
            for i in await self.store.outbox_pending(incident.id)
            if i.phase == "execute"
        ]
        acted = dict.fromkeys(
            [
                *(
                    name
                    for e in stored.timeline
                    if e.kind == Step.RESULT
                    and e.data.get("ok")
                    and e.data.get("phase") != "resolve"
                    and isinstance(name := e.data.get("remediation"), str)
                ),
                *pending,
            ]
        )
        owed: list[tuple[str, OutboxItem | None]] = []
        for name in acted:
            remediation = self.plan.remediations.get(name)
            if remediation is None or name not in self.plan.configs:
                continue
            notice = None
            if remediation.notifier:
                notice = await self.outbox.queue(incident.id, name, "resolve")
            owed.append((name, notice))
        return owed

    async def _notify_resolved(
        self, incident: Incident, owed: list[tuple[str, OutboxItem | None]]
    ) -> None:
        """Deliver what the resolution owes; a notice not delivered now is retried from the
        outbox (after a restart too)."""
        # Stopped: the pages' resolutions are in the outbox; they go out after the restart.
        with contextlib.suppress(Stopped):
            for name, notice in owed:
                remediation = self.plan.remediations.get(name)
                config = self.plan.configs.get(name)
                if notice is not None:
                    if not self.stopping:
                        await self.outbox.attempt(notice)
                elif remediation is not None and config is not None:
                    await self._resolve_one(incident, name, remediation, config)

    async def _resolve_one(
        self, incident: Incident, name: str, remediation: Remediation, config: RemediationConfig
    ) -> RemediationResult | None:
        with self._acting_on():
            return await self._undo(incident, name, remediation, config)

    async def _undo(
        self, incident: Incident, name: str, remediation: Remediation, config: RemediationConfig
    ) -> RemediationResult | None:
        result, _ = await self._execute(
            remediation.resolve(self.ctx_for(name), incident), config, remediation
        )
        if result is not None:
            await self.recorder.record(
                incident,
                Step.RESULT,
                f"{name} on resolve: {result.detail}",
                **{**result.data, "remediation": name, "phase": "resolve", "ok": result.ok},
            )
        return result

    async def _call_healthy(self, name: str, remediation: Remediation) -> None:
        config = self.plan.configs.get(name)
        try:
            async with self.clock.timeout(config.timeout if config else 30.0):
                await remediation.healthy(self.ctx_for(name))
        except Exception:  # noting a good state is best effort
            log.warning("healthy hook failed", remediation=name, exc_info=True)

    def _kind(self, name: str) -> str:
        remediation = self.plan.remediations.get(name)
        return remediation.type if remediation is not None else "unknown"

    def _count(self, name: str, kind: str, outcome: str) -> None:
        self.metrics.remediations.labels(name, kind, outcome).inc()


def _loud(task: asyncio.Task[None]) -> None:
    """A plan or a resolution that died of an error its own handling could not record (the
    store gone, say) is logged with its traceback, never lost silently."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("pipeline task died", task=task.get_name(), exc_info=exc)


# Timeline entries an incident may have before its plan begins.
BEFORE_PLAN = frozenset({Step.OPENED, Step.RESTORED, Step.ALERT, Step.ACKNOWLEDGED})


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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
