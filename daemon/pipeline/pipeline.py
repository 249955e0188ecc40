"""The pipeline: what the engine and the runtime call to act on incidents.

A thin facade. It builds the parts and wires them once:

- the safety envelope as stages (daemon/pipeline/stages.py): silences and the circuit
  breaker once per plan, then per step dry-run -> page -> cooldown, run limit, budget ->
  approval -> target lock -> execute; every outcome, including what was held back and why,
  lands on the incident's timeline;
- the plan runner (daemon/pipeline/plans.py): do -> verify -> escalate, its progress in the
  store, resumed after a restart;
- the notices (daemon/pipeline/notices.py): pages through the outbox, and what a resolution
  owes the remediations that acted;
- the actor (daemon/pipeline/acting.py): every remediation call, bounded and in the ledger,
  and the count of calls under way that a drain waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident
from daemon.engine.timeline import Recorder
from daemon.pipeline.acting import Actor
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.fence import Fence
from daemon.pipeline.notices import Notices
from daemon.pipeline.plan import Plan, Run
from daemon.pipeline.plans import PlanRunner
from daemon.pipeline.safety import CircuitBreaker, TargetLocks
from daemon.pipeline.silences import Silences
from daemon.pipeline.stages import (
    Approval,
    CircuitGate,
    DryRun,
    Execute,
    Gate,
    Limits,
    Page,
    SilenceGate,
    Stage,
    TargetLock,
)
from daemon.pipeline.updates import Updates
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import OUTCOMES, Metrics
from daemon.store.protocol import Store
from remediations.base import RemediationContext

log = structlog.get_logger("runbookd.pipeline")

# A remediation's `healthy` hook runs at most this often.
HEALTHY_EVERY = 60.0


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
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.actor = Actor(
            plan,
            ctx=ctx,
            store=store,
            recorder=recorder,
            metrics=metrics,
            clock=clock,
            fence=fence,
        )
        self.approvals = Approvals(clock)
        self.locks = TargetLocks()
        self.breaker = CircuitBreaker(store, plan.breaker_after)
        self.silences = Silences(store)
        self.runs: dict[str, Run] = {}
        self.notices = Notices(self.actor, self.runs)
        self.outbox = self.notices.outbox
        # In this order; see daemon/pipeline/stages.py for why.
        gates: list[Gate] = [
            SilenceGate(self.actor, self.silences),
            CircuitGate(self.actor, self.breaker),
        ]
        stages: list[Stage] = [
            DryRun(self.actor),
            Page(self.actor, self.outbox),
            Limits(self.actor),
            Approval(self.actor, self.approvals),
            TargetLock(self.actor, self.locks),
            Execute(self.actor),
        ]
        self.runner = PlanRunner(
            self.actor,
            self.notices,
            runs=self.runs,
            locks=self.locks,
            breaker=self.breaker,
            gates=gates,
            stages=stages,
        )
        self._tasks = self.actor.tasks.running
        self._healthy_at: dict[str, float] = {}
        self._outbox_task: asyncio.Task[None] | None = None
        self._updates_task: asyncio.Task[None] | None = None
        self._zero_series(plan)

    @property
    def plan(self) -> Plan:
        return self.actor.plan

    @property
    def ctx(self) -> RemediationContext:
        return self.actor.ctx

    @ctx.setter
    def ctx(self, ctx: RemediationContext) -> None:
        self.actor.ctx = ctx

    def set_plan(self, plan: Plan) -> None:
        """A reload: later steps use the new remediations; running steps finish as they are."""
        self.actor.plan = plan
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

    # -- what the engine calls -------------------------------------------------------------

    def start(self, incident: Incident, rule: RuleConfig) -> None:
        self.runner.start(incident, rule)

    async def resolved(self, incident: Incident) -> None:
        run = self.runs.get(incident.id)
        if run is not None:
            run.cleared.set()
            self.approvals.withdraw(incident.id)
        await self.notices.resolved(incident)

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
            self.actor.tasks.spawn(self.actor.healthy(name, remediation), f"healthy {name}")

    # -- lifecycle ---------------------------------------------------------------------------

    def start_outbox(self) -> asyncio.Task[None]:
        """The retry loop, for as long as the daemon runs; the caller watches the task."""
        self._outbox_task = asyncio.create_task(self.outbox.run(), name="outbox")
        return self._outbox_task

    def start_updates(
        self,
        incidents: Callable[[], Iterable[Incident]],
        public_every: Callable[[Incident], float | None],
    ) -> asyncio.Task[None]:
        """The open incidents' updates (daemon/pipeline/updates.py), for as long as the daemon
        runs; the caller watches the task."""
        updates = Updates(self.actor, self.outbox, incidents=incidents, public_every=public_every)
        self.recorder.listeners.append(updates.on_entry)
        self._updates_task = asyncio.create_task(updates.run(), name="incident-updates")
        return self._updates_task

    async def recover(self, incidents: Iterable[Incident], rules: dict[str, RuleConfig]) -> None:
        """After a restart or a crash: resume every plan where its progress says.

        An action left running is marked interrupted and never repeated (its effect is
        unknown): the plan escalates. A page left running is delivered from the outbox,
        whose dedup key makes that safe. A verification or an approval carries on with the
        deadline it had. An open incident whose plan never began (a crash right after it
        opened) starts its plan now."""
        await self.silences.load()  # the silences and maintenance windows of before
        await self.runner.recover(incidents, rules)

    @property
    def busy(self) -> bool:
        """A remediation is being called."""
        return self.actor.acting > 0

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
        self.actor.stopping = True
        # The outbox's loop starts no new attempt; one under way is a running call like any
        # other, and the outcome of a delivery that ended is written before its task goes
        # (cancelled, the item would stay pending and the next daemon would send it again).
        self.outbox.stop()
        await _cancelled(self._updates_task)
        finished = await self.actor.calls_done(grace)
        await self.outbox.recorded()
        pending = {*self._tasks, *([self._outbox_task] if self._outbox_task else [])}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return finished


async def _cancelled(loop: asyncio.Task[None] | None) -> None:
    if loop is not None:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
