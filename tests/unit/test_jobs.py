"""Scheduled jobs under a ManualClock: cron times in a time zone (daylight saving included),
one run at a time, timeouts, catch-up after downtime, crashes and stops, manual runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock
from daemon.core.models import Incident, Observation, RemediationResult, Status
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.runner import JobBusy, JobRunner, UnknownJob
from daemon.jobs.schedule import Schedule
from daemon.pipeline.approvals import Approvals, Decision
from daemon.pipeline.safety import TargetLocks
from daemon.store.protocol import JobRun
from remediations.base import Hooks, RemediationConfig, RemediationContext
from tests.memory_store import MemoryData, MemoryStore
from tests.world import FakeAction, make_world

BERLIN = ZoneInfo("Europe/Berlin")


def at(*when: int) -> float:
    """Epoch seconds of a wall-clock time in Berlin."""
    return datetime(*when, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


class ActionConfig(RemediationConfig):
    type: Literal["job_action"] = "job_action"


class Action(Hooks):
    type: ClassVar[str] = "job_action"
    idempotent = False
    destructive = False
    notifier = False

    def __init__(
        self, clock: ManualClock, *, takes: float = 0.0, ok: bool = True, destructive: bool = False
    ) -> None:
        self.clock = clock
        self.destructive = destructive
        self.takes = takes
        self.ok = ok
        self.boom = False
        self.runs: list[tuple[float, Incident]] = []

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.runs.append((self.clock.now(), incident))
        if self.takes:
            await self.clock.sleep(self.takes)
        if self.boom:
            raise RuntimeError("disk full")
        detail = "uploaded" if self.ok else "pg_dump exited 1"
        return RemediationResult(self.ok, detail, data={"bytes": 42})


def job(**fields: Any) -> JobConfig:
    return JobConfig.model_validate({"run": "backup", "schedule": "0 2 * * *"} | fields)


class Harness:
    def __init__(
        self, clock: ManualClock, data: MemoryData, action: Action, *, dry_run: bool = False
    ) -> None:
        self.clock, self.action = clock, action
        self.approvals, self.locks = Approvals(clock), TargetLocks()
        self.store = MemoryStore(data)
        self.seen: list[Observation] = []
        self.registry = CollectorRegistry()
        self.metrics = JobMetrics(self.registry)

        async def sink(obs: Observation) -> None:
            self.seen.append(obs)

        config = ActionConfig(timeout="10m")
        self.runner = JobRunner(
            store=self.store,
            clock=clock,
            metrics=self.metrics,
            sink=sink,
            actions=lambda name: (action, config) if name == "backup" else None,
            ctx_for=lambda name: RemediationContext(None, clock),  # type: ignore[arg-type]
            approvals=self.approvals,
            locks=self.locks,
            dry_run=lambda: dry_run,
        )

    async def start(self, **jobs: JobConfig) -> Harness:
        await self.runner.configure(jobs or {"nightly": job(timezone="Europe/Berlin")})
        await self.runner.start()
        await self.clock.quiet()
        return self

    async def runs(self, name: str = "nightly") -> list[JobRun]:
        return list(reversed(await self.store.job_runs(name)))

    def metric(self, name: str, **labels: str) -> float | None:
        value: float | None = self.registry.get_sample_value(name, labels)
        return value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at(2026, 3, 27, 12, 0))


async def started(clock: ManualClock, **jobs: JobConfig) -> Harness:
    return await Harness(clock, MemoryData(), Action(clock)).start(**jobs)


async def test_a_daily_job_runs_at_its_local_time_and_is_recorded(clock: ManualClock) -> None:
    h = await started(clock)
    await clock.advance(at(2026, 3, 28, 2, 0) - clock.now() - 1)
    assert h.action.runs == []
    await clock.advance(1)
    ((ran_at, incident),) = h.action.runs
    assert ran_at == at(2026, 3, 28, 2, 0)
    assert (incident.rule, incident.trigger["trigger"]) == ("nightly", "schedule")
    (run,) = await h.runs()
    assert (run.trigger, run.outcome, run.detail, run.data) == (
        "schedule",
        "succeeded",
        "uploaded",
        {"bytes": 42},
    )
    assert run.scheduled_at == run.started_at == run.ended_at == ran_at
    (obs,) = h.seen
    assert (obs.check, obs.status, obs.values) == (
        "nightly",
        Status.OK,
        {"failed": 0.0, "duration_seconds": 0.0, "bytes": 42.0},
    )
    assert h.metric("runbookd_job_runs_total", job="nightly", outcome="succeeded") == 1
    assert h.metric("runbookd_job_last_success_timestamp_seconds", job="nightly") == ran_at


async def test_daylight_saving_changes_neither_lose_nor_double_a_run() -> None:
    """02:30 does not exist on 29 March 2026 in Berlin (it runs at 03:00) and happens twice
    on 25 October 2026 (it runs once)."""
    for start, days in ((at(2026, 3, 27, 12, 0), 3), (at(2026, 10, 23, 12, 0), 3)):
        clock = ManualClock(start)
        h = await started(clock, nightly=job(schedule="30 2 * * *", timezone="Europe/Berlin"))
        await clock.advance(days * 86400)
        local = [
            datetime.fromtimestamp(t, BERLIN).strftime("%d %H:%M %Z") for t, _ in h.action.runs
        ]
        if start < at(2026, 6, 1):
            assert local == ["28 02:30 CET", "29 03:00 CEST", "30 02:30 CEST"]
        else:
            assert local == ["24 02:30 CEST", "25 02:30 CEST", "26 02:30 CET"]
        await h.runner.configure({})
        await h.runner.stop()


async def test_a_run_still_going_is_never_overlapped(clock: ManualClock) -> None:
    h = await Harness(clock, MemoryData(), Action(clock, takes=90)).start(
        minutely=job(schedule="* * * * *")
    )
    await clock.advance(270)  # runs at 12:01 and 12:03, each for 90 s
    runs = await h.runs("minutely")
    assert [r.outcome for r in runs] == ["succeeded", "skipped", "succeeded", "skipped"]
    assert runs[1].started_at is None
    assert runs[1].detail == "the previous run was still going"
    assert len(h.action.runs) == 2
    # A skipped run tells the rules nothing: the run that was going decides.
    assert [o.values["failed"] for o in h.seen] == [0.0, 0.0]
    await h.runner.stop()


async def test_a_store_that_cannot_record_a_run_runs_nothing_and_the_schedule_goes_on(
    clock: ManualClock,
) -> None:
    h = await Harness(clock, MemoryData(), Action(clock)).start(minutely=job(schedule="* * * * *"))
    add = h.store.add_job_run

    async def down(*args: Any) -> int:
        raise OSError("connection refused")

    h.store.add_job_run = down  # type: ignore[method-assign]
    await clock.advance(60)  # 12:01: the store is down
    assert h.action.runs == []  # nothing acts unrecorded
    failed = h.registry.get_sample_value(
        "runbookd_job_runs_total", {"job": "minutely", "outcome": "failed"}
    )
    assert failed == 1
    h.store.add_job_run = add  # type: ignore[method-assign]
    await clock.advance(60)  # 12:02: back
    assert len(h.action.runs) == 1
    assert [r.outcome for r in await h.runs("minutely")] == ["succeeded"]
    await h.runner.stop()


async def test_a_failed_a_raising_and_a_timed_out_run_each_count_as_failed(
    clock: ManualClock,
) -> None:
    action = Action(clock, ok=False)
    h = await Harness(clock, MemoryData(), action).start(
        nightly=job(schedule="0 * * * *", timeout="10m")
    )
    await clock.advance(3600)
    action.ok, action.boom = True, True
    await clock.advance(3600)
    action.boom, action.takes = False, 3600
    await clock.advance(3600 + 600)
    runs = await h.runs()
    assert [(r.outcome, r.detail) for r in runs] == [
        ("failed", "pg_dump exited 1"),
        ("failed", "backup raised RuntimeError: disk full"),
        ("timeout", "backup did not finish within 600s"),
    ]
    assert [o.values["failed"] for o in h.seen] == [1.0, 1.0, 1.0]
    assert {o.status for o in h.seen} == {Status.CRITICAL}
    assert h.metric("runbookd_job_runs_total", job="nightly", outcome="failed") == 2
    assert h.metric("runbookd_job_runs_total", job="nightly", outcome="timeout") == 1
    await h.runner.stop()


async def restart(h: Harness, clock: ManualClock, down: float, **jobs: JobConfig) -> Harness:
    """Stop, stay down for `down` seconds, start again on the same data."""
    await h.runner.stop()
    await clock.advance(down)
    return await Harness(clock, h.store.data, h.action).start(**jobs)


async def test_after_downtime_the_newest_missed_run_within_catch_up_runs_once(
    clock: ManualClock,
) -> None:
    nightly = job(timezone="Europe/Berlin", catch_up="6h")
    h = await started(clock, nightly=nightly)
    await clock.advance(at(2026, 3, 28, 3, 0) - clock.now())  # ran at 02:00 on the 28th
    # Down from 03:00 on the 28th until 05:00 on the 30th: the 29th and the 30th are missed.
    h = await restart(h, clock, at(2026, 3, 30, 5, 0) - clock.now(), nightly=nightly)
    runs = await h.runs()
    assert [(r.trigger, r.outcome) for r in runs] == [
        ("schedule", "succeeded"),
        ("schedule", "missed"),
        ("catch_up", "succeeded"),
    ]
    assert runs[1].detail == "missed 1 scheduled runs: runbookd was not running"
    assert runs[1].scheduled_at == at(2026, 3, 29, 2, 0)
    assert runs[2].scheduled_at == at(2026, 3, 30, 2, 0)
    assert runs[2].started_at == at(2026, 3, 30, 5, 0)
    # Then the schedule goes on as before, and a restart without downtime changes nothing.
    await clock.advance(at(2026, 3, 31, 2, 0) - clock.now())
    h = await restart(h, clock, 60, nightly=nightly)
    assert [r.trigger for r in await h.runs()][-1] == "schedule"
    assert len(await h.runs()) == 4
    await h.runner.stop()


async def test_missed_times_count_from_the_latest_time_recorded_not_the_latest_record(
    clock: ManualClock,
) -> None:
    """Several replicas: a leader paused past its lease records, when it resumes, a time it
    had due from before (skipped) after the next leader has run a later one. A start must
    count missed times from the latest time, or it runs that later one again."""
    nightly = job(timezone="Europe/Berlin", catch_up="6h")
    h = await started(clock, nightly=nightly)
    await h.runner.stop()
    ran, stale = at(2026, 3, 29, 2, 0), at(2026, 3, 28, 2, 0)
    await clock.advance(at(2026, 3, 29, 3, 0) - clock.now())
    run_id = await h.store.add_job_run("nightly", "schedule", ran, ran)
    await h.store.finish_job_run(run_id, ran + 60, "succeeded", "uploaded", {})
    late = await h.store.add_job_run("nightly", "schedule", stale, None)
    await h.store.finish_job_run(
        late, clock.now(), "skipped", "the previous run was still going", {}
    )
    h = await restart(h, clock, 7200, nightly=nightly)
    assert h.action.runs == []
    assert [(r.scheduled_at, r.outcome) for r in await h.runs()] == [
        (ran, "succeeded"),
        (stale, "skipped"),
    ]
    await h.runner.stop()


async def test_a_time_between_configure_and_start_runs_once(clock: ManualClock) -> None:
    """A replica taking over configures its jobs, then starts them; a scheduled time that
    falls in between (a pause, a slow store) is the timer loop's, not a missed one as well."""
    nightly = job(timezone="Europe/Berlin", catch_up="6h")
    h = await started(clock, nightly=nightly)
    await h.runner.stop()
    await clock.advance(at(2026, 3, 28, 1, 59) - clock.now())
    h = Harness(clock, h.store.data, h.action)
    await h.runner.configure({"nightly": nightly})
    await clock.advance(120)
    await h.runner.start()
    await clock.quiet()
    assert [(r.trigger, r.scheduled_at) for r in await h.runs()] == [
        ("schedule", at(2026, 3, 28, 2, 0))
    ]
    await h.runner.stop()


async def test_without_catch_up_every_missed_run_is_recorded_and_fails(clock: ManualClock) -> None:
    h = await started(clock)
    await clock.advance(at(2026, 3, 28, 3, 0) - clock.now())
    h = await restart(h, clock, 3 * 86400)
    runs = await h.runs()
    assert [(r.outcome, r.data) for r in runs] == [
        ("succeeded", {"bytes": 42}),
        ("missed", {"missed": 3}),
    ]
    assert h.seen[-1].values == {"failed": 1.0}
    assert len(h.action.runs) == 1
    await h.runner.stop()


async def test_a_run_cut_short_by_a_crash_is_recorded_interrupted_and_not_repeated(
    clock: ManualClock,
) -> None:
    # What a crash at 02:01 leaves: a run begun at 02:00, never finished.
    data = MemoryData()
    began = at(2026, 3, 28, 2, 0)
    await MemoryStore(data).add_job_run("nightly", "schedule", began, began)
    await clock.advance(at(2026, 3, 28, 2, 1) - clock.now())
    h = await Harness(clock, data, Action(clock)).start()
    (run,) = await h.runs()
    assert (run.outcome, run.detail) == (
        "interrupted",
        "runbookd stopped during the run: it is not repeated",
    )
    assert h.action.runs == []
    # Told once, without a duration (the run's end is unknown).
    assert [o.values for o in h.seen] == [{"failed": 1.0}]
    await h.runner.stop()


async def test_a_stop_during_a_run_records_it_interrupted(clock: ManualClock) -> None:
    h = await Harness(clock, MemoryData(), Action(clock, takes=3600)).start()
    await clock.advance(at(2026, 3, 28, 2, 1) - clock.now())
    await h.runner.stop()
    (run,) = await h.runs()
    assert (run.outcome, run.detail) == ("interrupted", "runbookd stopped during the run")
    assert h.metric("runbookd_job_running", job="nightly") == 0


async def test_a_manual_run_starts_at_once_and_never_beside_another(clock: ManualClock) -> None:
    h = await Harness(clock, MemoryData(), Action(clock, takes=60)).start(
        nightly=job(enabled=False)
    )
    h.runner.run_now("nightly")
    with pytest.raises(JobBusy):
        h.runner.run_now("nightly")
    with pytest.raises(UnknownJob):
        h.runner.run_now("nope")
    await clock.advance(2 * 86400)  # disabled: the schedule never starts it
    (run,) = await h.runs()
    assert (run.trigger, run.outcome) == ("manual", "succeeded")
    await h.runner.stop()


async def test_a_reload_moves_a_changed_schedule_and_drops_a_removed_job(
    clock: ManualClock,
) -> None:
    h = await started(clock, nightly=job(), hourly=job(schedule="0 * * * *"))
    await h.runner.configure({"nightly": job(schedule="0 4 * * *")})
    await clock.advance(86400)
    assert await h.runs("hourly") == []
    (run,) = await h.runs()
    assert datetime.fromtimestamp(run.scheduled_at, ZoneInfo("UTC")).hour == 4
    await h.runner.stop()


def test_jitter_is_a_stable_offset_within_its_bound() -> None:
    config = job(jitter="10m")
    offsets = {Schedule(f"job{i}", config).offset for i in range(50)}
    assert all(0 <= o < 600 for o in offsets)
    assert len(offsets) > 40
    assert Schedule("a", config).offset == Schedule("a", config).offset
    schedule = Schedule("a", config)
    due = schedule.next_due(at(2026, 3, 27, 12, 0))
    assert due == datetime(2026, 3, 28, 2, 0, tzinfo=ZoneInfo("UTC")).timestamp() + schedule.offset
    assert schedule.next_due(due) > due + 86000


def test_a_long_downtime_lists_a_bounded_number_of_missed_times() -> None:
    schedule = Schedule("m", job(schedule="* * * * *"))
    start = at(2026, 1, 1, 0, 0)
    assert len(schedule.due_between(start, start + 30 * 86400)) == Schedule.CAP


async def test_a_failed_run_opens_an_incident_that_pages_and_a_good_run_resolves_it(
    clock: ManualClock,
) -> None:
    """`when: nightly.failed > 0` is a rule like any other: the job's runs are its check."""
    pager = FakeAction("page")
    w = make_world(
        {"backup_failed": {"when": "nightly.failed > 0", "do": ["page"]}},
        {"page": pager},
        clock=clock,
    )
    action = Action(clock, ok=False)
    config = ActionConfig(timeout="10m")
    runner = JobRunner(
        store=w.store,
        clock=clock,
        metrics=w.metrics.jobs,
        sink=w.engine.observe,
        actions=lambda name: (action, config),
        ctx_for=lambda name: RemediationContext(None, clock),  # type: ignore[arg-type]
        approvals=w.pipeline.approvals,
        locks=w.pipeline.locks,
    )
    await runner.configure({"nightly": job(timezone="Europe/Berlin")})
    await runner.start()
    await clock.advance(at(2026, 3, 28, 2, 0) - clock.now())
    await w.settle()
    (incident,) = w.opened
    assert incident.rule == "backup_failed"
    assert pager.calls == [incident.id]
    action.ok = True
    await clock.advance(86400)
    await w.settle()
    assert not w.engine.incidents
    await runner.stop()


async def test_a_dry_run_acts_on_nothing_and_says_so(clock: ManualClock) -> None:
    h = await Harness(clock, MemoryData(), Action(clock), dry_run=True).start()
    h.runner.run_now("nightly")
    await clock.quiet()
    (run,) = await h.runs()
    assert (run.outcome, run.detail) == ("dry_run", "dry run: backup (job_action) not run")
    assert h.action.runs == []
    assert h.seen[-1].values["failed"] == 0.0


async def test_a_job_never_acts_on_a_target_a_rule_is_acting_on(clock: ManualClock) -> None:
    h = await started(clock)
    h.locks.acquire("backup", "inc-7")  # a rule's plan holds the target
    h.runner.run_now("nightly")
    await clock.quiet()
    (run,) = await h.runs()
    assert (run.outcome, run.detail) == (
        "held",
        "target 'backup' is busy: incident inc-7 is acting on it",
    )
    assert h.action.runs == []
    assert h.seen[-1].values["failed"] == 1.0
    h.locks.release("inc-7")
    h.runner.run_now("nightly")
    await clock.quiet()
    assert [r.outcome for r in await h.runs()] == ["held", "succeeded"]
    assert h.locks.acquire("backup", "inc-8") is None  # the job let go of it


async def test_a_destructive_action_waits_for_approval(clock: ManualClock) -> None:
    h = await Harness(clock, MemoryData(), Action(clock, destructive=True)).start()
    for answer in (
        Decision(True, "ana", "window agreed"),
        Decision(False, "bo", "not tonight"),
        None,
    ):
        h.runner.run_now("nightly")
        await clock.quiet()
        (pending,) = h.approvals.pending.values()
        assert pending.remediation == "backup"
        assert pending.deadline == clock.now() + 900
        if answer is None:
            await clock.advance(900)
        else:
            assert h.approvals.decide(pending.incident_id, answer)
            await clock.quiet()
    runs = await h.runs()
    assert [(r.outcome, r.detail) for r in runs] == [
        ("succeeded", "uploaded"),
        ("rejected", "backup rejected by bo: not tonight"),
        ("held", "no approval within 900s; backup not run"),
    ]
    assert len(h.action.runs) == 1
    assert [o.values["failed"] for o in h.seen] == [0.0, 0.0, 1.0]
