"""Writes a deploy's timeline: memory, store and log, in one call."""

from __future__ import annotations

from typing import Any

import structlog

from daemon.core.clock import Clock
from daemon.deploys.models import DeployStep
from daemon.store.protocol import Deploy, DeployEntry, Store

log = structlog.get_logger("runbookd.deploys")


class DeployRecorder:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def record(self, deploy: Deploy, kind: DeployStep, message: str, **data: Any) -> None:
        entry = DeployEntry(self.clock.now(), kind, message, data)
        await self.store.append_deploy_timeline(deploy.id, entry)
        deploy.timeline.append(entry)
        log.info(message, deploy=deploy.id, version=deploy.version, step=str(kind))

    async def end(
        self,
        deploy: Deploy,
        status: str,
        kind: DeployStep,
        message: str,
        *,
        incident: str | None = None,
        **data: Any,
    ) -> None:
        """The deploy ends with `status` (and the incident about it, if one is given); the
        entry that says why, in the same transaction."""
        now = self.clock.now()
        if incident is not None:
            data["incident"] = incident
        async with self.store.batch():
            await self.store.update_deploy(
                deploy.id, status=status, ended_at=now, incident=incident
            )
            await self.record(deploy, kind, message, **data)
        deploy.status, deploy.ended_at = status, now
        deploy.incident = incident or deploy.incident
