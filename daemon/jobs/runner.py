"""Runs the `jobs:` section: each job's action on its schedule, one run at a time, every run
recorded in the store and told to the rules as an observation of the job.

A job's action passes the parts of the safety envelope that apply to scheduled work: a dry
run acts on nothing; the action's target is locked, so a job never runs beside a rule acting
on the same target (it is held instead); and an action that needs approval (destructive, or
`require_approval`) waits for an operator through the same approvals as a rule's steps. It
is not counted in the remediation budget, nor held by cooldowns: those bound reactions.

A run is never repeated blindly: a run a crash cut short is recorded as interrupted, and
after downtime a missed time runs once if it is within the job's `catch_up`, else it is
recorded as missed. A missed, interrupted, failed or timed-out run is `JOB.failed = 1`, which
a rule can page on like any value.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident, Observation, RemediationResult, Status
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.schedule import Schedule
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.fence import Fence, Unfenced
from daemon.pipeline.safety import TargetLocks
from daemon.store.protocol import Fenced, JobRun, Store
from remediations.base import Remediation, RemediationConfig, RemediationContext

log = structlog.get_logger("runbookd.jobs")

Sink = Callable[[Observation], Awaitable[None]]
# The action a job names, with its config; None if the config has no such remediation.
Actions = Callable[[str], tuple[Remediation, RemediationConfig] | None]

DETAIL_LIMIT = 2000  # characters of a run's detail kept in the store
SUCCEEDED = "succeeded"
SINCE = "job_schedules"  # the store's namespace: since when each job has had its schedule
# Outcomes that are not a failure: it worked, or a person or the dry run decided it would
# not act. Every other outcome (failed, timeout, interrupted, missed, held) is `failed = 1`.
FINE = frozenset({SUCCEEDED, "rejected", "dry_run"})


class UnknownJob(KeyError):
    pass


class JobBusy(RuntimeError):
    pass


@dataclass(slots=True)
class Entry:
    config: JobConfig
    schedule: Schedule
    task: asyncio.Task[tuple[str, str]] | None = None
    due: float | None = None  # the next scheduled time; heap entries for others are stale

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


def run_incident(job: str, run_id: int, trigger: str, scheduled_at: float) -> Incident:
    """What the action is told it runs for: the job's run, not an incident of a rule. It is
    never stored as an incident; a `command` or `http` action sees its id and rule."""
    return Incident(
        id=f"job-{job}-{run_id}",
        rule=job,
        check=job,
        severity="info",
        summary=f"{trigger} run of job {job}",
        opened_at=scheduled_at,
        trigger={"job": job, "run": run_id, "trigger": trigger},
    )


class JobRunner:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        metrics: JobMetrics,
        sink: Sink,
        actions: Actions,
        ctx_for: Callable[[str], RemediationContext],
        approvals: Approvals,
        locks: TargetLocks,
        dry_run: Callable[[], bool] = lambda: False,
        fence: Fence | None = None,
        watch: Callable[[asyncio.Task[Any]], object] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.sink = sink
        self.actions = actions
        self.ctx_for = ctx_for
        self.approvals = approvals
        self.locks = locks
        self.dry_run = dry_run
        self.fence: Fence = fence or Unfenced()
        self._watch = watch
        self.jobs: dict[str, Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- configuration -------------------------------------------------------------------------

    async def configure(self, jobs: Mapping[str, JobConfig]) -> None:
        """Install the jobs; an unchanged job keeps its schedule and its run in flight (a
        reload). A removed job's run in flight finishes; it is not scheduled again.

        The store keeps since when each job has had its schedule (`SINCE`): the times a
        restart finds missed are counted from there, never from before a job existed or its
        schedule changed."""
        now = self.clock.now()
        entries: dict[str, Entry] = {}
        for name, config in jobs.items():
            old = self.jobs.get(name)
            if old is not None and old.config == config:
                entries[name] = old
                continue
            entry = entries[name] = Entry(config, Schedule(name, config), old.task if old else None)
            if config.enabled:
                entry.due = entry.schedule.next_due(now)
                self._push(entry.due, name)
            timing = [config.schedule, config.timezone, config.jitter, config.enabled]
            since = await self.store.get_value(SINCE, name)
            if not isinstance(since, dict) or since.get("timing") != timing:
                await self.store.put_value(SINCE, name, {"timing": timing, "at": now})
        self.jobs = entries
        self._wake.set()

    def _push(self, due: float, name: str) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), name))

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Record runs a crash cut short, catch up or record what was missed while runbookd
        was down, tell the rules each job's last outcome, then follow the schedules."""
        now = self.clock.now()
        told: set[str] = set()
        for run in await self.store.unfinished_job_runs():
            detail = "runbookd stopped during the run: it is not repeated"
            await self._finish(run.id, run.job, "interrupted", detail, {})
            told.add(run.job)
        latest = await self.store.latest_job_runs()
        succeeded = await self.store.latest_job_runs(SUCCEEDED)
        for name, entry in self.jobs.items():
            caught_up = await self._catch_up(name, entry, now)
            if not caught_up and name not in told and name in latest:
                await self._tell(latest[name])
            if name in succeeded and (ended := succeeded[name].ended_at) is not None:
                self.metrics.last_success.labels(name).set(ended)
        self._loop_task = asyncio.create_task(self._loop(), name="jobs")
        if self._watch is not None:
            self._watch(self._loop_task)

    async def stop(self) -> None:
        """Stop scheduling and cut runs short: each is recorded as interrupted (a backup
        aborts its upload), never left looking as if it went on."""
        tasks = [t for t in (self._loop_task, *(e.task for e in self.jobs.values())) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    async def _catch_up(self, name: str, entry: Entry, now: float) -> bool:
        """Handle the times missed since the job's last scheduled run; True if any were."""
        if not entry.config.enabled:
            return False
        runs = await self.store.job_runs(name, limit=50)
        since = await self.store.get_value(SINCE, name)
        anchor = since.get("at") if isinstance(since, dict) else None
        # The latest time, not the latest record: a replica that led before may record an
        # older time after a later leader ran a newer one.
        scheduled = (r.scheduled_at for r in runs if r.trigger not in ("manual", "procedure"))
        last = max(scheduled, default=None)
        after = max((t for t in (anchor, last) if isinstance(t, int | float)), default=None)
        if after is None:
            return False
        # Not a time from `configure` on: the timer loop runs those (a start that lags its
        # configure, across a scheduled time, would run that time twice).
        due = entry.due if entry.due is not None else float("inf")
        missed = [t for t in entry.schedule.due_between(after, now) if t < due]
        if not missed:
            return False
        newest = missed[-1]
        caught = entry.config.catch_up > 0 and now - newest <= entry.config.catch_up
        skipped = missed[:-1] if caught else missed
        if skipped:
            more = "+" if len(missed) >= entry.schedule.CAP else ""
            detail = f"missed {len(skipped)}{more} scheduled runs: runbookd was not running"
            run_id = await self.store.add_job_run(name, "schedule", skipped[-1], None)
            await self._finish(run_id, name, "missed", detail, {"missed": len(skipped)})
        if caught:
            self._begin(name, entry, "catch_up", newest)
        return True

    # -- the timer loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, _, name = heapq.heappop(self._heap)
                entry = self.jobs.get(name)
                if entry is None or entry.due != due:
                    continue  # removed, disabled or rescheduled by a reload
                entry.due = entry.schedule.next_due(due)
                self._push(entry.due, name)
                if entry.running:
                    await self._skipped(name, due)
                else:
                    self._begin(name, entry, "schedule", due)
            await self._sleep(self._heap[0][0] - now if self._heap else None)

    async def _sleep(self, delay: float | None) -> None:
        try:
            if delay is None:
                await self._wake.wait()
            else:
                async with self.clock.timeout(delay):
                    await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _skipped(self, name: str, due: float) -> None:
        """A time that came while the last run still goes on: recorded as skipped (logged
        only, when the store cannot record it: the schedule goes on)."""
        try:
            run_id = await self.store.add_job_run(name, "schedule", due, None)
            await self._finish(run_id, name, "skipped", "the previous run was still going", {})
        except Exception:
            log.exception("job time skipped and not recorded", job=name)

    # -- runs ----------------------------------------------------------------------------------

    def run_now(self, name: str) -> None:
        """Start a run at once (`runbookd jobs run`); UnknownJob, or JobBusy if one goes on."""
        entry = self.jobs.get(name)
        if entry is None:
            raise UnknownJob(name)
        if entry.running:
            raise JobBusy(name)
        self._begin(name, entry, "manual", self.clock.now())

    async def run_and_wait(self, name: str) -> tuple[str, str]:
        """A run now for a procedure's step, after the run going on if there is one (a backup
        before a migration is a fresh one): its outcome and detail. UnknownJob."""
        entry = self.jobs.get(name)
        if entry is None:
            raise UnknownJob(name)
        if entry.task is not None and not entry.task.done():
            await asyncio.wait({entry.task})
        return await self._begin(name, entry, "procedure", self.clock.now())

    def _begin(
        self, name: str, entry: Entry, trigger: str, scheduled_at: float
    ) -> asyncio.Task[tuple[str, str]]:
        entry.task = asyncio.create_task(
            self._run(name, entry.config, trigger, scheduled_at), name=f"job-{name}"
        )
        return entry.task

    async def _run(
        self, name: str, config: JobConfig, trigger: str, scheduled_at: float
    ) -> tuple[str, str]:
        """The run, recorded; its outcome and detail."""
        started = self.clock.now()
        try:
            async with self.store.batch():
                await self.fence.check()  # only the leader runs jobs
                run_id = await self.store.add_job_run(name, trigger, scheduled_at, started)
        except Fenced:
            log.info("job not run: another replica leads", job=name)
            return "interrupted", "another replica leads"
        except Exception as exc:  # the store is down: nothing may run unrecorded
            detail = f"not run: the store cannot record it ({type(exc).__name__}: {exc})"
            log.error("job not run", job=name, reason=detail)
            self.metrics.runs.labels(name, "failed").inc()
            return "failed", detail
        self.metrics.running.labels(name).set(1)
        try:
            outcome, detail, data = await self._execute(name, config, run_id, trigger, scheduled_at)
        except asyncio.CancelledError:
            detail = "runbookd stopped during the run"
            await asyncio.shield(self._finish(run_id, name, "interrupted", detail, {}, started))
            raise
        finally:
            self.metrics.running.labels(name).set(0)
        await self._finish(run_id, name, outcome, detail, data, started)
        return outcome, detail

    async def _execute(
        self, name: str, config: JobConfig, run_id: int, trigger: str, scheduled_at: float
    ) -> tuple[str, str, dict[str, Any]]:
        found = self.actions(config.run)
        if found is None:  # config validation names it; a plugin may still vanish
            return "failed", f"no remediation named {config.run!r}", {}
        action, action_config = found
        if self.dry_run():
            return "dry_run", f"dry run: {config.run} ({action.type}) not run", {}
        incident = run_incident(name, run_id, trigger, scheduled_at)
        target = action_config.target or config.run
        if (holder := self.locks.acquire(target, incident.id)) is not None:
            return "held", f"target {target!r} is busy: incident {holder} is acting on it", {}
        try:
            refused = await self._approved(incident, config.run, action, action_config)
            if refused is not None:
                return refused
            if not self.fence.may_act():  # the lease ran out since the run was recorded
                return "interrupted", "this replica lost the lead before the action ran", {}
            # deadline(): an API action's `timeout` bounds one attempt, not its retries.
            timeout = config.timeout or action_config.deadline()
            log.info("job started", job=name, run=run_id, trigger=trigger, action=config.run)
            try:
                async with self.clock.timeout(timeout):
                    result = await action.execute(self.ctx_for(config.run), incident)
            except TimeoutError:
                return "timeout", f"{config.run} did not finish within {timeout:g}s", {}
            except Exception as exc:  # an action broke its contract: the run failed, say why
                log.exception("job action raised", job=name, action=config.run)
                return "failed", f"{config.run} raised {type(exc).__name__}: {exc}", {}
        finally:
            self.locks.release(incident.id)
        result = result or RemediationResult(True, "done")
        return (SUCCEEDED if result.ok else "failed"), result.detail, dict(result.data)

    async def _approved(
        self, incident: Incident, name: str, action: Remediation, config: RemediationConfig
    ) -> tuple[str, str, dict[str, Any]] | None:
        """None to go on; else why the run does not act (rejected, or no answer in time)."""
        needed = config.require_approval
        if not (action.destructive if needed is None else needed):
            return None
        now = self.clock.now()
        log.warning(
            "job waits for approval",
            job=incident.rule,
            action=name,
            approve=f"POST /api/v1/incidents/{incident.id}/approve",
        )
        deadline = now + config.approval_timeout
        decision = await self.approvals.wait(incident.id, name, now, deadline)
        if decision is None:
            return "held", f"no approval within {config.approval_timeout:g}s; {name} not run", {}
        if not decision.approved:
            by = {"by": decision.by, "reason": decision.reason}
            return "rejected", f"{name} rejected by {decision.by}: {decision.reason}", by
        return None

    async def _finish(
        self,
        run_id: int,
        name: str,
        outcome: str,
        detail: str,
        data: dict[str, Any],
        started: float | None = None,
    ) -> None:
        now = self.clock.now()
        await self.store.finish_job_run(run_id, now, outcome, detail[:DETAIL_LIMIT], data)
        self.metrics.runs.labels(name, outcome).inc()
        if started is not None:
            self.metrics.last_duration.labels(name).set(now - started)
        if outcome == SUCCEEDED:
            self.metrics.last_success.labels(name).set(now)
        log_at = log.info if outcome in (SUCCEEDED, "skipped") else log.warning
        log_at("job ended", job=name, run=run_id, outcome=outcome, detail=detail[:200])
        run = JobRun(run_id, name, "", 0.0, started, now, outcome, detail, data)
        await self._tell(run)

    async def _tell(self, run: JobRun) -> None:
        """The run as an observation of the job: `failed`, and what it measured."""
        if run.outcome == "skipped" or run.ended_at is None:
            return  # the run still going decides
        values = {"failed": 0.0 if run.outcome in FINE else 1.0}
        if run.started_at is not None:
            values["duration_seconds"] = run.ended_at - run.started_at
        if isinstance(size := run.data.get("bytes"), int | float) and not isinstance(size, bool):
            values["bytes"] = float(size)
        status = Status.OK if run.outcome in FINE else Status.CRITICAL
        reason = f"{run.outcome}: {run.detail}"[:200]
        try:
            await self.sink(Observation(run.job, status, values, self.clock.now(), reason=reason))
        except Exception:  # the run is recorded; the rules miss one value, which is logged
            log.exception("job observation failed", job=run.job)
