"""A small world for pipeline tests: engine + pipeline + in-memory store under a ManualClock,
with fake remediations that implement the Remediation protocol. Real remediations are tested
against real (or faithful local) servers in their own modules. `build_world` puts the same
world on any store, the real SQLite one included."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock, settle
from daemon.core.models import Incident, Observation, RemediationResult, Status, TimelineEntry
from daemon.engine.engine import Engine
from daemon.engine.timeline import Recorder
from daemon.pipeline.pipeline import Pipeline
from daemon.pipeline.plan import Plan
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Store
from daemon.store.sqlite.repository import SqliteStore
from remediations.base import Hooks, RemediationConfig, RemediationContext
from tests.memory_store import MemoryData, MemoryStore


class FakeConfig(RemediationConfig):
    type: Literal["fake"] = "fake"


class FakeAction(Hooks):
    type: ClassVar[str] = "fake"
    Config = FakeConfig
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = False

    def __init__(
        self,
        name: str,
        outcomes: list[bool | str] | None = None,
        *,
        hang: bool = False,
        destructive: bool = False,
        resolve_after: float = 0.0,
    ) -> None:
        self.name = name
        self.calls: list[str] = []
        self.resolved: list[str] = []
        self.healthy_calls = 0
        # Per call: True ok, False failed, "retry" failed but recoverable.
        self.outcomes = outcomes or []
        self.hang = hang
        self.destructive = destructive
        self.resolve_after = resolve_after
        self.release = asyncio.Event()

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.calls.append(incident.id)
        if self.hang:
            await self.release.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else True
        if outcome == "retry":
            return RemediationResult(False, "HTTP 503", recoverable=True)
        ok = bool(outcome)
        return RemediationResult(ok, "done" if ok else "it broke", data={"answer": "x"})

    async def resolve(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        if self.resolve_after:
            await ctx.clock.sleep(self.resolve_after)
        self.resolved.append(incident.id)
        return RemediationResult(True, "resolved")

    async def healthy(self, ctx: RemediationContext) -> None:
        self.healthy_calls += 1


class FakePager(FakeAction):
    notifier: bool = True


class Boom(FakeAction):
    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        raise RuntimeError("bug in a remediation")


S = TypeVar("S", bound=Store)


class Commits:
    """Counts the transactions a SqliteStore commits inside `async with`: the COMMIT statements
    SQLite itself runs on the store's connection, checked against the store's own count."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.seen: list[str] = []
        self.before = self.after = store.commits

    def _trace(self, sql: str) -> None:  # called in the connection's thread
        if sql == "COMMIT":
            self.seen.append(sql)

    def _switch(self, trace: Callable[[str], None] | None) -> Callable[[sqlite3.Connection], int]:
        def on_thread(conn: sqlite3.Connection) -> int:
            # The store counts on this thread too: read here, the count matches the trace.
            conn.set_trace_callback(trace)
            return self.store.commits

        return on_thread

    async def __aenter__(self) -> Commits:
        self.before = await self.store._on_thread(self._switch(self._trace))
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Behind every trip sent to the thread so far: none of them is missed.
        self.after = await self.store._on_thread(self._switch(None))

    @property
    def count(self) -> int:
        assert self.after - self.before == len(self.seen)
        return len(self.seen)


@dataclass
class World(Generic[S]):
    clock: ManualClock
    engine: Engine
    pipeline: Pipeline
    store: S
    metrics: Metrics
    actions: dict[str, FakeAction]
    opened: list[Incident] = field(default_factory=list)

    async def see(self, value: float | None, *, dt: float = 1.0, check: str = "app") -> None:
        """`dt` seconds pass, then the check reports `value` (None: unknown)."""
        await self.clock.advance(dt)
        if value is None:
            obs = Observation(check, Status.UNKNOWN, {}, self.clock.now(), reason="down")
        else:
            obs = Observation(check, Status.OK, {"error_ratio": value}, self.clock.now())
        await self.engine.observe(obs)
        await self.clock.advance(0)

    async def settle(self) -> None:
        """Let the plans started so far finish (on a real store they take real, short time)."""
        assert await self.pipeline.idle(10.0), "a plan did not finish"

    async def settle_until(self, done: Callable[[], object], within: float = 20.0) -> None:
        """Let the event loop and the store's thread run until `done()` holds (bounded, in
        real time: no clock moves), then until the loop is quiet."""
        for _ in range(int(within / 0.005)):
            await self.clock.quiet()
            if done():
                await self.clock.quiet()
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the world never reached the expected state")

    async def advance_until(self, done: Callable[[], object], *, step: float, limit: float) -> None:
        """Move the clock `step` seconds at a time (at most `limit`), letting the store's
        thread catch up after each move, until `done()` holds: on a real store a loop that
        waits for I/O misses a timer that one long `advance` jumps over."""
        moved = 0.0
        while not done():
            assert moved < limit, f"not reached within {limit:g}s of clock time"
            await self.clock.advance(step)
            moved += step
            for _ in range(20):
                await asyncio.sleep(0.005)
                await settle()
        await settle()

    def engine_rules(self) -> dict[str, RuleConfig]:
        """Every rule's config, as the daemon hands them to `Pipeline.recover`."""
        rules = {name: e.config for name, e in self.engine.evaluators.items()}
        return rules | {name: r.config for name, r in self.engine.alert_rules.items()}

    def kinds(self, incident: Incident | None = None) -> list[str]:
        incident = incident or self.opened[-1]
        assert isinstance(self.store, MemoryStore), "on another store: await timeline()"
        return [e.kind for e in self.store.data.incidents[incident.id].timeline]

    async def stored(self, incident_id: str) -> Incident:
        """The incident as the store has it, through the Store API."""
        got = await self.store.get_incident(incident_id)
        assert got is not None, f"no incident {incident_id!r} in the store"
        return got

    async def timeline(self, incident: Incident | None = None) -> list[TimelineEntry]:
        """The incident's timeline as the store has it (the last one opened by default)."""
        got = await self.store.get_incident((incident or self.opened[-1]).id)
        assert got is not None
        return got.timeline

    def count(self, remediation: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "runbookd_remediations_total",
            {"remediation": remediation, "type": "fake", "outcome": outcome},
        )
        return value or 0.0


def make_world(
    rules: dict[str, dict[str, Any]],
    actions: dict[str, FakeAction] | None = None,
    *,
    cooldowns: dict[str, str] | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
    data: MemoryData | None = None,
    clock: ManualClock | None = None,
    **plan: Any,
) -> World[MemoryStore]:
    return build_world(
        MemoryStore(data),
        rules,
        actions,
        cooldowns=cooldowns,
        configs=configs,
        clock=clock,
        **plan,
    )


def build_world(
    store: S,
    rules: dict[str, dict[str, Any]],
    actions: dict[str, FakeAction] | None = None,
    *,
    cooldowns: dict[str, str] | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
    clock: ManualClock | None = None,
    **plan: Any,
) -> World[S]:
    """The world on `store` (opened by the caller). A store with a thread of its own
    (SQLite) is waited for before the clock moves, so the thread never races the clock."""
    clock = clock or ManualClock()
    if isinstance(store, SqliteStore):
        store.track_idle()
        clock.wait_also_for(store.idle)
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(store, clock)
    actions = actions if actions is not None else {"rollback": FakeAction("rollback")}
    models = {
        name: FakeConfig.model_validate(
            {"cooldown": (cooldowns or {}).get(name, "0s")} | (configs or {}).get(name, {})
        )
        for name in actions
    }
    pipeline = Pipeline(
        Plan(dict(actions), models, **plan),
        ctx=RemediationContext(None, clock),  # type: ignore[arg-type]  # fakes need no session
        store=store,
        recorder=recorder,
        metrics=metrics,
        clock=clock,
    )
    engine = Engine(
        {n: RuleConfig.model_validate(r) for n, r in rules.items()},
        staleness={"app": 30.0},
        store=store,
        recorder=recorder,
        actions=pipeline,
        metrics=metrics,
        clock=clock,
    )
    world = World(clock, engine, pipeline, store, metrics, actions)
    recorder.listeners.append(lambda i, e: world.opened.append(i) if e.kind == "opened" else None)
    return world


RULE = {"when": "app.error_ratio > 5%", "for": "3s", "do": ["rollback"]}
