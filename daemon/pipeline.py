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
from collections import defaultdict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.approvals import Approvals, Decision
from daemon.clock import Clock
from daemon.metrics import OUTCOMES, Metrics
from daemon.models import Incident, RemediationResult
from daemon.outbox import Outbox
from daemon.rule_config import RuleConfig
from daemon.safety import Budget, CircuitBreaker, TargetLocks, hold_back
from daemon.silences import Silences
from daemon.store import OutboxItem, Store
from daemon.timeline import Recorder
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
    cleared: asyncio.Event = field(default_factory=asyncio.Event)
    acted: bool = False  # a non-notifier step executed: the plan changed something
    held: list[str] = field(default_factory=list)  # why steps were held back


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self._healthy_at: dict[str, float] = {}
        self._outbox_task: asyncio.Task[None] | None = None
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
        run = Run(incident, rule)
        self.runs[incident.id] = run
        self._spawn(self._execute_plan(run), f"plan {incident.id}")

    async def resolved(self, incident: Incident) -> None:
        run = self.runs.get(incident.id)
        if run is not None:
            run.cleared.set()
        task = self._spawn(self._notify_resolved(incident), f"resolve {incident.id}")
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
        """After a crash: actions left running are marked interrupted, never repeated; the
        rule's escalation tells people, and the rule is evaluated afresh from here on."""
        by_id = {i.id: i for i in incidents}
        for action in await self.store.running_actions():
            await self.store.end_action(action.id, "interrupted")
            self._count(action.remediation, self._kind(action.remediation), "interrupted")
            incident = by_id.get(action.incident_id) or await self.store.get_incident(
                action.incident_id
            )
            if incident is None:
                continue
            await self.recorder.record(
                incident,
                "interrupted",
                f"{action.remediation} was running when runbookd stopped; its effect is "
                "unknown and it is not repeated",
                remediation=action.remediation,
                began_at=action.ts,
            )
            rule = rules.get(incident.rule)
            if incident.is_open and rule is not None:
                run = Run(incident, rule)
                self._spawn(self._escalate(run, "a remediation was interrupted"), "recover")

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` for running plans, then cancel the rest. True if all finished."""
        if self._outbox_task is not None:
            self._outbox_task.cancel()
            await asyncio.gather(self._outbox_task, return_exceptions=True)
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("drain grace over: cancelled running plans", cancelled=len(pending))
        return not pending

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the plan ----------------------------------------------------------------------------

    async def _execute_plan(self, run: Run) -> None:
        incident, rule = run.incident, run.rule
        try:
            if (silence := self.silences.matching(incident, self.clock.now())) is not None:
                await self.recorder.record(
                    incident,
                    "silenced",
                    f"silenced by {silence.id} ({silence.created_by}: {silence.comment}) "
                    f"until {_iso(silence.ends_at)}: nothing runs",
                    silence=silence.id,
                )
                return
            if await self.breaker.is_open(incident.rule):
                await self.recorder.record(
                    incident,
                    "circuit_open",
                    "automation for this rule is stopped (circuit open after plans that did "
                    "not help); paging only, until an operator resets it",
                )
                await self._steps(run, [*rule.do, *rule.escalate], "do", notifiers_only=True)
                return
            outcome = await self._steps(run, rule.do, "do")
            helped: bool | None = None
            if outcome == "failed":
                helped = False
                await self._escalate(run, "a step did not succeed")
            elif outcome == "held":
                await self._escalate(run, f"automation held back ({', '.join(run.held)})")
            elif outcome == "done" and rule.verify_within is not None and run.acted:
                helped = await self._verify(run, rule.verify_within)
            if helped is not None and run.acted:
                await self._count_for_breaker(run, helped)
        except Exception as exc:  # a bug must not take the daemon down; say so on the timeline
            log.exception("plan crashed", incident=incident.id)
            await self.recorder.record(
                incident, "error", f"plan stopped by internal error: {exc!r}"
            )
        finally:
            self.locks.release(incident.id)
            self.runs.pop(incident.id, None)

    async def _verify(self, run: Run, within: float) -> bool | None:
        incident = run.incident
        started = self.clock.now()
        await self.recorder.record(
            incident, "verify", f"verifying: the rule must clear within {within:g}s"
        )
        try:
            async with self.clock.timeout(within):
                await run.cleared.wait()
        except TimeoutError:
            await self._escalate(run, f"still firing {within:g}s after remediation")
            return False
        waited = self.clock.now() - started
        closed_by = next(
            (e.data["by"] for e in incident.timeline if e.kind == "resolved" and "by" in e.data),
            None,
        )
        if closed_by is not None:
            # An operator closed it: whether the remediation helped is unknown, and the
            # circuit breaker counts it neither way.
            await self.recorder.record(
                incident, "verify", f"not verified: closed by {closed_by} after {waited:.0f}s"
            )
            return None
        await self.recorder.record(
            incident, "verified", f"verified: the rule cleared {waited:.0f}s after remediating"
        )
        return True

    async def _count_for_breaker(self, run: Run, helped: bool) -> None:
        rule = run.incident.rule
        if await self.breaker.record(rule, helped=helped, now=self.clock.now()):
            await self.recorder.record(
                run.incident,
                "circuit_open",
                f"circuit opened: {self.breaker.after} plans in a row did not help; "
                f"automation for {rule} stops until an operator resets it "
                f"(POST /api/v1/rules/{rule}/reset)",
            )
            self.metrics.circuit_open.labels(rule).set(1)

    async def _escalate(self, run: Run, why: str) -> None:
        acked = next((e for e in run.incident.timeline if e.kind == "acknowledged"), None)
        if acked is not None:
            await self.recorder.record(
                run.incident, "escalate", f"{why}; not escalating: {acked.message}"
            )
            return
        if not run.rule.escalate:
            await self.recorder.record(run.incident, "escalate", f"{why}; no escalation configured")
            return
        await self.recorder.record(
            run.incident, "escalate", f"{why}: escalating to {', '.join(run.rule.escalate)}"
        )
        await self._steps(run, run.rule.escalate, "escalate")

    async def _steps(
        self, run: Run, names: list[str], phase: str, *, notifiers_only: bool = False
    ) -> str:
        """Run steps in order: "done", "held" (one was held back), "failed" or "rejected"
        (stopped there)."""
        outcome = "done"
        for name in dict.fromkeys(names) if notifiers_only else names:
            remediation = self.plan.remediations.get(name)
            if notifiers_only and (remediation is None or not remediation.notifier):
                continue
            step = await self._step(run, name, phase)
            if step in ("failed", "rejected"):
                return step
            if step == "held":
                outcome = "held"
        return outcome

    async def _step(self, run: Run, name: str, phase: str) -> str:
        """One remediation through the envelope: "done", "held", "failed" or "rejected"."""
        incident, rule, plan = run.incident, run.rule, self.plan
        remediation, config = plan.remediations.get(name), plan.configs.get(name)
        if remediation is None or config is None:
            await self.recorder.record(incident, "skipped", f"{name}: no longer configured")
            return "failed"
        kind = remediation.type
        base = {"remediation": name, "type": kind, "phase": phase}

        if plan.dry_run or rule.dry_run:
            scope = "global" if plan.dry_run else "rule"
            self._count(name, kind, "dry_run")
            await self.recorder.record(
                incident, "dry_run", f"dry-run ({scope}): would run {name} ({kind})", **base
            )
            return "done"

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
            if decision is None:
                why = f"no approval within {config.approval_timeout:g}s; not run"
                return await self._held(run, name, kind, "approval_timeout", why, base)
            if not decision.approved:
                self._count(name, kind, "rejected")
                return "rejected"

        target = config.target or name
        if (holder := self.locks.acquire(target, incident.id)) is not None:
            why = f"target {target!r} is busy: incident {holder} is acting on it"
            return await self._held(run, name, kind, "target_busy", why, base)

        if remediation.notifier:
            result = await self.outbox.send(incident.id, name, "execute")
            if result is not None and not result.ok and result.recoverable:
                await self.recorder.record(
                    incident, "queued", f"{name}: will be retried from the outbox", **base
                )
                return "done"
        else:
            run.acted = True
            result = await self._run_action(incident, name, remediation, config, phase)
        return "done" if result is None or result.ok else "failed"

    async def _held(
        self, run: Run, name: str, kind: str, reason: str, why: str, base: dict[str, str]
    ) -> str:
        self._count(name, kind, reason)
        await self.recorder.record(run.incident, "skipped", f"{name}: {why}", **base, reason=reason)
        # A page sent moments ago still stands; a fix that was held back needs people.
        if self.plan.remediations[name].notifier:
            return "done"
        run.held.append(f"{name}: {reason.replace('_', ' ')}")
        return "held"

    async def _approval(
        self, run: Run, name: str, kind: str, config: RemediationConfig, base: dict[str, str]
    ) -> Decision | None:
        incident = run.incident
        await self.recorder.record(
            incident,
            "approval",
            f"waiting for approval to run {name} ({kind}): POST /api/v1/incidents/"
            f"{incident.id}/approve or /reject within {config.approval_timeout:g}s",
            **base,
        )
        decision = await self.approvals.wait(incident.id, name, config.approval_timeout)
        if decision is not None:
            verdict = "approved" if decision.approved else "rejected"
            await self.recorder.record(
                incident,
                verdict,
                f"{name} {verdict} by {decision.by}: {decision.reason}",
                **base,
                by=decision.by,
                reason=decision.reason,
            )
        return decision

    async def _run_action(
        self,
        incident: Incident,
        name: str,
        remediation: Remediation,
        config: RemediationConfig,
        phase: str,
    ) -> RemediationResult:
        """Execute with the ledger written before and after, so a crash mid-run is found."""
        kind = remediation.type
        base = {"remediation": name, "type": kind, "phase": phase}
        await self.recorder.record(incident, "action", f"running {name} ({kind})", **base)
        started = self.clock.now()
        action_id = await self.store.begin_action(incident.id, incident.rule, name, started)
        returned, outcome = await self._execute(
            remediation.execute(self.ctx_for(name), incident), config, remediation
        )
        result = returned or RemediationResult(True, "done")
        await self.store.end_action(action_id, outcome)
        self._count(name, kind, outcome)
        self.metrics.remediation_duration.labels(name, kind).observe(self.clock.now() - started)
        verdict = "succeeded" if result.ok else "failed"
        await self.recorder.record(
            incident,
            "result",
            f"{name} {verdict}: {result.detail}",
            # What the remediation reports comes first, so it cannot mask the step's own facts.
            **{**result.data, **base, "ok": result.ok, "recoverable": result.recoverable},
            outcome=outcome,
        )
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

    async def _deliver(self, item: OutboxItem) -> RemediationResult | None:
        """One attempt at an outbox item (a page or its resolution)."""
        run = self.runs.get(item.incident_id)
        incident = run.incident if run else await self.store.get_incident(item.incident_id)
        remediation = self.plan.remediations.get(item.remediation)
        config = self.plan.configs.get(item.remediation)
        if incident is None or remediation is None or config is None:
            return RemediationResult(False, f"{item.remediation}: no longer configured")
        phase = "outbox retry" if item.attempts else "do"
        if item.phase == "execute":
            return await self._run_action(incident, item.remediation, remediation, config, phase)
        return await self._resolve_one(incident, item.remediation, remediation, config)

    async def _notify_resolved(self, incident: Incident) -> None:
        """Tell every remediation that acted on this incident (a page resolves, a scale-out
        scales back in). Read from the store: outbox retries may have acted since."""
        stored = await self.store.get_incident(incident.id) or incident
        acted = dict.fromkeys(
            name
            for e in stored.timeline
            if e.kind == "result"
            and e.data.get("ok")
            and e.data.get("phase") != "resolve"
            and isinstance(name := e.data.get("remediation"), str)
        )
        for name in acted:
            remediation = self.plan.remediations.get(name)
            config = self.plan.configs.get(name)
            if remediation is None or config is None:
                continue
            if remediation.notifier:
                await self.outbox.send(incident.id, name, "resolve")
            else:
                await self._resolve_one(incident, name, remediation, config)

    async def _resolve_one(
        self, incident: Incident, name: str, remediation: Remediation, config: RemediationConfig
    ) -> RemediationResult | None:
        result, _ = await self._execute(
            remediation.resolve(self.ctx_for(name), incident), config, remediation
        )
        if result is not None:
            await self.recorder.record(
                incident,
                "result",
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
