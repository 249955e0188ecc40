"""The scheduler under a ManualClock: intervals, phase, overlap, timeouts, the in-flight bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from checks.base import CheckConfig, CheckContext, CheckResult, Stateless
from daemon.core.clock import ManualClock
from daemon.core.models import Observation, Status
from daemon.runtime.metrics import Metrics
from daemon.runtime.scheduler import Job, Scheduler, Sink, phase


class ProbeConfig(CheckConfig):
    type: Literal["probe"] = "probe"


class Probe(Stateless):
    type: ClassVar[str] = "probe"
    Config = ProbeConfig

    def __init__(self, *, hang: bool = False, boom: bool = False, takes: float = 0.0) -> None:
        self.started = 0
        self.hang = hang
        self.boom = boom
        self.takes = takes
        self.release = asyncio.Event()

    async def run(self, ctx: CheckContext) -> CheckResult:
        self.started += 1
        if self.takes:
            await ctx.clock.sleep(self.takes)
        if self.boom:
            raise ValueError("bad parse")
        if self.hang:
            await self.release.wait()
        return CheckResult(Status.OK, {"v": float(self.started)}, "fine")


def cfg(**fields: object) -> ProbeConfig:
    return ProbeConfig.model_validate({"interval": "1s", "timeout": "5s", "jitter": 0} | fields)


def started(clock: ManualClock, sink: Sink, max_in_flight: int = 4) -> Scheduler:
    scheduler = Scheduler(
        ctx=CheckContext(None, clock),  # type: ignore[arg-type]  # probes need no session
        clock=clock,
        sink=sink,
        metrics=Metrics(CollectorRegistry()),
        max_in_flight=max_in_flight,
    )
    scheduler.start()
    return scheduler


@pytest.fixture
async def sched(clock: ManualClock) -> AsyncIterator[tuple[Scheduler, list[Observation]]]:
    seen: list[Observation] = []

    async def sink(obs: Observation) -> None:
        seen.append(obs)

    scheduler = started(clock, sink)
    yield scheduler, seen
    await scheduler.stop()


def metric(s: Scheduler, name: str, **labels: str) -> float:
    return s.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_each_check_runs_on_its_own_interval(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, seen = sched
    fast, slow = Probe(), Probe()
    await s.set_checks({"fast": (fast, cfg()), "slow": (slow, cfg(interval="5s"))})
    await clock.advance(9.5)
    assert fast.started == 10  # t = 0, 1, ..., 9
    assert slow.started == 2  # t = 0, 5
    assert [o.check for o in seen].count("fast") == 10
    assert seen[-1].status is Status.OK
    assert s.first_round.is_set()


async def test_phase_is_stable_and_within_the_jitter(clock: ManualClock) -> None:
    config = cfg(interval="10s", jitter="20%")
    offsets = {phase(f"check-{i}", config) for i in range(50)}
    assert all(0 <= o < 2.0 for o in offsets)
    assert len(offsets) > 40  # spread out, not bunched
    assert phase("check-1", config) == phase("check-1", config)


async def test_observations_carry_their_due_time_beside_their_finish_time(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, seen = sched
    t0 = clock.now()
    await s.set_checks({"slow": (Probe(takes=0.3), cfg(interval="2s"))})
    await clock.advance(4.5)
    assert [o.due for o in seen] == [t0, t0 + 2, t0 + 4]
    assert [round(o.ts - t0, 6) for o in seen] == [0.3, 2.3, 4.3]
    assert seen[0].sampled == t0


async def test_the_worker_pool_grows_with_the_checks_up_to_the_bound(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched  # max_in_flight=4

    def workers() -> int:
        return sum(t.get_name().startswith("check-worker-") for t in asyncio.all_tasks())

    assert workers() == 0  # no checks, no idle tasks
    await s.set_checks({"a": (Probe(), cfg()), "b": (Probe(), cfg())})
    assert workers() == 2
    await s.set_checks({f"c{i}": (Probe(), cfg()) for i in range(9)})
    assert workers() == 4
    await s.stop()
    assert workers() == 0


async def test_a_check_never_overlaps_itself(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, seen = sched
    probe = Probe(hang=True)
    await s.set_checks({"stuck": (probe, cfg(timeout="30s"))})
    await clock.advance(4.5)
    assert probe.started == 1
    assert metric(s, "runbookd_check_runs_skipped_total", check="stuck") == 4
    probe.release.set()
    await clock.advance(1)
    assert probe.started == 2
    assert len(seen) == 2


async def test_timeout_gives_unknown_with_a_reason(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, seen = sched
    await s.set_checks({"stuck": (Probe(hang=True), cfg(timeout="2s", interval="10s"))})
    await clock.advance(2.5)
    assert len(seen) == 1
    assert seen[0].status is Status.UNKNOWN
    assert seen[0].reason == "check did not finish within 2s"
    assert seen[0].duration == pytest.approx(2.0)


async def test_a_check_that_bounds_itself_gets_no_second_timer(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    class SelfTimed(Probe):
        bounded: ClassVar[bool] = True

        async def run(self, ctx: CheckContext) -> CheckResult:
            try:
                async with ctx.clock.timeout(3.0):  # (longer than its config's, to tell)
                    return await super().run(ctx)
            except TimeoutError:
                return CheckResult(Status.CRITICAL, {"up": 0.0}, "timeout after 3s")

    s, seen = sched
    await s.set_checks({"own": (SelfTimed(hang=True), cfg(timeout="2s", interval="10s"))})
    await clock.advance(2.5)
    assert seen == []  # the scheduler did not cut it at 2 s
    await clock.advance(0.6)
    assert [(o.status, o.reason) for o in seen] == [(Status.CRITICAL, "timeout after 3s")]


def test_the_http_check_bounds_itself_below_its_timeout() -> None:
    from checks.http import HttpCheck
    from daemon.clients.timeouts import request_timeout

    assert HttpCheck.bounded is True
    assert request_timeout(2.0) < 2.0
    assert request_timeout(30.0) == 29.5


async def test_a_raising_check_is_unknown_not_a_crash(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, seen = sched
    await s.set_checks({"buggy": (Probe(boom=True), cfg())})
    await clock.advance(2.5)
    assert [o.status for o in seen] == [Status.UNKNOWN] * 3
    assert seen[0].reason == "check raised ValueError: bad parse"


async def test_checks_in_flight_are_bounded(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    probes = [Probe(hang=True) for _ in range(6)]
    await s.set_checks({f"c{i}": (p, cfg(timeout="60s")) for i, p in enumerate(probes)})
    await clock.advance(0.5)
    assert sum(p.started for p in probes) == 4  # max_in_flight
    probes[0].release.set()
    await clock.advance(0)
    assert sum(p.started for p in probes) == 5


async def test_reload_keeps_unchanged_checks_and_drops_removed_ones(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    keep, drop, add = Probe(), Probe(), Probe()
    await s.set_checks({"keep": (keep, cfg()), "drop": (drop, cfg())})
    await clock.advance(2.5)
    await s.set_checks({"keep": (Probe(), cfg()), "add": (add, cfg())})
    await clock.advance(2)
    assert keep.started == 5  # same config: the running instance and schedule stay
    assert drop.started == 3
    assert add.started == 3  # at 2.5, 3.5 and 4.5: a new check starts at once


async def test_run_now_starts_a_run_at_once(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    probe = Probe()
    await s.set_checks({"p": (probe, cfg(interval="1h"))})
    await clock.advance(0.1)
    assert probe.started == 1
    assert s.run_now("p")
    assert not s.run_now("missing")
    await clock.advance(0)
    assert probe.started == 2


async def test_lateness_and_status_metrics(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    await s.set_checks({"p": (Probe(), cfg())})
    await clock.advance(2.5)
    assert metric(s, "runbookd_schedule_lateness_seconds_count") == 3
    assert metric(s, "runbookd_check_runs_total", check="p", status="ok") == 3
    assert metric(s, "runbookd_check_value", check="p", value="v") == 3
    assert metric(s, "runbookd_check_duration_seconds_count", type="probe") == 3
    assert metric(s, "runbookd_check_last_duration_seconds", check="p") == 0
    assert metric(s, "runbookd_check_runs_skipped_total", check="p") == 0


async def test_a_check_changed_by_reload_keeps_counting_where_it_was(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    await s.set_checks({"p": (Probe(), cfg())})
    await clock.advance(1.5)
    await s.set_checks({"p": (Probe(takes=0.25), cfg(interval="2s"))})
    await clock.advance(0.5)
    assert metric(s, "runbookd_check_runs_total", check="p", status="ok") == 3
    assert metric(s, "runbookd_check_last_duration_seconds", check="p") == 0.25


class Flipping(Probe):
    def __init__(self, statuses: list[Status]) -> None:
        super().__init__()
        self.statuses = statuses

    async def run(self, ctx: CheckContext) -> CheckResult:
        self.started += 1
        return CheckResult(self.statuses.pop(0), {}, "503 from /health")


async def test_status_changes_are_logged_once_not_every_run(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    ok, crit = Status.OK, Status.CRITICAL
    await s.set_checks({"p": (Flipping([ok, ok, crit, crit, crit, ok]), cfg())})
    with structlog.testing.capture_logs() as logs:
        await clock.advance(5.5)
    changes = [(e["old"], e["new"]) for e in logs if e["event"] == "check status"]
    assert changes == [(None, "ok"), ("ok", "critical"), ("critical", "ok")]
    assert [e.get("reason") for e in logs if e["event"] == "check status"][1] == "503 from /health"


class Pooled(Probe):
    """Keeps something open between runs, like a connection pool."""

    def __init__(self, events: list[str], name: str) -> None:
        super().__init__()
        self.events, self.name = events, name

    async def start(self, ctx: CheckContext) -> None:
        self.events.append(f"start {self.name}")

    async def run(self, ctx: CheckContext) -> CheckResult:
        self.events.append(f"run {self.name}")
        return await super().run(ctx)

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


async def test_checks_start_before_their_first_run_and_stop_when_dropped(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    events: list[str] = []
    await s.set_checks({"a": (Pooled(events, "a"), cfg()), "b": (Pooled(events, "b"), cfg())})
    await clock.advance(0.5)
    assert events == ["start a", "start b", "run a", "run b"]
    events.clear()
    # reload: `a` unchanged (its new instance is never started), `b` dropped
    await s.set_checks({"a": (Pooled(events, "a2"), cfg())})
    assert events == ["stop b"]
    await clock.advance(1)
    assert events == ["stop b", "run a"]
    events.clear()
    await s.stop()
    assert events == ["stop a"]


async def test_a_check_dropped_by_reload_leaves_no_series_behind(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched
    await s.set_checks({"a": (Probe(), cfg()), "b": (Probe(), cfg())})
    await clock.advance(1.5)
    assert metric(s, "runbookd_check_value", check="b", value="v") == 2
    await s.set_checks({"a": (Probe(), cfg())})
    for text in (generate_latest(s.metrics.registry), await s.metrics.render()):
        assert b'check="b"' not in text
        assert b'check="a"' in text


async def test_a_slow_engine_never_gets_two_observations_of_one_check_at_once(
    clock: ManualClock,
) -> None:
    """The engine taking longer than the interval must not break ordering or readiness."""
    seen: list[float] = []
    in_sink = 0
    most_at_once = 0

    async def slow_sink(obs: Observation) -> None:
        nonlocal in_sink, most_at_once
        in_sink += 1
        most_at_once = max(most_at_once, in_sink)
        await clock.sleep(3.0 if not seen else 0.0)  # the first one is slow (an incident opens)
        seen.append(obs.ts)
        in_sink -= 1

    s = started(clock, slow_sink)
    try:
        await s.set_checks({"p": (Probe(), cfg(interval="1s"))})
        await clock.advance(6.5)
        assert most_at_once == 1
        assert seen == sorted(seen)
        assert s.first_round.is_set()
        assert metric(s, "runbookd_check_runs_skipped_total", check="p") >= 2
    finally:
        await s.stop()


async def test_stop_lets_an_observation_being_handled_finish(clock: ManualClock) -> None:
    stored: list[float] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def storing_sink(obs: Observation) -> None:
        entered.set()
        await release.wait()  # a store write in progress
        stored.append(obs.ts)

    s = started(clock, storing_sink, max_in_flight=2)
    await s.set_checks({"p": (Probe(), cfg())})
    await clock.advance(0.1)
    assert entered.is_set()
    stopping = asyncio.create_task(s.stop())
    await clock.advance(0)
    assert not stopping.done()
    release.set()
    await stopping
    assert len(stored) == 1  # finished, not cancelled halfway


async def test_checks_due_within_one_tick_start_together_at_its_end(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched  # the default tick, 10 ms
    config = cfg(jitter=1.0)
    t0 = clock.now()
    # Three names whose phases fall into the same 10 ms tick of the second.
    by_tick: dict[int, list[str]] = {}
    for i in range(2000):
        by_tick.setdefault(int(phase(f"c{i}", config) * 100), []).append(f"c{i}")
    tick, names = next((t, n[:3]) for t, n in sorted(by_tick.items()) if len(n) >= 3 and t > 0)
    starts: list[float] = []

    class Stamp(Probe):
        async def run(self, ctx: CheckContext) -> CheckResult:
            starts.append(ctx.clock.now())
            return await super().run(ctx)

    await s.set_checks({name: (Stamp(), config) for name in names})
    await clock.advance((tick + 1) / 100 - 0.0001)  # every phase has passed, not the tick
    assert starts == []
    await clock.advance(0.0002)
    assert len(starts) == 3
    assert all(abs(t - (t0 + (tick + 1) / 100)) < 0.0002 for t in starts)


async def test_a_late_wake_up_starts_every_run_due_by_then_in_due_order(
    clock: ManualClock, sched: tuple[Scheduler, list[Observation]]
) -> None:
    s, _ = sched  # the default tick, 10 ms
    await s.set_checks({})
    jobs = [Job(f"c{i}", Probe(), cfg()) for i in range(4)]
    base = 1_000.0
    # Two runs due in the tick ending at base + 0.01, two in the next one.
    for job, due in zip(
        jobs, (base + 0.008, base + 0.002, base + 0.017, base + 0.012), strict=True
    ):
        s._push(due, job)
    # The loop woke at base + 0.015, 5 ms late for the first tick: the run due at +0.012 has
    # passed too and starts now; the one due at +0.017 waits for its tick.
    due = s._pop_due(base + 0.015)
    assert [(job.name, round(at - base, 3)) for at, _, job in due] == [
        ("c1", 0.002),
        ("c0", 0.008),
        ("c3", 0.012),
    ]
    assert [job.name for _, _, job in s._pop_due(base + 0.016)] == []
    assert [job.name for _, _, job in s._pop_due(base + 0.02)] == ["c2"]
    assert s._pop_due(base + 1.0) == []
