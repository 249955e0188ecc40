"""Runs every check on its own interval: one timer heap, a fixed pool of workers.

Built for thousands of checks in one process: a single loop wakes once per tick that has due
checks (a heap of ticks, each with its slot of runs) and hands them to `max_in_flight`
long-lived workers (the bound on checks in flight), so there is no task per check and no
per-check timer. A check never overlaps itself: if its previous run is
still going when it is due again, the run is skipped and counted. Due times advance by whole
intervals from a stable per-check phase, so the schedule neither drifts nor bursts to catch up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import structlog

from checks.base import Check, CheckConfig, CheckContext, CheckResult
from daemon.core.clock import Clock
from daemon.core.models import Observation, Status
from daemon.runtime.metrics import CheckSeries, Metrics

log = structlog.get_logger("runbookd.scheduler")

Sink = Callable[[Observation], Awaitable[None]]
# In a check worker (daemon/runtime/check_worker.py): takes each run's result instead of the
# bookkeeping and the sink, which the daemon does when the result reaches it.
# (job, result, started, ended, due)
Relay = Callable[["Job", CheckResult, float, float, float], None]

# Due checks are dispatched on a grid of this many seconds: one wake-up starts every check due
# within it, instead of one wake-up per check. At 1,000 checks/s that is a fifth less CPU per
# check (fewer event-loop passes and system calls); a run starts at most one tick late.
TICK = 0.01

# At stop, how long an observation being handled (say, an incident being stored) may finish.
SINK_GRACE = 5.0


@dataclass(slots=True, eq=False)
class Job:
    name: str
    check: Check
    config: CheckConfig
    running: bool = False
    retired: bool = False
    runs: int = 0
    last_status: Status | None = None
    series: CheckSeries | None = None
    # The check-worker process that runs it (check_workers.py), or None: run here.
    worker: int | None = None


def phase(name: str, config: CheckConfig) -> float:
    """A stable offset within `jitter x interval`, so restarts keep checks spread the same way."""
    return (zlib.crc32(name.encode()) / 2**32) * config.jitter * config.interval


async def run_check(
    check: Check, config: CheckConfig, ctx: CheckContext, clock: Clock
) -> CheckResult:
    """One run, bounded by the check's timeout; a timeout or a bug is UNKNOWN, never bad data.

    A check type that ends every run before its timeout by itself (`bounded = True`, e.g. the
    `http` check's request timeout) gets no second timer: that timer was 8% of its CPU.
    """
    try:
        if check.bounded:
            return await check.run(ctx)
        async with clock.timeout(config.timeout):
            return await check.run(ctx)
    except TimeoutError:
        return _timed_out(config)
    except Exception as exc:
        return _broken(check, exc)


def _timed_out(config: CheckConfig) -> CheckResult:
    return CheckResult.unknown(f"check did not finish within {config.timeout:g}s")


def _broken(check: Check, exc: Exception) -> CheckResult:
    """A check broke its contract by raising: say so, carry on."""
    log.exception("check raised", check=check.type)
    return CheckResult.unknown(f"check raised {type(exc).__name__}: {exc}")


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


class Scheduler:
    def __init__(
        self,
        *,
        ctx: CheckContext,
        clock: Clock,
        sink: Sink,
        metrics: Metrics,
        max_in_flight: int = 256,
        tick: float = TICK,
        watch: Callable[[asyncio.Task[Any]], object] | None = None,
        remote: Remote | None = None,
        relay: Relay | None = None,
        on_skip: Callable[[Job], None] | None = None,
    ) -> None:
        """`watch` is given every task the scheduler starts (its loop and workers, also those
        a reload adds), for the daemon's supervisor. `remote` runs the checks it places in
        check-worker processes, whose results come back through `deliver`; `relay` and
        `on_skip` are a check worker's own scheduler's (see `Relay`)."""
        self.ctx = ctx
        self.clock = clock
        self.sink = sink
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.tick = tick
        self._watch = watch
        self.jobs: dict[str, Job] = {}
        self.first_round = asyncio.Event()
        # Scheduled runs by the wake-up that starts them (see `_push`), and those wake-ups.
        self._slots: dict[float, list[tuple[float, int, Job]]] = {}
        self._wakes: list[float] = []
        self._seq = itertools.count()
        # Runs handed to workers: straight to an idle worker's future when one waits, else
        # queued. An asyncio.Queue's layers cost more per run than the run's own bookkeeping.
        self._idle: deque[asyncio.Future[tuple[Job, float]]] = deque()
        self._backlog: deque[tuple[Job, float]] = deque()
        self._waker: asyncio.Future[None] | None = None  # the timer loop's, while it sleeps
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._workers = 0
        self._pending_first: set[str] = set()
        self._sinking: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.remote = remote
        self._relay = relay
        self._on_skip = on_skip

    async def set_checks(self, checks: dict[str, tuple[Check, CheckConfig]]) -> None:
        """Install checks; an unchanged check keeps its instance and schedule (reload).

        New checks are started before their first run; dropped ones are stopped.
        """
        now = self.clock.now()
        jobs: dict[str, Job] = {}
        fresh: list[Job] = []
        remote = self.remote
        for name, (check, config) in checks.items():
            old = self.jobs.get(name)
            if old is not None and old.config == config:
                jobs[name] = old
            else:
                jobs[name] = Job(name, check, config)
                if remote is not None:
                    jobs[name].worker = remote.place(name, check)
                fresh.append(jobs[name])
        retired = [job for name, job in self.jobs.items() if jobs.get(name) is not job]
        local = [job for job in fresh if job.worker is None]
        await asyncio.gather(*(self._start_check(job) for job in local))
        for job in retired:
            job.retired = True
            self._pending_first.discard(job.name)
            if job.series is not None and job.name not in jobs:
                job.series.forget()
        for job in fresh:
            self._pending_first.add(job.name)
        for job in local:
            self._push(now + phase(job.name, job.config), job)
        self.jobs = jobs
        if remote is not None:
            remote.assign(jobs.values())
        self._grow_pool()
        self._check_first_round()
        self._wake_up()
        await asyncio.gather(*(self._stop_check(job) for job in retired if job.worker is None))

    async def _start_check(self, job: Job) -> None:
        try:
            async with self.clock.timeout(job.config.timeout):
                await job.check.start(self.ctx)
        except Exception:  # a check that cannot start yet still runs: `run` reports why
            log.warning("check start failed", check=job.name, exc_info=True)

    async def _stop_check(self, job: Job) -> None:
        try:
            await job.check.stop()
        except Exception:  # closing must go on for the others
            log.warning("check stop failed", check=job.name, exc_info=True)

    def start(self) -> None:
        self._spawn(self._loop(), "scheduler")
        self._started = True
        self._grow_pool()
        if self.remote is not None:
            self.remote.start(self._spawn)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        if self._watch is not None:
            self._watch(task)

    def _grow_pool(self) -> None:
        """One worker per check, up to `max_in_flight`: a small config keeps no idle tasks."""
        if not self._started:
            return
        local = len(self.jobs) if self.remote is None else self.remote.local_count(self.jobs)
        while self._workers < min(self.max_in_flight, local):
            self._spawn(self._worker(), f"check-worker-{self._workers}")
            self._workers += 1

    async def stop(self) -> None:
        """Cancel runs in flight (checks only read), but let an observation the engine is
        handling finish (it may be opening an incident); then close every check's resources."""
        self._stopping = True
        if self.remote is not None:  # no more results: they stop first, within their grace
            await self.remote.stop()
        for task in self._tasks:
            if task not in self._sinking:
                task.cancel()
        if self._sinking:
            await asyncio.wait(set(self._sinking), timeout=SINK_GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._started, self._workers = False, 0
        await asyncio.gather(
            *(self._stop_check(job) for job in self.jobs.values() if job.worker is None)
        )

    def run_now(self, name: str) -> bool:
        """Start a run of `name` at once, unless one is going. False if unknown or busy."""
        job = self.jobs.get(name)
        if job is not None and job.worker is not None and self.remote is not None:
            return self.remote.run_now(job)  # the worker knows whether it is busy: not here
        if job is None or job.running:
            return False
        job.running = True
        self._hand_over(job, self.clock.now())
        return True

    # -- the timer loop ------------------------------------------------------------------------

    def _push(self, due: float, job: Job) -> None:
        """Into the slot of the wake-up that will start it: a heap of wake-ups (one per tick
        that has checks), not of runs, so a run costs a list append instead of a heap push and
        pop among thousands of runs."""
        # The first tick at or after `due`: checks due within one tick start together.
        tick = self.tick
        at = max(due, math.ceil(due / tick) * tick) if tick > 0 else due
        slot = self._slots.get(at)
        if slot is None:
            slot = self._slots[at] = []
            heapq.heappush(self._wakes, at)
        slot.append((due, next(self._seq), job))

    def _pop_due(self, now: float) -> list[tuple[float, int, Job]]:
        """Every run due by `now`, in due order (ties: in the order they were scheduled)."""
        due: list[tuple[float, int, Job]] = []
        wakes, slots = self._wakes, self._slots
        while wakes and wakes[0] <= now:
            due += slots.pop(heapq.heappop(wakes))
        if wakes and self.tick > 0:
            # The loop woke late: the next tick's slot may hold runs already due as well.
            at = wakes[0]
            slot = slots[at]
            if any(entry[0] <= now for entry in slot):
                due += [entry for entry in slot if entry[0] <= now]
                slot[:] = [entry for entry in slot if entry[0] > now]
                if not slot:
                    heapq.heappop(wakes)
                    del slots[at]
        if len(due) > 1:
            due.sort()  # by due time, then sequence: unique, so jobs are never compared
        return due

    async def _loop(self) -> None:
        while True:
            now = self.clock.now()
            for due, _, job in self._pop_due(now):
                if job.retired:
                    continue
                self._dispatch(job, due)
                interval = job.config.interval
                # Whole intervals past `now`: missed ticks are skipped, never run in a burst.
                self._push(due + interval * (math.floor((now - due) / interval) + 1), job)
            delay = self._wakes[0] - now if self._wakes else None
            await self._sleep(delay)

    def _series(self, job: Job) -> CheckSeries:
        if job.series is None:
            job.series = self.metrics.check_series(job.name, job.check.type)
        return job.series

    def _dispatch(self, job: Job, due: float) -> None:
        if job.running:
            if self._on_skip is not None:
                self._on_skip(job)
            else:
                self._series(job).skipped += 1
            return
        job.running = True
        self._hand_over(job, due)

    def _hand_over(self, job: Job, due: float) -> None:
        """To the worker idle longest (FIFO, as a queue would), else to the backlog."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # a worker cancelled while idle left its future behind
                waiter.set_result((job, due))
                return
        self._backlog.append((job, due))

    async def _sleep(self, delay: float | None) -> None:
        """Until the next due time, or until the set of checks changes (`_wake_up`): a future
        and a timer, cheaper per tick than a timeout cancelling the task."""
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waker = waker
        timer = None if delay is None else self.clock.call_later(delay, partial(_wake, waker))
        try:
            await waker
        finally:
            self._waker = None
            if timer is not None:
                timer.cancel()

    def _wake_up(self) -> None:
        if self._waker is not None:
            _wake(self._waker)

    # -- the workers ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._backlog:
                job, due = self._backlog.popleft()
            else:
                waiter: asyncio.Future[tuple[Job, float]] = loop.create_future()
                self._idle.append(waiter)
                try:
                    job, due = await waiter
                except asyncio.CancelledError:
                    self._forget_idle(waiter)
                    raise
            try:
                await self._run_job(job, due, task)
            finally:
                # Only now may the check run again: its observations reach the engine one
                # at a time and in order, however slow the engine was with the last one.
                job.running = False

    def _forget_idle(self, waiter: asyncio.Future[tuple[Job, float]]) -> None:
        """A worker cancelled while idle: a run already handed to it goes to another."""
        if waiter in self._idle:
            self._idle.remove(waiter)
        elif waiter.done() and not waiter.cancelled():
            self._hand_over(*waiter.result())

    async def _run_job(self, job: Job, due: float, task: asyncio.Task[Any]) -> None:
        started = self.clock.now()
        if self._relay is None:
            self.metrics.lateness.observe(max(0.0, started - due))
        check = job.check
        if check.bounded:  # run_check's path for these, one coroutine fewer per run
            try:
                result = await check.run(self.ctx)
            except TimeoutError:
                result = _timed_out(job.config)
            except Exception as exc:
                result = _broken(check, exc)
        else:
            result = await run_check(check, job.config, self.ctx, self.clock)
        ended = self.clock.now()
        if job.retired:
            return
        if self._relay is not None:
            self._relay(job, result, started, ended, due)
            return
        obs = Observation(
            job.name, result.status, result.values, ended, ended - started, result.reason, due
        )
        self._book(job, obs)
        self._sinking.add(task)
        try:
            await self.sink(obs)
        except Exception:  # the engine must not lose a worker to one bad observation
            log.exception("observation handling failed", check=job.name)
        finally:
            self._sinking.discard(task)
        if job.runs == 1:
            self._ran_first(job)

    async def deliver(
        self,
        name: str,
        status: Status,
        values: dict[str, float],
        ended: float,
        duration: float,
        reason: str,
        due: float,
    ) -> None:
        """A run a check worker made: the tail of `_run_job`, here, so metrics, status logs,
        readiness and the sink see it as they see a run made here. Called by the one reader
        of that worker (check_workers.py), one result at a time: a check's observations
        still reach the sink one at a time and in order."""
        job = self.jobs.get(name)
        if job is None or job.worker is None or job.retired:
            return  # removed or moved here by a reload while the result travelled
        self.metrics.lateness.observe(max(0.0, ended - duration - due))
        obs = Observation(name, status, values, ended, duration, reason, due)
        self._book(job, obs)
        task = asyncio.current_task()
        assert task is not None
        self._sinking.add(task)
        try:
            await self.sink(obs)
        except Exception:  # as in _run_job: one bad observation loses no worker
            log.exception("observation handling failed", check=name)
        finally:
            self._sinking.discard(task)
        if job.runs == 1:
            self._ran_first(job)

    def skipped(self, name: str) -> None:
        """A run a check worker skipped (its check's previous run was still going)."""
        job = self.jobs.get(name)
        if job is not None and not job.retired:
            self._series(job).skipped += 1

    def _book(self, job: Job, obs: Observation) -> None:
        job.runs += 1
        (job.series or self._series(job)).observe(obs)
        if obs.status is not job.last_status:
            self._log_change(job, obs)

    def _ran_first(self, job: Job) -> None:
        self._pending_first.discard(job.name)
        self._check_first_round()

    @staticmethod
    def _log_change(job: Job, obs: Observation) -> None:
        """A check's status is logged when it changes, not on every run."""
        old = job.last_status.name.lower() if job.last_status is not None else None
        job.last_status = obs.status
        event = "check status"
        if obs.status is Status.OK:
            log.info(event, check=job.name, old=old, new="ok")
        else:
            log.warning(
                event, check=job.name, old=old, new=obs.status.name.lower(), reason=obs.reason
            )

    def _check_first_round(self) -> None:
        if not self._pending_first:
            self.first_round.set()


class Remote(Protocol):
    """Where the scheduler runs checks in other processes (check_workers.CheckWorkers)."""

    def place(self, name: str, check: Check) -> int | None:
        """The worker that runs `check`, or None: it runs in this process."""
        ...

    def local_count(self, jobs: dict[str, Job]) -> int: ...

    def assign(self, jobs: Iterable[Job]) -> None:
        """The whole set of checks now (a reload's too): each worker gets its share."""
        ...

    def start(self, spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None: ...

    async def stop(self) -> None: ...

    def run_now(self, job: Job) -> bool: ...
