"""Runs procedures: the steps of a `procedures:` entry in order, each recorded before and after
it runs, with the safety envelope of scheduled work (dry run, target lock, approval of a
destructive action, the fence among replicas).

When a step fails, times out or is rejected, the `undo` of each step done so far runs, newest
first, then `on_failure`. A cancel cuts the step going on short and undoes the same way (no
`on_failure`: nothing failed). A run outlives a restart and a change of leader: it resumes at
its step; a remediation or job that was running then has an unknown effect, so it runs again
only once an operator approves, and a rejection fails the run. Over 400 lines because a run's
whole life (its steps, their kinds, the undo, a resume) reads in one place.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident, Observation, RemediationResult, Status
from daemon.jobs.runner import Actions, JobRunner, UnknownJob
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.fence import Fence, Unfenced
from daemon.pipeline.safety import TargetLocks
from daemon.procedures.config import (
    APPROVAL_DEFAULT,
    MAX_VALUE,
    WAIT_FOR_DEFAULT,
    ProcedureConfig,
    StepConfig,
)
from daemon.procedures.metrics import ProcedureMetrics
from daemon.procedures.models import (
    ProcedureRun,
    RunEntry,
    RunStatus,
    StepRecord,
    StepStatus,
    new_run_id,
)
from daemon.store.protocol import Fenced, Store
from remediations.base import RemediationContext

log = structlog.get_logger("runbookd.procedures")

POLL = 2.0  # how often a `wait_for` step looks at its check
# A run whose step is in one of these was undoing what it did when runbookd stopped.
UNWINDING = (StepStatus.FAILED, StepStatus.CANCELLED)
DETAIL_LIMIT = 2000


class UnknownProcedure(KeyError):
    pass


class Refused(ValueError):
    """A run that cannot start: a parameter, or a precondition; the message says which."""


class PreconditionsNotMet(Refused):
    pass


class Checks(Protocol):
    def latest(self, check: str) -> Observation | None:
        """The check's last observation, or None before its first run."""
        ...

    def run_now(self, check: str) -> bool:
        """Start a run of the check now; False if one goes on (or there is no such check)."""
        ...


@dataclass(slots=True)
class Outcome:
    ok: bool
    detail: str


class ProcedureRunner:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        metrics: ProcedureMetrics,
        procedures: Callable[[], Mapping[str, ProcedureConfig]],
        actions: Actions,
        jobs: JobRunner,
        checks: Checks,
        ctx_for: Callable[[str], RemediationContext],
        approvals: Approvals,
        locks: TargetLocks,
        dry_run: Callable[[], bool] = lambda: False,
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.procedures = procedures
        self.actions = actions
        self.jobs = jobs
        self.checks = checks
        self.ctx_for = ctx_for
        self.approvals = approvals
        self.locks = locks
        self.dry_run = dry_run
        self.fence: Fence = fence or Unfenced()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, tuple[str, str]] = {}  # run id -> (by, reason)

    # -- starting, resuming, cancelling ----------------------------------------------------------

    async def start(self, name: str, params: Mapping[str, str], by: str) -> ProcedureRun:
        """A new run, recorded, then under way. UnknownProcedure; Refused with the reason."""
        config = self.procedures().get(name)
        if config is None:
            raise UnknownProcedure(name)
        values = _values(config, params)
        blocked = [self._not_ok(check) for check in config.preconditions]
        if problems := [p for p in blocked if p]:
            raise PreconditionsNotMet("preconditions not met: " + "; ".join(problems))
        now = self.clock.now()
        steps = [StepRecord(step.name) for step in config.steps]
        run = ProcedureRun(new_run_id(now), name, values, by, now, steps)
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        self._note(run, "started", f"started by {by}" + (f" with {shown}" if shown else ""))
        await self._save(run)
        log.info("procedure started", procedure=name, run=run.id, by=by)
        self._spawn(run, config)
        return run

    async def resume(self) -> None:
        """The runs a restart (or another leader) left unfinished, each from its step."""
        for doc in await self.store.unfinished_procedure_runs():
            run = ProcedureRun.from_json(doc)
            config = self.procedures().get(run.procedure)
            if config is None or [s.name for s in config.steps] != [s.name for s in run.steps]:
                why = "its procedure was removed or its steps changed: not resumed"
                await self._end(run, RunStatus.FAILED, why)
                continue
            self._note(run, "resumed", f"resumed at step {run.current + 1} after a restart")
            self._spawn(run, config)

    def cancel(self, run_id: str, by: str, reason: str) -> bool:
        """Stop the run and undo what it did; False if it does not run here."""
        task = self.tasks.get(run_id)
        if task is None or task.done():
            return False
        self._cancels[run_id] = (by, reason)
        task.cancel()
        return True

    async def stop(self) -> None:
        """runbookd stops: runs stay unfinished in the store and resume at the next start."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, run: ProcedureRun, config: ProcedureConfig) -> None:
        task = asyncio.create_task(self._drive(run, config), name=f"procedure {run.id}")
        self.tasks[run.id] = task
        task.add_done_callback(lambda _: self.tasks.pop(run.id, None))
        self.metrics.running.labels(run.procedure).inc()
        task.add_done_callback(lambda _: self.metrics.running.labels(run.procedure).dec())

    # -- a run -----------------------------------------------------------------------------------

    async def _drive(self, run: ProcedureRun, config: ProcedureConfig) -> None:
        try:
            at = run.current
            if at < len(run.steps) and (ending := run.steps[at].status) in UNWINDING:
                # runbookd stopped while undoing: carry on from where it was
                cancelled = ending is StepStatus.CANCELLED
                await self._unwind(run, config, at, run.steps[at].detail, cancelled=cancelled)
                return
            for index in range(at, len(config.steps)):
                step, record = config.steps[index], run.steps[index]
                outcome = await self._step(run, step, record)
                if not outcome.ok:
                    await self._unwind(run, config, index, outcome.detail)
                    return
            await self._end(run, RunStatus.SUCCEEDED, "every step succeeded")
        except Fenced:
            log.info("procedure left to the leader", run=run.id)
        except asyncio.CancelledError:
            cancel = self._cancels.pop(run.id, None)
            if cancel is None:
                raise  # runbookd stops: the run resumes at the next start
            if (task := asyncio.current_task()) is not None:
                task.uncancel()  # handled: the undo runs in this task, which a stop still cuts
            await self._cancelled(run, config, *cancel)
        except Exception as exc:  # a bug: the run fails loudly, its undo still runs
            log.exception("procedure crashed", run=run.id)
            await self._unwind(run, config, run.current, f"internal error: {exc!r}")

    async def _step(self, run: ProcedureRun, step: StepConfig, record: StepRecord) -> Outcome:
        refused = None  # a step of unknown effect an operator did not let run again
        if record.status is StepStatus.RUNNING and step.kind in ("run", "job"):
            refused = await self._run_again(run, step, record)
        if refused is not None:
            outcome = refused
        else:
            if record.status is not StepStatus.RUNNING or record.started_at is None:
                record.status, record.started_at = StepStatus.RUNNING, self.clock.now()
                self._note(run, "step", f"{step.name}: {_what(step)}", step=step.name)
                await self._save(run)
            outcome = await self._execute(run, step, record.started_at)
        record.status = StepStatus.SUCCEEDED if outcome.ok else StepStatus.FAILED
        record.ended_at, record.detail = self.clock.now(), outcome.detail[:DETAIL_LIMIT]
        verdict = "succeeded" if outcome.ok else "failed"
        self._note(run, verdict, f"{step.name} {verdict}: {outcome.detail}", step=step.name)
        await self._save(run)
        return outcome

    async def _run_again(
        self, run: ProcedureRun, step: StepConfig, record: StepRecord
    ) -> Outcome | None:
        """A step that was running when runbookd stopped: None to run it again (approved),
        else why not."""
        message = (
            f"{step.name} was running when runbookd stopped; its effect is unknown: approve "
            "to run it again, reject to stop here and undo"
        )
        asked = self.clock.now()
        self._note(run, "unknown", message, step=step.name)
        await self._save(run)
        decision = await self.approvals.wait(run.id, step.name, asked, asked + APPROVAL_DEFAULT)
        if decision is None:
            return Outcome(False, f"its effect is unknown and no approval came to run {step.name}")
        if not decision.approved:
            return Outcome(False, f"not run again: rejected by {decision.by}: {decision.reason}")
        record.started_at = None  # a new attempt, announced as such
        return None

    async def _execute(self, run: ProcedureRun, step: StepConfig, started: float) -> Outcome:
        if step.kind == "approval":
            return await self._approval(run, step, started)
        if step.kind == "wait_for":
            return await self._wait_for(step, started)
        if self.dry_run():
            return Outcome(True, f"dry run: {step.target} not run")
        if step.kind == "job":
            return await self._job(step)
        return await self._remediation(run, step.run or "", step.name, step.timeout)

    async def _approval(self, run: ProcedureRun, step: StepConfig, asked: float) -> Outcome:
        timeout = step.timeout or APPROVAL_DEFAULT
        log.warning("procedure waits for approval", run=run.id, step=step.name)
        decision = await self.approvals.wait(run.id, step.name, asked, asked + timeout)
        if decision is None:
            return Outcome(False, f"no answer within {timeout:g}s")
        if not decision.approved:
            return Outcome(False, f"rejected by {decision.by}: {decision.reason}")
        return Outcome(True, f"approved by {decision.by}: {decision.reason}")

    async def _wait_for(self, step: StepConfig, started: float) -> Outcome:
        """Until a run of the check that began after the step did is OK (each run started at
        once, not at the check's interval), or the step's time is up."""
        check = step.wait_for or ""
        deadline = started + (step.timeout or WAIT_FOR_DEFAULT)
        while True:
            seen = self.checks.latest(check)
            if seen is not None and seen.ts >= started and seen.status is Status.OK:
                return Outcome(True, f"{check} is OK")
            if self.clock.now() >= deadline:
                last = (
                    "no run yet" if seen is None else f"{seen.status.name.lower()}: {seen.reason}"
                )
                return Outcome(False, f"{check} not OK within {deadline - started:g}s ({last})")
            self.checks.run_now(check)
            await self.clock.sleep(min(POLL, max(0.0, deadline - self.clock.now())))

    async def _job(self, step: StepConfig) -> Outcome:
        try:
            if step.timeout is None:  # the job's own timeout bounds its run
                outcome, detail = await self.jobs.run_and_wait(step.job or "")
            else:
                async with self.clock.timeout(step.timeout):
                    outcome, detail = await self.jobs.run_and_wait(step.job or "")
        except UnknownJob:
            return Outcome(False, f"no job named {step.job!r}")
        except TimeoutError:  # the run was cut short and recorded as interrupted
            return Outcome(False, f"job {step.job} did not finish within {step.timeout:g}s")
        return Outcome(outcome in ("succeeded", "dry_run"), f"job {step.job} {outcome}: {detail}")

    async def _remediation(
        self, run: ProcedureRun, name: str, step: str, limit: float | None, failure: str = ""
    ) -> Outcome:
        """One remediation for the run: the target locked, a destructive one approved."""
        found = self.actions(name)
        if found is None:
            return Outcome(False, f"no remediation named {name!r}")
        action, config = found
        incident = run_incident(run, step, failure)
        target = config.target or name
        if (holder := self.locks.acquire(target, incident.id)) is not None:
            return Outcome(False, f"target {target!r} is busy: incident {holder} is acting on it")
        try:
            needed = config.require_approval
            if action.destructive if needed is None else needed:
                asked = self.clock.now()
                decision = await self.approvals.wait(
                    run.id, name, asked, asked + config.approval_timeout
                )
                if decision is None or not decision.approved:
                    why = "no approval in time" if decision is None else "rejected"
                    return Outcome(False, f"{name} not run: {why}")
            if not self.fence.may_act():
                raise Fenced("this replica lost the lead before the action ran")
            # deadline(), not timeout: for an API remediation `timeout` bounds one attempt,
            # and cutting a redeploy short would leave its variable set with no undo.
            limit = limit or config.deadline()
            try:
                async with self.clock.timeout(limit):
                    result = await action.execute(self.ctx_for(name), incident)
            except TimeoutError:
                return Outcome(False, f"{name} did not finish within {limit:g}s")
        finally:
            self.locks.release(incident.id)
        result = result or RemediationResult(True, "done")
        return Outcome(result.ok, f"{name}: {result.detail}")

    # -- how a run ends --------------------------------------------------------------------------

    async def _unwind(
        self,
        run: ProcedureRun,
        config: ProcedureConfig,
        at: int,
        why: str,
        *,
        cancelled: bool = False,
    ) -> None:
        """Undo the steps done before `at`, newest first; after a failure, `on_failure`."""
        await self._undo(run, config, at)
        if cancelled:
            await self._end(run, RunStatus.CANCELLED, "cancelled; what it did was undone")
            return
        failure = f"{config.steps[at].name} failed: {why}"
        for name in config.on_failure:
            await self._once(run, f"on_failure/{name}", name, "on_failure", failure)
        await self._end(run, RunStatus.FAILED, failure)

    async def _cancelled(
        self, run: ProcedureRun, config: ProcedureConfig, by: str, reason: str
    ) -> None:
        at = run.current
        if at < len(run.steps):
            record = run.steps[at]
            if record.status is StepStatus.RUNNING:
                record.detail = f"cut short by {by}'s cancel: its effect is unknown"
            else:
                record.detail = f"not run: cancelled by {by}"
            record.status, record.ended_at = StepStatus.CANCELLED, self.clock.now()
        self._note(run, "cancel", f"cancelled by {by}: {reason}", by=by, reason=reason)
        await self._save(run)
        await self._unwind(run, config, at, reason, cancelled=True)

    async def _undo(self, run: ProcedureRun, config: ProcedureConfig, before: int) -> None:
        """The undo of each step done before `before`, newest first."""
        for index in reversed(range(before)):
            step, record = config.steps[index], run.steps[index]
            if record.status is not StepStatus.SUCCEEDED or not step.undo:
                continue
            results = [
                await self._once(run, f"undo/{step.name}/{name}", name, f"undo {step.name}")
                for name in step.undo
            ]
            if all(results):
                record.status = StepStatus.UNDONE
                await self._save(run)

    async def _once(
        self, run: ProcedureRun, claim: str, name: str, why: str, failure: str = ""
    ) -> bool:
        """A remediation of the unwinding, claimed in the run's record before it runs: after
        a restart in the middle of it, it is not run again (its effect is unknown)."""
        if claim in run.claims:
            message = f"{name} ({why}) was running when runbookd stopped: not repeated"
            self._note(run, "unknown", message, remediation=name)
            return False
        run.claims.append(claim)
        await self._save(run)
        outcome = await self._remediation(run, name, why, None, failure)
        self._note(run, why.split()[0], outcome.detail, remediation=name, ok=outcome.ok)
        await self._save(run)
        return outcome.ok

    async def _end(self, run: ProcedureRun, status: RunStatus, why: str) -> None:
        run.status, run.ended_at = status, self.clock.now()
        self._note(run, str(status), why)
        await self._save(run)
        self.metrics.runs.labels(run.procedure, str(status)).inc()
        log_at = log.info if status is RunStatus.SUCCEEDED else log.warning
        log_at("procedure ended", procedure=run.procedure, run=run.id, status=str(status), why=why)

    # -- records ---------------------------------------------------------------------------------

    def _note(self, run: ProcedureRun, kind: str, message: str, **data: Any) -> None:
        run.timeline.append(RunEntry(self.clock.now(), kind, message[:DETAIL_LIMIT], data))

    async def _save(self, run: ProcedureRun) -> None:
        async with self.store.batch():
            await self.fence.check()  # a replica that no longer leads records nothing
            await self.store.save_procedure_run(run.to_json())

    def _not_ok(self, check: str) -> str:
        seen = self.checks.latest(check)
        if seen is None:
            return f"{check} has not run yet"
        if seen.status is not Status.OK:
            return f"{check} is {_described(seen)}"
        return ""


def run_incident(run: ProcedureRun, step: str, failure: str = "") -> Incident:
    """What a remediation is told it runs for: the procedure's run (never stored as an
    incident); its parameters reach a `command`'s environment and an `http` body. For
    `on_failure`, the run's failure: a page says what failed, and is critical, since a run
    stopped halfway may have left the application changed."""
    if failure:
        severity, summary = "critical", f"procedure {run.procedure} failed: {failure}"
    else:
        severity, summary = "info", f"procedure {run.procedure}, step {step}"
    return Incident(
        id=run.id,
        rule=run.procedure,
        check=step,
        severity=severity,
        summary=summary[:DETAIL_LIMIT],
        opened_at=run.started_at,
        trigger={
            "procedure": run.procedure,
            "run": run.id,
            "by": run.by,
            "params": dict(run.params),
        },
    )


def _values(config: ProcedureConfig, given: Mapping[str, str]) -> dict[str, str]:
    """The run's parameters: given, or defaulted; Refused naming the first wrong one."""
    if unknown := sorted(set(given) - set(config.params)):
        known = ", ".join(config.params) or "none"
        raise Refused(f"params.{unknown[0]}: not a parameter of this procedure (it has {known})")
    values: dict[str, str] = {}
    for name, param in config.params.items():
        value = given.get(name, param.default)
        if value is None:
            raise Refused(f"params.{name}: required")
        if len(value) > MAX_VALUE or "\n" in value or "\x00" in value:
            raise Refused(f"params.{name}: at most {MAX_VALUE} characters on one line")
        if param.pattern is not None and re.fullmatch(param.pattern, value) is None:
            raise Refused(f"params.{name}: {value!r} does not match {param.pattern!r}")
        values[name] = value
    return values


def _described(seen: Observation) -> str:
    return f"{seen.status.name.lower()}: {seen.reason}"


def _what(step: StepConfig) -> str:
    return {
        "run": f"running {step.run}",
        "job": f"running job {step.job}",
        "wait_for": f"waiting for {step.wait_for} to be OK",
        "approval": "waiting for an operator's approval",
    }[step.kind]
