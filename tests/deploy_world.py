"""A world for deploy watch tests: tests/world.py's engine, pipeline and memory store under a
ManualClock, with the deploy watcher wired as the daemon wires it, fake remediations (a
rollback, a pager, a channel that takes announcements) and checks reporting on a schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.core.models import Incident, Observation, RemediationResult, Status
from daemon.deploys.announce import Announcements
from daemon.deploys.config import DeploysConfig
from daemon.deploys.models import DeployEvent
from daemon.deploys.timeline import DeployRecorder
from daemon.deploys.watcher import DeployWatcher
from daemon.store.protocol import Deploy
from remediations.base import Announcement, RemediationContext
from tests.memory_store import MemoryData, MemoryStore
from tests.world import FakeAction, FakePager, World, make_world

INTERVAL = 10.0  # every check reports this often
NORMAL: dict[str, dict[str, float] | None] = {
    "traffic": {"error_ratio": 0.004, "p95_seconds": 0.12},
    "health": {"up": 1.0},
    "db": {"up": 1.0},
}
DEPLOYS: dict[str, Any] = {
    "environment": "production",
    "watch_for": {"standard": "5m", "hotfix": "15m"},
    "rollback_if": {
        "error_ratio": {"value": "traffic.error_ratio", "above_baseline_by": "5%"},
        "p95": {"value": "traffic.p95_seconds", "factor": 1.5},
        "critical": ["health"],
        "database": "db",
    },
    "baseline_window": "10m",
    "for": "30s",
    "min_samples": 3,
    "clear_for": "20s",
    "verify_within": "5m",
    "extend_up_to": "5m",
    "rollback": "rollback",
    "announce": ["channel"],
    "page": ["page"],
}


class TimedAction(FakeAction):
    """A fake rollback that notes when it was called."""

    def __init__(self, name: str, clock: Callable[[], float], **kw: Any) -> None:
        super().__init__(name, **kw)
        self.now = clock
        self.called_at: list[float] = []

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.called_at.append(self.now())
        return await super().execute(ctx, incident)


class Channel(FakePager):
    """A notifier that also takes announcements (as `slack` does)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.announced: list[Announcement] = []

    async def announce(self, ctx: RemediationContext, message: Announcement) -> RemediationResult:
        self.announced.append(message)
        return RemediationResult(True, "posted")


@dataclass
class DeployWorld:
    world: World[MemoryStore]
    watcher: DeployWatcher
    rollback: TimedAction
    page: FakePager
    channel: Channel
    # What each check reports from now on (None: UNKNOWN).
    reports: dict[str, dict[str, float] | None] = field(default_factory=lambda: dict(NORMAL))
    # Every observation reported, in order (for timing).
    observed: list[Observation] = field(default_factory=list)
    dry_run: bool = False

    @property
    def clock(self) -> Any:
        return self.world.clock

    @property
    def store(self) -> MemoryStore:
        return self.world.store

    def texts(self) -> list[str]:
        return [m.text for m in self.channel.announced]

    async def run(self, seconds: float) -> None:
        """Time passes a second at a step: the ticker runs every second, the checks report
        every INTERVAL seconds (on multiples of it)."""
        for _ in range(round(seconds)):
            await self.clock.advance(1.0)
            now = self.clock.now()
            due = now % INTERVAL == 0
            if due:
                for check, values in list(self.reports.items()):
                    await self.report(check, values)
            if due or self.watcher.watch is not None or self.watcher.owner is not None:
                await self.world.engine.tick(now)
                await self.watcher.tick(now)
                await self.settle()

    async def report(self, check: str, values: dict[str, float] | None) -> None:
        now = self.clock.now()
        if values is None:
            obs = Observation(check, Status.UNKNOWN, {}, now, reason="scrape failed", due=now)
        else:
            obs = Observation(check, Status.OK, dict(values), now, due=now)
        self.observed.append(obs)
        await self.world.engine.observe(obs)
        await self.watcher.observe(obs)

    async def settle(self) -> None:
        await self.clock.advance(0)
        await self.watcher.settled()
        await self.clock.advance(0)

    async def deploy(self, version: str, **kw: Any) -> Deploy:
        event = DeployEvent(version=version, environment=kw.pop("environment", "production"), **kw)
        deploy, _ = await self.watcher.deploy(event)
        await self.settle()
        return deploy

    async def deploy_record(self, deploy_id: str) -> Deploy:
        found = await self.store.get_deploy(deploy_id)
        assert found is not None
        return found

    def first_failing(self, check: str, broken: Callable[[dict[str, float]], bool]) -> float:
        found = (o for o in self.observed if o.check == check and o.known and broken(o.values))
        return next(o.sampled for o in found)


def make_deploy_world(
    overrides: dict[str, Any] | None = None,
    *,
    data: MemoryData | None = None,
    rollback_outcomes: list[bool | str] | None = None,
    dry_run: bool = False,
    clock: Any = None,
) -> DeployWorld:
    config = DeploysConfig.model_validate(DEPLOYS | (overrides or {}))
    holder: dict[str, Any] = {}
    rollback = TimedAction("rollback", lambda: holder["clock"].now(), outcomes=rollback_outcomes)
    page, channel = FakePager("page"), Channel("channel")
    actions: dict[str, FakeAction] = {"rollback": rollback, "page": page, "channel": channel}
    world = make_world({}, actions, data=data, clock=clock, dry_run=dry_run)
    holder["clock"] = world.clock
    plan = world.pipeline.plan
    announcements = Announcements(
        DeployRecorder(world.store, world.clock),
        clock=world.clock,
        lookup=lambda name: (
            (plan.remediations[name], plan.configs[name]) if name in plan.remediations else None
        ),
        ctx_for=lambda name: world.pipeline.actor.ctx_for(name),
        dry_run=lambda: plan.dry_run,
    )
    watcher = DeployWatcher(
        config,
        store=world.store,
        clock=world.clock,
        incidents=world.engine.open_incidents,
        healthy=world.pipeline.healthy,
        announcements=announcements,
        metrics=world.metrics.deploys,
        staleness={check: 3 * INTERVAL for check in NORMAL},
    )
    world.pipeline.recorder.listeners.append(watcher.on_entry)
    return DeployWorld(world, watcher, rollback, page, channel, dry_run=dry_run)
