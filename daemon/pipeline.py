"""The pipeline: runs a rule's `do:` steps inside the safety envelope, verifies, escalates.

Each step passes, in order: dry-run -> cooldown -> budget -> execute (with a timeout). Every
outcome, including what was skipped and why, lands on the incident's timeline. A failed step
stops the `do:` list (later steps may rely on it) and runs `escalate:` at once; when the rule
has not cleared `verify_within` after the last step, `escalate:` runs too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.metrics import Metrics
from daemon.models import Incident, RemediationResult
from daemon.rule_config import RuleConfig
from daemon.store import Store
from daemon.timeline import Recorder
from remediations.base import Remediation, RemediationConfig, RemediationContext

log = structlog.get_logger("runbookd.pipeline")


@dataclass(slots=True)
class Plan:
    """What the pipeline has at hand for the remediations named in the config."""

    remediations: dict[str, Remediation]
    configs: dict[str, RemediationConfig]
    dry_run: bool = False
    budget_max: int = 5
    budget_window: float = 3600.0

    def notifiers(self) -> frozenset[str]:
        return frozenset(n for n, r in self.remediations.items() if r.notifier)


@dataclass(slots=True)
class Run:
    incident: Incident
    rule: RuleConfig
    cleared: asyncio.Event = field(default_factory=asyncio.Event)


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
        self.runs: dict[str, Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the engine calls -------------------------------------------------------------

    def start(self, incident: Incident, rule: RuleConfig) -> None:
        run = Run(incident, rule)
        self.runs[incident.id] = run
        self._spawn(self._execute_plan(run), f"plan {incident.id}")

    async def resolved(self, incident: Incident) -> None:
        run = self.runs.get(incident.id)
        if run is not None:
            run.cleared.set()
        self._spawn(self._notify_resolved(incident), f"resolve {incident.id}")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` for running plans, then cancel the rest. True if all finished."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("drain grace over: cancelled running plans", cancelled=len(pending))
        return not pending

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the plan ----------------------------------------------------------------------------

    async def _execute_plan(self, run: Run) -> None:
        incident, rule = run.incident, run.rule
        try:
            outcome = await self._steps(run, rule.do, "do")
            if outcome == "failed":
                await self._escalate(run, "a step did not succeed")
            elif outcome == "held":
                await self._escalate(run, "automation held back by a cooldown or the budget")
            elif rule.verify_within is not None and rule.do:
                await self._verify(run, rule.verify_within)
        except Exception as exc:  # a bug must not take the daemon down; say so on the timeline
            log.exception("plan crashed", incident=incident.id)
            await self.recorder.record(
                incident, "error", f"plan stopped by internal error: {exc!r}"
            )
        finally:
            self.runs.pop(incident.id, None)

    async def _verify(self, run: Run, within: float) -> None:
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
            return
        waited = self.clock.now() - started
        await self.recorder.record(
            incident, "verified", f"verified: the rule cleared {waited:.0f}s after remediating"
        )

    async def _escalate(self, run: Run, why: str) -> None:
        if not run.rule.escalate:
            await self.recorder.record(run.incident, "escalate", f"{why}; no escalation configured")
            return
        await self.recorder.record(
            run.incident, "escalate", f"{why}: escalating to {', '.join(run.rule.escalate)}"
        )
        await self._steps(run, run.rule.escalate, "escalate")

    async def _steps(self, run: Run, names: list[str], phase: str) -> str:
        """Run steps in order: "done", "held" (one was skipped) or "failed" (stopped there)."""
        outcome = "done"
        for name in names:
            step = await self._step(run, name, phase)
            if step == "failed":
                return "failed"
            if step == "held":
                outcome = "held"
        return outcome

    async def _step(self, run: Run, name: str, phase: str) -> str:
        """One remediation through the envelope: "done", "held" (skipped) or "failed"."""
        incident, rule, plan = run.incident, run.rule, self.plan
        remediation, config = plan.remediations.get(name), plan.configs.get(name)
        if remediation is None or config is None:
            await self.recorder.record(incident, "skipped", f"{name}: no longer configured")
            return "failed"
        kind = remediation.type
        base = {"remediation": name, "type": kind, "phase": phase}
        now = self.clock.now()

        if plan.dry_run or rule.dry_run:
            scope = "global" if plan.dry_run else "rule"
            self._count(name, kind, "dry_run")
            await self.recorder.record(
                incident, "dry_run", f"dry-run ({scope}): would run {name} ({kind})", **base
            )
            return "done"

        held = await self._held_back(incident.rule, name, remediation, config, now)
        if held is not None:
            reason, why = held
            self._count(name, kind, reason)
            await self.recorder.record(incident, "skipped", f"{name}: {why}", **base, reason=reason)
            # A page sent moments ago still stands; a fix that was held back needs people.
            return "done" if remediation.notifier else "held"

        await self.recorder.record(incident, "action", f"running {name} ({kind})", **base)
        result, outcome = await self._execute(remediation, config, incident)
        await self.store.record_action(incident.rule, name, self.clock.now(), outcome)
        self._count(name, kind, outcome)
        self.metrics.remediation_duration.labels(name, kind).observe(self.clock.now() - now)
        verdict = "succeeded" if result.ok else "failed"
        await self.recorder.record(
            incident,
            "result",
            f"{name} {verdict}: {result.detail}",
            # What the remediation reports comes first, so it cannot mask the step's own facts.
            **{**result.data, **base, "ok": result.ok, "recoverable": result.recoverable},
            outcome=outcome,
        )
        return "done" if result.ok else "failed"

    async def _held_back(
        self,
        rule: str,
        name: str,
        remediation: Remediation,
        config: RemediationConfig,
        now: float,
    ) -> tuple[str, str] | None:
        """Why this step may not run now ("cooldown" or "budget", and a message), or None."""
        last = await self.store.last_action(rule, name)
        if last is not None and now - last < config.cooldown:
            ago = now - last
            return "cooldown", (
                f"in cooldown for {config.cooldown - ago:.0f}s more "
                f"(last ran {ago:.0f}s ago, cooldown {config.cooldown:g}s)"
            )
        if remediation.notifier:
            return None  # pages are exempt from the budget: people must hear about trouble
        plan = self.plan
        used = await self.store.count_actions(now - plan.budget_window, exclude=plan.notifiers())
        if used >= plan.budget_max:
            return "budget", (
                f"action budget exhausted ({used} of {plan.budget_max} actions "
                f"in {plan.budget_window:g}s)"
            )
        return None

    async def _execute(
        self, remediation: Remediation, config: RemediationConfig, incident: Incident
    ) -> tuple[RemediationResult, str]:
        try:
            async with self.clock.timeout(config.deadline()):
                result = await remediation.execute(self.ctx, incident)
        except TimeoutError:
            detail = f"timed out after {config.deadline():g}s"
            return RemediationResult(False, detail, True), "timeout"
        except Exception as exc:  # the remediation broke its contract; contain it
            log.exception("remediation raised", remediation=remediation.type)
            return RemediationResult(False, f"internal error: {exc!r}"), "error"
        return result, "ok" if result.ok else "failed"

    async def _notify_resolved(self, incident: Incident) -> None:
        """Tell every remediation that acted on this incident (a page resolves)."""
        acted = {
            e.data.get("remediation")
            for e in incident.timeline
            if e.kind == "result" and e.data.get("ok")
        }
        for name in sorted(n for n in acted if isinstance(n, str)):
            remediation = self.plan.remediations.get(name)
            if remediation is None:
                continue
            try:
                async with self.clock.timeout(self.plan.configs[name].deadline()):
                    result = await remediation.resolve(self.ctx, incident)
            except Exception as exc:
                result = RemediationResult(False, f"resolve failed: {exc!r}")
            if result is not None:
                await self.recorder.record(
                    incident,
                    "result",
                    f"{name} on resolve: {result.detail}",
                    **{**result.data, "remediation": name, "phase": "resolve", "ok": result.ok},
                )

    def _count(self, name: str, kind: str, outcome: str) -> None:
        self.metrics.remediations.labels(name, kind, outcome).inc()
