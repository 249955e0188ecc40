"""The world the model-based test drives (tests/unit/test_model_based.py), and its regressions
(tests/unit/test_model_regressions.py): the real engine, pipeline and SQLite store on a ManualClock,
fakes that record their calls, and a daemon that can be restarted gracefully or killed.

Determinism: the SQLite store's trips to its connection's thread are made synchronous for the
event loop (`InlineSqliteStore`): the same SQL on the same connection, but a trip completes
before the loop runs anything else, so an example interleaves the same way every time it runs.
Between steps the loop is run until it is quiet (`quiesce`): every task waits for the clock,
an event or an operator. Time moves one clock timer at a time, with the loop quiet in between
(`advance`): I/O takes no time on the model's clock, as it takes milliseconds in production.

A kill -9 at an await point (`InlineSqliteStore.freeze_at`): from that trip on the store never
answers again, so nothing more is written (with `freeze_after`, that trip is committed but its
caller never hears of it); then every task is cancelled and the connection abandoned (closing
it rolls back an open transaction, as the death of the process would).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock
from daemon.core.models import Incident, Observation, RemediationResult, Status
from daemon.engine.engine import Engine
from daemon.engine.timeline import Recorder
from daemon.pipeline.pipeline import Pipeline
from daemon.pipeline.plan import Plan
from daemon.pipeline.safety import Budget
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import Metrics
from daemon.store.sqlite.repository import SqliteStore
from remediations.base import Hooks, RemediationConfig, RemediationContext
from tests.world import FakeConfig

T = TypeVar("T")

# -- the runbook under test ---------------------------------------------------------------------

CHECKS = ("app", "api")
STALE_AFTER = 30.0
BAD, GOOD = 0.2, 0.0
THRESHOLD = 0.05

RULES: dict[str, dict[str, Any]] = {
    "errors": {
        "when": "app.error_ratio > 5%",
        "for": "2s",
        "min_samples": 2,
        "do": ["rollback", "page"],
        "verify_within": "40s",
        "escalate": ["page"],
        "on_blind": ["page"],
        "blind_after": "60s",
    },
    "api_errors": {
        "when": "api.error_ratio > 5%",
        "do": ["flush", "page"],
        "verify_within": "30s",
        "escalate": ["page"],
    },
    "alerted": {
        "when": {"alert": "HighErrorRate"},
        "do": ["restart", "page"],
        "verify_within": "30s",
        "escalate": ["page"],
    },
}
RULE_CHECK = {"errors": "app", "api_errors": "api"}

REMEDIATIONS: dict[str, dict[str, Any]] = {
    # rollback and restart act on one target: one plan at a time there.
    "rollback": {"cooldown": "60s", "timeout": "20s", "target": "web"},
    "restart": {
        "cooldown": "0s",
        "timeout": "20s",
        "target": "web",
        "max_runs": {"count": 2, "window": "10m"},
    },
    "flush": {"cooldown": "30s", "timeout": "20s", "approval_timeout": "2m"},
    "page": {"cooldown": "0s", "timeout": "10s"},
}
BUDGET = Budget(max_actions=3, window=600.0)
# The status page, and the pager's channel, promise an update of an open incident this often.
UPDATE_EVERY = 120.0
BREAKER_AFTER = 2
ALERT_NAME = "HighErrorRate"


def rule_configs() -> dict[str, RuleConfig]:
    return {name: RuleConfig.model_validate(rule) for name, rule in RULES.items()}


def remediation_configs() -> dict[str, RemediationConfig]:
    return {name: FakeConfig.model_validate(cfg) for name, cfg in REMEDIATIONS.items()}


# -- fakes --------------------------------------------------------------------------------------


class Fake(Hooks):
    """A remediation whose behaviour the test sets: "ok", "fail", "hang" (until released or
    until its deadline), "crash" (raises); a pager: "up", "down" (recoverable), "hang"."""

    type: ClassVar[str] = "fake"
    Config = FakeConfig
    idempotent: bool = False
    # A notifier posts an incident's updates too (like `slack`), behaving as its mode says.
    update_every: ClassVar[float] = UPDATE_EVERY

    def __init__(self, name: str, *, destructive: bool = False, notifier: bool = False) -> None:
        self.name = name
        self.destructive = destructive
        self.notifier = notifier
        self.mode = "up" if notifier else "ok"
        self.calls: list[tuple[str, float]] = []  # (incident id, when)
        self.resolved: list[str] = []
        self.updates: list[tuple[str, float]] = []  # (incident id, when)
        self.hanging: list[asyncio.Future[bool]] = []
        self.executing = 0  # calls of execute under way (the ledger has them as running)

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.calls.append((incident.id, ctx.clock.now()))
        self.executing += 1
        try:
            return await self._behave()
        finally:
            self.executing -= 1

    async def update(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.updates.append((incident.id, ctx.clock.now()))
        return await self._behave()

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        if not self.notifier:
            return None
        result = await self._behave()
        if result.ok:
            self.resolved.append(incident.id)
        return result

    async def _behave(self) -> RemediationResult:
        mode = self.mode
        if mode == "hang":
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self.hanging.append(future)
            try:
                ok = await future
            finally:
                self.hanging.remove(future)
            if not ok and self.notifier:  # a pager that timed out or answered 5xx
                return RemediationResult(False, "HTTP 503", recoverable=True)
            return RemediationResult(ok, "released" if ok else "released, failed")
        if mode == "crash":
            raise RuntimeError(f"bug in {self.name}")
        if mode == "down":
            return RemediationResult(False, "HTTP 503", recoverable=True)
        return RemediationResult(mode in ("ok", "up"), "done" if mode in ("ok", "up") else "broke")

    def release(self, ok: bool) -> int:
        released = 0
        for future in list(self.hanging):
            if not future.done():
                future.set_result(ok)
                released += 1
        return released


def make_fakes() -> dict[str, Fake]:
    return {
        "rollback": Fake("rollback"),
        "restart": Fake("restart"),
        "flush": Fake("flush", destructive=True),
        "page": Fake("page", notifier=True),
    }


# -- the store, made deterministic, and killable --------------------------------------------


async def forever() -> Any:
    """What a dead process's caller waits for."""
    await asyncio.get_running_loop().create_future()


class InlineSqliteStore(SqliteStore):
    """SqliteStore whose trips run to completion before the event loop goes on (see above)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.trips = 0
        self.freeze_at: int | None = None
        self.freeze_after = False
        self.frozen = False

    async def _on_thread(self, fn: Callable[[Any], T]) -> T:
        if self.frozen:
            return await forever()  # type: ignore[no-any-return]
        trip = self.trips
        self.trips += 1
        if self.freeze_at is not None and trip >= self.freeze_at:
            self.frozen = True
            if self.freeze_after:
                self._run(fn)  # committed; the caller never hears of it
            return await forever()  # type: ignore[no-any-return]
        await asyncio.sleep(0)  # an await point, as the hop to the thread is
        if self.frozen:
            return await forever()  # type: ignore[no-any-return]
        return self._run(fn)

    def _run(self, fn: Callable[[Any], T]) -> T:
        db = self._conn
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work(conn: Any) -> None:
            try:
                done.set_result(fn(conn))
            except BaseException as exc:
                done.set_exception(exc)

        db.post(work)  # the executor's queue to the connection's thread
        return done.result()


# -- the event loop and the clock ------------------------------------------------------------


_quiescing: list[object] = []  # nested quiesce calls (a step spawned inside a step)


async def quiesce(limit: int = 100_000) -> None:
    """Run the loop until every other task waits on something only a test step provides.

    Nested calls (a crash's trigger quiescing inside the crash step): the latest drives, the
    others only yield, and the driver counts their one wake-up each as quiet."""
    loop = asyncio.get_running_loop()
    token = object()
    _quiescing.append(token)
    try:
        quiet = 0
        for _ in range(limit):
            await asyncio.sleep(0)
            if _quiescing[-1] is not token:
                continue
            scheduled = loop._scheduled  # type: ignore[attr-defined]
            due = bool(scheduled) and scheduled[0].when() <= loop.time() + 0.01
            if len(loop._ready) > len(_quiescing) - 1 or due:  # type: ignore[attr-defined]
                quiet = 0
            else:
                quiet += 1
                if quiet >= 3:
                    return
        raise AssertionError("the event loop never went quiet: a task spins")
    finally:
        _quiescing.remove(token)


def next_timer(clock: ManualClock) -> float | None:
    timers = clock._timers
    while timers and timers[0][1] in clock._cancelled:
        clock._cancelled.discard(heapq.heappop(timers)[1])
    return timers[0][0] if timers else None


async def advance(clock: ManualClock, seconds: float, *, stop: Callable[[], bool]) -> None:
    """Move the clock, firing one timer at a time with the loop quiet in between."""
    target = clock.now() + seconds
    while True:
        await quiesce()
        if stop():
            return
        due = next_timer(clock)
        if due is None or due > target:
            break
        _, _, callback = heapq.heappop(clock._timers)
        clock._now = max(clock._now, due)
        callback()
    clock._now = max(clock._now, target)
    await quiesce()


# -- one daemon process ---------------------------------------------------------------------


@dataclass
class Daemon:
    """What `runbookd run` holds, built as daemon/runtime/daemon.py's `Daemon.start` builds it."""

    store: InlineSqliteStore
    engine: Engine
    pipeline: Pipeline
    recorder: Recorder
    outbox_task: asyncio.Task[None]
    clock: ManualClock

    @property
    def dead(self) -> bool:
        return self.store.frozen


async def start_daemon(path: Path, clock: ManualClock, fakes: dict[str, Fake]) -> Daemon:
    store = InlineSqliteStore(path)
    await store.open()
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(store, clock)
    pipeline = Pipeline(
        Plan(dict(fakes), remediation_configs(), budget=BUDGET, breaker_after=BREAKER_AFTER),
        ctx=RemediationContext(None, clock),  # type: ignore[arg-type]  # fakes need no session
        store=store,
        recorder=recorder,
        metrics=metrics,
        clock=clock,
    )
    rules = rule_configs()
    engine = Engine(
        rules,
        staleness=dict.fromkeys(CHECKS, STALE_AFTER),
        store=store,
        recorder=recorder,
        actions=pipeline,
        metrics=metrics,
        clock=clock,
    )
    # The order of App.start: restore incidents, recover interrupted actions, the outbox.
    await engine.restore()
    await pipeline.recover(engine.incidents.values(), dict(rules))
    outbox_task = pipeline.start_outbox()
    # The status page shows every incident (daemon/runtime/daemon.py starts it so, too).
    pipeline.start_updates(lambda: engine.incidents.values(), lambda incident: UPDATE_EVERY)
    return Daemon(store, engine, pipeline, recorder, outbox_task, clock)


async def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM: drain (no grace left: what still waits is cancelled), close the store."""
    await daemon.pipeline.drain(0)
    await quiesce()
    await daemon.store.close()


async def kill_daemon(daemon: Daemon) -> None:
    """kill -9: the store answers no more, every task dies where it waits, the connection is
    dropped without a commit."""
    store = daemon.store
    store.frozen = True
    me = asyncio.current_task()
    for _ in range(100):
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=0)
        await quiesce()
    else:
        raise AssertionError("tasks of the killed daemon kept running")
    db, store._db = store._db, None
    if db is not None:
        await db.close()


def observation(check: str, value: float | None, now: float) -> Observation:
    if value is None:
        return Observation(check, Status.UNKNOWN, {}, now, reason="scrape failed")
    return Observation(check, Status.OK, {"error_ratio": value}, now)


async def spawn_and_quiesce(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start `coro` as its own task and run the loop until quiet (it may still wait)."""
    task = asyncio.create_task(coro)
    await quiesce()
    return task
