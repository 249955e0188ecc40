"""A model-based test of scheduled jobs: Hypothesis interleaves clock moves (across the
daylight saving change of 29 March 2026 in Berlin), actions that succeed, fail, overrun
their next time or hang past their timeout, runs by hand, graceful restarts and crashes with
downtime, and checks after every step:

1. A job never runs beside itself.
2. Every scheduled time since the job has had its schedule is accounted for exactly once:
   run, skipped, caught up, or counted in a `missed` record; none is run twice.
3. Nothing is left unfinished in the store but the runs going on now.
4. The rules' last value of each job agrees with its last finished run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.core.clock import ManualClock
from daemon.core.models import Incident, Observation, RemediationResult
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.runner import FINE, SINCE, JobBusy, JobRunner
from daemon.jobs.schedule import Schedule
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.safety import TargetLocks
from remediations.base import Hooks, RemediationConfig, RemediationContext
from tests.memory_store import MemoryData, MemoryStore

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 28, 20, 0, tzinfo=BERLIN).timestamp()
JOBS = {
    "hourly": JobConfig.model_validate(
        {
            "run": "hourly",
            "schedule": "0 * * * *",
            "timezone": "Europe/Berlin",
            "catch_up": "2h",
            "timeout": "100m",
        }
    ),
    "daily": JobConfig.model_validate(
        {"run": "daily", "schedule": "30 2 * * *", "timezone": "Europe/Berlin", "jitter": "5m"}
    ),
}
# How long an action takes: "slow" overruns the hourly job's next time, "hang" its timeout.
TAKES = {"ok": 0.0, "fail": 0.0, "slow": 5400.0, "hang": 36000.0}
SCHEDULED = ("schedule", "catch_up")


class ActionConfig(RemediationConfig):
    type: Literal["model_action"] = "model_action"


class Action(Hooks):
    type: ClassVar[str] = "model_action"
    idempotent = False
    destructive = False
    notifier = False

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.mode = "ok"
        self.active = 0
        self.most_active = 0
        self.scheduled: list[float] = []  # the scheduled times it ran for

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        if incident.trigger["trigger"] in SCHEDULED:
            self.scheduled.append(incident.opened_at)
        try:
            if TAKES[self.mode]:
                await self.clock.sleep(TAKES[self.mode])
            return RemediationResult(self.mode != "fail", self.mode)
        finally:
            self.active -= 1


class Killable(MemoryStore):
    """The store until a crash: after it, every call fails, as a dead process writes nothing."""

    dead = False

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name != "dead" and object.__getattribute__(self, "dead"):
            raise RuntimeError("the process is dead")
        return object.__getattribute__(self, name)


class JobsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.logs = capture_logs()
        self.logs.__enter__()
        self.clock = ManualClock(START)
        self.data = MemoryData()
        self.actions = {name: Action(self.clock) for name in JOBS}
        self.last_seen: dict[str, Observation] = {}
        self.runner = self.loop.run_until_complete(self._boot())

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.runner.stop())
        finally:
            self.loop.close()
            self.logs.__exit__(None, None, None)

    async def _boot(self) -> JobRunner:
        self.store = Killable(self.data)
        config = ActionConfig(timeout="2h")

        async def sink(obs: Observation) -> None:
            self.last_seen[obs.check] = obs

        runner = JobRunner(
            store=self.store,
            clock=self.clock,
            metrics=JobMetrics(CollectorRegistry()),
            sink=sink,
            actions=lambda name: (self.actions[name], config),
            ctx_for=lambda name: RemediationContext(None, self.clock),  # type: ignore[arg-type]
            approvals=Approvals(self.clock),
            locks=TargetLocks(),
        )
        await runner.configure(JOBS)
        await runner.start()
        await self.clock.quiet()
        return runner

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- the world ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([60.0, 600.0, 1800.0, 3600.0, 5400.0, 86400.0]))
    def wait(self, seconds: float) -> None:
        self.run(self.clock.advance(seconds))

    @rule(job=st.sampled_from(sorted(JOBS)), mode=st.sampled_from(sorted(TAKES)))
    def action_mode(self, job: str, mode: str) -> None:
        self.actions[job].mode = mode

    @rule(job=st.sampled_from(sorted(JOBS)))
    def run_by_hand(self, job: str) -> None:
        async def ask() -> None:
            busy = self.runner.jobs[job].running
            try:
                self.runner.run_now(job)
                assert not busy, "a second run started beside one going on"
            except JobBusy:
                assert busy, "refused although nothing ran"
            await self.clock.quiet()

        self.run(ask())

    @rule(graceful=st.booleans(), down=st.sampled_from([0.0, 600.0, 3600.0, 10800.0, 172800.0]))
    def restart(self, graceful: bool, down: float) -> None:
        async def restart() -> JobRunner:
            if graceful:
                await self.runner.stop()
            else:
                self.store.dead = True
                await self.runner.stop()  # cancels its tasks; nothing reaches the store
            await self.clock.advance(down)
            return await self._boot()

        self.runner = self.run(restart())

    # -- the promises ----------------------------------------------------------------------------

    @invariant()
    def never_beside_itself(self) -> None:
        for name, action in self.actions.items():
            assert action.most_active <= 1, f"{name} ran beside itself"

    @invariant()
    def every_scheduled_time_is_accounted_for_once(self) -> None:
        for name, config in JOBS.items():
            runs = self.data.job_runs.values()
            mine = [r for r in runs if r.job == name and r.trigger in SCHEDULED]
            since = self.data.values[(SINCE, name)]
            first = float(json.loads(since)["at"])
            due = Schedule(name, config).due_between(first, self.clock.now())
            counted = sum(r.data.get("missed", 1) if r.outcome == "missed" else 1 for r in mine)
            assert counted == len(due), f"{name}: {counted} accounted for, {len(due)} due"
            ran = [r.scheduled_at for r in mine if r.outcome != "missed"]
            assert len(ran) == len(set(ran)), f"{name}: a scheduled time recorded twice"
            executed = self.actions[name].scheduled
            assert len(executed) == len(set(executed)), f"{name}: a scheduled time ran twice"

    @invariant()
    def only_the_runs_going_on_are_unfinished(self) -> None:
        unfinished = {r.job for r in self.data.job_runs.values() if r.outcome is None}
        going = {name for name, entry in self.runner.jobs.items() if entry.running}
        assert unfinished == going

    @invariant()
    def the_rules_see_each_jobs_last_outcome(self) -> None:
        for name in JOBS:
            finished = [
                r
                for r in self.data.job_runs.values()
                if r.job == name and r.outcome not in (None, "skipped")
            ]
            if not finished:
                continue
            last = max(finished, key=lambda r: r.id)
            seen = self.last_seen.get(name)
            assert seen is not None, f"{name}: its last run was never told"
            assert seen.values["failed"] == (0.0 if last.outcome in FINE else 1.0), (name, last)


def test_jobs_keep_their_promises_under_every_interleaving() -> None:
    run_state_machine_as_test(
        JobsMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
