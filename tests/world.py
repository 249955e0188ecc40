"""A small world for pipeline tests: engine + pipeline + in-memory store under a ManualClock,
with fake remediations that implement the Remediation protocol. Real remediations are tested
against real (or faithful local) servers in their own modules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from prometheus_client import CollectorRegistry

from daemon.clock import ManualClock
from daemon.engine import Engine
from daemon.metrics import Metrics
from daemon.models import Incident, Observation, RemediationResult, Status
from daemon.pipeline import Pipeline, Plan
from daemon.rule_config import RuleConfig
from daemon.timeline import Recorder
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


@dataclass
class World:
    clock: ManualClock
    engine: Engine
    pipeline: Pipeline
    store: MemoryStore
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

    def kinds(self, incident: Incident | None = None) -> list[str]:
        incident = incident or self.opened[-1]
        return [e.kind for e in self.store.data.incidents[incident.id].timeline]

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
) -> World:
    clock = clock or ManualClock()
    store = MemoryStore(data)
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
