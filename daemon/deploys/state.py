"""What the deploy watcher's parts share: its state, the records it makes, the last known
good version's place in the store, and the engine's incidents as the watcher sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from daemon.core.clock import Clock
from daemon.core.models import Incident
from daemon.deploys.announce import Announcements
from daemon.deploys.config import DeploysConfig
from daemon.deploys.history import History
from daemon.deploys.metrics import DeployMetrics
from daemon.deploys.models import DeployEvent, DeployStatus, DeployStep, deploy_id
from daemon.deploys.timeline import DeployRecorder
from daemon.deploys.watch import Watch
from daemon.rules.config import RuleConfig
from daemon.store.protocol import Deploy, DeployEntry, Store

LAST_GOOD = "deploys:last_good"  # the store's namespace: per environment, the last known good


class Incidents(Protocol):
    """The engine's open incidents (daemon/engine/incidents.py): one per key."""

    by_rule: dict[str, Incident]

    async def open(
        self,
        rule: str,
        config: RuleConfig,
        check: str,
        summary: str,
        message: str,
        trigger: dict[str, Any],
        ts: float,
    ) -> None: ...

    async def resolve(
        self, rule: str, ts: float, message: str, data: dict[str, Any], *, by: str | None = None
    ) -> None: ...


class NotConfigured(Exception):
    """The config has no `deploys:` section (or no `deploys.vercel`)."""


class WatcherState:
    """What the watcher's parts share (DeployWatcher sets it up): the services it acts
    through, the section it runs with, and the deploys it holds."""

    store: Store
    clock: Clock
    incidents: Incidents
    healthy: Callable[[RuleConfig], None]
    announcements: Announcements
    metrics: DeployMetrics
    recorder: DeployRecorder
    config: DeploysConfig | None
    history: History
    staleness: dict[str, float]
    watch: Watch | None  # the deploy being watched
    owner: Watch | None  # the deploy whose rollback incident is open
    last: Deploy | None  # the newest deploy watched
    _version: float | None  # what `version_from` reported last
    _lock: asyncio.Lock
    _tasks: set[asyncio.Task[None]]

    def _settings(self) -> DeploysConfig:
        if self.config is None:
            raise NotConfigured("no deploys: section in the config")
        return self.config

    def _new(
        self,
        event: DeployEvent,
        now: float,
        previous: str | None,
        baseline: dict[str, float | None],
        status: DeployStatus = DeployStatus.WATCHING,
    ) -> Deploy:
        return Deploy(
            id=deploy_id(event, now),
            version=event.version,
            environment=event.environment,
            kind=event.kind,
            source=event.source,
            started_at=now,
            commit=event.commit,
            by=event.by,
            previous=previous,
            baseline=baseline,
            data=dict(event.data),
            status=status,
        )

    def _entry(self, kind: DeployStep, message: str) -> DeployEntry:
        return DeployEntry(self.clock.now(), kind, message)

    async def _last_good(self, config: DeploysConfig) -> str | None:
        found = await self.store.get_value(LAST_GOOD, config.environment)
        version = found.get("version") if isinstance(found, dict) else None
        return version if isinstance(version, str) else None
