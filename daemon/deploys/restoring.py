"""After a restart: the watch and the rollback a previous run left going on, taken back."""

from __future__ import annotations

from daemon.core.units import format_duration
from daemon.deploys.config import DeploysConfig
from daemon.deploys.criteria import criteria, incident_key
from daemon.deploys.models import DeployStatus, DeployStep
from daemon.deploys.state import LAST_GOOD, WatcherState
from daemon.deploys.watch import Watch
from daemon.store.protocol import Deploy


class Restoring(WatcherState):
    async def restore(self) -> None:
        """Take back the watch and the rollback a previous run left going on: a watch ends
        when it would have (its conditions need their `for` again); a rollback incident
        still open is followed again."""
        config = self.config
        if config is None:
            return
        now = self.clock.now()
        key = incident_key(config)
        good = await self.store.get_value(LAST_GOOD, config.environment)
        if isinstance(good, dict) and isinstance(at := good.get("at"), int | float):
            self.metrics.last_good.set(at)
        for deploy in await self.store.list_deploys(status=DeployStatus.ROLLING_BACK):
            full = await self.store.get_deploy(deploy.id) or deploy
            incident = self.incidents.by_rule.get(key)
            if incident is not None and incident.id == full.incident:
                self.owner = self._rebuilt(config, full)
                self.owner.restore_firing(list(incident.trigger.get("breaches", [])))
                message = "runbookd restarted: following the rollback again"
                await self.recorder.record(full, DeployStep.RESUMED, message)
            else:
                await self._settle_rollback(config, full)
        watching = await self.store.list_deploys(status=DeployStatus.WATCHING)
        for index, deploy in enumerate(watching):
            full = await self.store.get_deploy(deploy.id) or deploy
            if index > 0:
                message = "superseded by a later deploy (found at restart)"
                await self.recorder.end(
                    full, DeployStatus.SUPERSEDED, DeployStep.SUPERSEDED, message
                )
                continue
            self.watch = self._rebuilt(config, full)
            self.metrics.watching.set(1)
            left = max(0.0, self.watch.ends_at - now)
            message = (
                f"runbookd restarted during the watch: it goes on ({format_duration(round(left))} "
                "left); conditions need their `for` again"
            )
            await self.recorder.record(full, DeployStep.RESUMED, message)
        newest = await self.store.list_deploys(limit=1)
        self.last = self.watch.deploy if self.watch else (newest[0] if newest else None)

    def _rebuilt(self, config: DeploysConfig, deploy: Deploy) -> Watch:
        ends_at = deploy.started_at + config.watch_for.of(deploy.kind)
        found = criteria(config, deploy.baseline)
        return Watch(deploy, found, ends_at=ends_at, gives_up_at=ends_at + config.extend_up_to)

    async def _settle_rollback(self, config: DeploysConfig, deploy: Deploy) -> None:
        """A rollback whose incident closed while runbookd was not following it."""
        incident = await self.store.get_incident(deploy.incident) if deploy.incident else None
        timeline = incident.timeline if incident is not None else []
        if any(e.succeeded(config.rollback) for e in timeline):
            status, kind = DeployStatus.ROLLED_BACK, DeployStep.ROLLED_BACK
        else:
            status, kind = DeployStatus.NOT_ROLLED_BACK, DeployStep.NOT_ROLLED_BACK
        message = f"found at restart: its incident {deploy.incident} is closed ({status})"
        await self.recorder.end(deploy, status, kind, message)
        self.metrics.deploys.labels(status).inc()
