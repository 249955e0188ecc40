"""Calling a remediation: bounded by its deadline, in the action ledger before and after, on
the timeline and in the metrics. Every part of the pipeline acts through one `Actor`, which
also counts the calls under way (what a drain waits for) and owns the pipeline's tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from daemon.core.clock import Clock
from daemon.core.models import (
    RESOLVE_PHASE,
    UPDATE_PHASE,
    Incident,
    RemediationResult,
    Step,
    StepFacts,
)
from daemon.core.updates import NOTIFIER
from daemon.engine.timeline import Recorder
from daemon.pipeline.fence import Fence, Unfenced
from daemon.pipeline.plan import Plan, Run, Stopped
from daemon.pipeline.progress import PLANS
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Claimed, Fenced, Store
from remediations.base import Remediation, RemediationConfig, RemediationContext

log = structlog.get_logger("runbookd.pipeline")


class StoreState:
    """A remediation's own keys in the store (remediations.base.StateStore)."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.namespace = f"remediation:{name}"

    async def get(self, key: str) -> Any:
        return await self.store.get_value(self.namespace, key)

    async def put(self, key: str, value: Any) -> None:
        await self.store.put_value(self.namespace, key, value)


class Tasks:
    """The pipeline's background tasks (plans, resolutions, healthy hooks): kept, so none
    vanishes, and cancelled on a drain."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        task.add_done_callback(_loud)
        return task


def _loud(task: asyncio.Task[None]) -> None:
    """A plan or a resolution that died of an error its own handling could not record (the
    store gone, say) is logged with its traceback, never lost silently."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("pipeline task died", task=task.get_name(), exc_info=exc)


class Actor:
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
        # `plan` changes on a reload; `ctx` may be swapped (tests): both are read per call.
        self.plan = plan
        self.ctx = ctx
        self.store = store
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.fence: Fence = fence or Unfenced()
        self.tasks = Tasks()
        self.stopping = False  # a drain began: no new action starts
        # Remediation calls under way (execute or resolve): what a drain waits for.
        self.acting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def ctx_for(self, name: str) -> RemediationContext:
        return RemediationContext(self.ctx.session, self.clock, StoreState(self.store, name))

    def kind(self, name: str) -> str:
        remediation = self.plan.remediations.get(name)
        return remediation.type if remediation is not None else "unknown"

    def count(self, name: str, kind: str, outcome: str) -> None:
        self.metrics.remediations.labels(name, kind, outcome).inc()

    # -- the plan's progress -----------------------------------------------------------------

    async def save(self, run: Run) -> None:
        """The plan's progress, written only under our epoch: once another replica leads,
        the plan is its own (a leader paused past its lease must not move it on waking)."""
        async with self.recorder.batch():
            try:
                await self.fence.check()
            except Fenced:
                raise Stopped from None  # what the batch holds is rolled back with it
            await self.store.put_value(PLANS, run.incident.id, run.progress.to_json())
        run.saved = True

    async def past(self, run: Run, kind: Step, message: str, **data: Any) -> None:
        """Record a step's outcome and move past it, in one transaction."""
        run.progress.next_step()
        async with self.recorder.batch():
            await self.recorder.record(run.incident, kind, message, **data)
            await self.save(run)

    # -- calls under way ---------------------------------------------------------------------

    @contextmanager
    def _acting_on(self) -> Iterator[None]:
        """A remediation call, from its ledger entry to its recorded result: what a drain
        waits for, so a result is never cut off from its action."""
        if self.stopping or not self.fence.may_act():
            raise Stopped  # stopping, or another replica leads: the plan resumes there
        self.acting += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.acting -= 1
            if not self.acting:
                self._quiet.set()

    async def calls_done(self, grace: float) -> bool:
        """Wait up to `grace` seconds for the calls under way; False if some still run."""
        if not self.acting:
            return True
        try:
            async with asyncio.timeout(grace):
                await self._quiet.wait()
        except TimeoutError:
            log.warning("drain grace over: cancelling running remediations", running=self.acting)
            return False
        return True

    # -- the calls ---------------------------------------------------------------------------

    async def run_action(
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
        end, its result and the plan's move past the step are one transaction. A plan's step
        is claimed in the ledger (its stage and index): never run twice. A page is not: the
        outbox row is its claim, and its dedup key makes a delivery again after a crash one
        page at the provider."""
        claim = run.progress.claim if run is not None else None
        with self._acting_on():
            return await self._act(incident, name, remediation, config, phase, run, retry, claim)

    async def _act(
        self,
        incident: Incident,
        name: str,
        remediation: Remediation,
        config: RemediationConfig,
        phase: str,
        run: Run | None,
        retry: bool,
        claim: str | None,
    ) -> RemediationResult:
        kind = remediation.type
        base = StepFacts(name, kind, phase).data()
        message = f"running {name} ({kind})"
        if retry:
            message = f"delivering {name} ({kind}) from the outbox"
        started = self.clock.now()
        # One transaction: the timeline never says "running" without the ledger's row, which
        # is what a restart finds interrupted.
        try:
            async with self.recorder.batch():
                await self.fence.check()  # a takeover cannot commit between this and the claim
                # A notifier's run tells people and fixes nothing: the status page must not
                # read it as the team at work (daemon/core/updates.py).
                told = {NOTIFIER: True} if remediation.notifier else {}
                await self.recorder.record(incident, Step.ACTION, message, **base, **told)
                action_id = await self.store.begin_action(
                    incident.id, incident.rule, name, started, claim
                )
        except Claimed:  # a bug, or a leader the fence let through: loud, and not run again
            log.error("step claimed already: not run again", incident=incident.id, claim=claim)
            raise Stopped from None
        except Fenced:
            raise Stopped from None  # nothing was recorded: the new leader takes the step
        if not self.fence.may_act():  # the lease ran out since (a pause): do not send
            raise Stopped  # the ledger says running: the new leader records it interrupted
        returned, outcome = await self._bounded(
            remediation.execute(self.ctx_for(name), incident), config, remediation
        )
        result = returned or RemediationResult(True, "done")
        self.count(name, kind, outcome)
        self.metrics.remediation_duration.labels(name, kind).observe(self.clock.now() - started)
        verdict = "succeeded" if result.ok else "failed"
        if run is not None:
            run.progress.next_step()
        try:
            async with self.recorder.batch():
                await self.store.end_action(action_id, outcome)
                await self.recorder.record(
                    incident,
                    Step.RESULT,
                    f"{name} {verdict}: {result.detail}",
                    # What the remediation reports comes first, so it cannot mask the step's
                    # facts.
                    **{**result.data, **base, "ok": result.ok, "recoverable": result.recoverable},
                    outcome=outcome,
                )
                if run is not None:
                    await self.save(run)
        except Stopped:
            # This replica no longer leads: the leader records the action interrupted (it is
            # still running in the ledger) and owns the plan. Only this log keeps its end.
            log.warning(
                "result not recorded: this replica no longer leads",
                incident=incident.id,
                remediation=name,
                outcome=outcome,
                detail=result.detail,
            )
            raise
        return result

    async def undo(
        self, incident: Incident, name: str, remediation: Remediation, config: RemediationConfig
    ) -> RemediationResult | None:
        """The remediation's `resolve` hook (a page's resolution, a scale-out's scale-in)."""
        with self._acting_on():
            try:
                await self.fence.check()
            except Fenced:
                raise Stopped from None  # the resolution stays in the outbox for the leader
            result, _ = await self._bounded(
                remediation.resolve(self.ctx_for(name), incident), config, remediation
            )
            if result is not None:
                await self.recorder.record(
                    incident,
                    Step.RESULT,
                    f"{name} on resolve: {result.detail}",
                    **result.data,
                    **StepFacts(name, phase=RESOLVE_PHASE, ok=result.ok).data(),
                )
            return result

    async def tell(
        self, incident: Incident, name: str, remediation: Remediation, config: RemediationConfig
    ) -> RemediationResult:
        """The remediation's `update` hook (a channel told where an open incident stands).
        An update that comes up after the incident resolved is dropped: the resolution,
        which says more, has gone or goes out."""
        update = getattr(remediation, "update", None)
        if not callable(update):
            return RemediationResult(False, f"{name} ({remediation.type}) posts no updates")
        if not incident.is_open:
            return RemediationResult(True, "not sent: the incident resolved first")
        with self._acting_on():
            try:
                await self.fence.check()
            except Fenced:
                raise Stopped from None  # the update stays in the outbox for the leader
            result, _ = await self._bounded(
                update(self.ctx_for(name), incident), config, remediation
            )
            result = result or RemediationResult(True, "done")
            facts = StepFacts(name, remediation.type, UPDATE_PHASE, result.ok)
            await self.recorder.record(
                incident,
                Step.RESULT,
                f"{name} update: {result.detail}",
                **{**result.data, **facts.data()},
            )
            return result

    async def healthy(self, name: str, remediation: Remediation) -> None:
        """The remediation's `healthy` hook: best effort, bounded by its timeout."""
        config = self.plan.configs.get(name)
        try:
            async with self.clock.timeout(config.timeout if config else 30.0):
                await remediation.healthy(self.ctx_for(name))
        except Exception:  # noting a good state is best effort
            log.warning("healthy hook failed", remediation=name, exc_info=True)

    async def _bounded(
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
