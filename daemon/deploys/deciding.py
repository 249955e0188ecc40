"""Deciding a watch: a breach opens the rollback incident; the end of the watch completes
the deploy (last known good), extends it for lack of data, or gives up and pages; the
rollback incident resolves once every watched value is back within its limits.
"""

from __future__ import annotations

from daemon.core.units import format_duration
from daemon.deploys import messages
from daemon.deploys.config import DeploysConfig
from daemon.deploys.criteria import incident_key, plans, unverified_key
from daemon.deploys.models import DeployStatus, DeployStep
from daemon.deploys.state import LAST_GOOD, WatcherState
from daemon.deploys.watch import Watch


class Deciding(WatcherState):
    async def _decide(self, now: float) -> None:
        config = self._settings()
        key = incident_key(config)
        watch = self.watch
        if watch is not None and watch.breaching() and key not in self.incidents.by_rule:
            await self._breach(config, watch, now)
        owner = self.owner
        if owner is None:
            return
        incident = self.incidents.by_rule.get(key)
        if incident is None or incident.id != owner.deploy.incident:
            return  # closed: its follow-up (`_follow`) lets the deploy go
        if not owner.breaching():
            values = owner.values()
            message = "resolved: every watched value is back within its limits"
            await self.incidents.resolve(key, now, message + (f" ({values})" if values else ""), {})

    async def _breach(self, config: DeploysConfig, watch: Watch, now: float) -> None:
        deploy, breaching = watch.deploy, watch.breaching()
        reasons = "; ".join(t.criterion.describe(t.value) for t in breaching)
        first = breaching[0]
        failing_since = min((t.failing_since for t in breaching if t.failing_since), default=now)
        summary = f"Deploy {deploy.version} to {deploy.environment}: {reasons}"
        criterion = first.criterion
        trigger = {
            "deploy": deploy.id,
            "version": deploy.version,
            "previous": deploy.previous,
            "breaches": [t.criterion.name for t in breaching],
            "reasons": reasons,
            "failing_since": failing_since,
            # What the incident template shows (the first breach).
            "condition": criterion.condition,
            "value": first.value,
            "threshold": criterion.limit,
            "baseline": criterion.baseline,
        }
        key = incident_key(config)
        plan = plans(config)[key]
        message = f"firing: {summary}"
        await self.incidents.open(key, plan, criterion.check, summary, message, trigger, now)
        incident = self.incidents.by_rule[key]
        self.watch, self.owner = None, watch
        deploy.status, deploy.incident = DeployStatus.ROLLING_BACK, incident.id
        self.metrics.watching.set(0)
        message = f"rolling back ({incident.id}): {reasons}"
        async with self.store.batch():
            await self.store.update_deploy(
                deploy.id, status=DeployStatus.ROLLING_BACK, incident=incident.id
            )
            await self.recorder.record(
                deploy,
                DeployStep.BREACH,
                message,
                incident=incident.id,
                failing_since=failing_since,
            )

    async def _end_of_watch(self, watch: Watch, now: float) -> None:
        config = self._settings()
        missing = watch.unjudged(config.min_samples)
        if not missing:
            await self._completed(config, watch, now)
        elif now < watch.gives_up_at:
            if not watch.extended:
                watch.extended = True
                longest = format_duration(config.extend_up_to)
                message = f"the watch goes on (at most {longest}): {'; '.join(missing)}"
                await self.recorder.record(
                    watch.deploy, DeployStep.EXTENDED, message, missing=missing
                )
        else:
            await self._inconclusive(config, watch, missing, now)

    async def _completed(self, config: DeploysConfig, watch: Watch, now: float) -> None:
        deploy, watched = watch.deploy, now - watch.deploy.started_at
        self.watch = None
        self.metrics.watching.set(0)
        values = watch.values()
        message = f"completed: watched {format_duration(round(watched))}" + (
            f"; {values}" if values else ""
        )
        good = {"version": deploy.version, "deploy": deploy.id, "at": now}
        async with self.store.batch():
            await self.recorder.end(deploy, DeployStatus.COMPLETED, DeployStep.COMPLETED, message)
            await self.store.put_value(LAST_GOOD, config.environment, good)
        self.metrics.deploys.labels(DeployStatus.COMPLETED).inc()
        self.metrics.last_good.set(now)
        # The rollback notes what good looks like (compose: the image the service runs now).
        self.healthy(plans(config)[incident_key(config)])
        self.announcements.post(
            deploy, config.announce, messages.completed(deploy, watched, values)
        )

    async def _inconclusive(
        self, config: DeploysConfig, watch: Watch, missing: list[str], now: float
    ) -> None:
        deploy = watch.deploy
        self.watch = None
        self.metrics.watching.set(0)
        text = "; ".join(missing)
        key = unverified_key(config)
        incident_id = None
        if key not in self.incidents.by_rule:
            summary = (
                f"Deploy {deploy.version} to {deploy.environment} could not be verified: {text}"
            )
            trigger = {"deploy": deploy.id, "version": deploy.version, "missing": missing}
            await self.incidents.open(
                key, plans(config)[key], "deploy", summary, summary, trigger, now
            )
            incident_id = self.incidents.by_rule[key].id
        watched = format_duration(round(now - deploy.started_at))
        message = f"could not be verified after {watched}: {text}"
        await self.recorder.end(
            deploy,
            DeployStatus.INCONCLUSIVE,
            DeployStep.INCONCLUSIVE,
            message,
            incident=incident_id,
        )
        self.metrics.deploys.labels(DeployStatus.INCONCLUSIVE).inc()
        self.announcements.post(deploy, config.announce, messages.unverified(deploy, text))
