"""Starting a watch: a deploy event becomes a watched deploy against the baseline frozen
from the values before it (superseding the watch going on), a deploy recorded and not watched
(another environment, a failed build), or a note on the deploy it concerns.
"""

from __future__ import annotations

import math

import structlog

from daemon.core.models import Observation
from daemon.core.units import format_duration
from daemon.deploys import messages
from daemon.deploys.config import DeploysConfig, split_ref
from daemon.deploys.criteria import baseline_keys, criteria, unverified_key
from daemon.deploys.models import DeployEvent, DeployStatus, DeployStep
from daemon.deploys.state import WatcherState
from daemon.deploys.watch import Watch
from daemon.store.protocol import Deploy

log = structlog.get_logger("runbookd.deploys")


class Starting(WatcherState):
    async def _deploy(self, event: DeployEvent, now: float) -> tuple[Deploy, str]:
        config = self._settings()
        if (noted := await self._noted(event)) is not None:
            return noted, "noted"
        if event.environment != config.environment:
            deploy = self._new(event, now, None, {}, DeployStatus.NOT_WATCHED)
            deploy.ended_at = now
            why = f"not watched: {config.environment} is"
            deploy.timeline += [
                self._entry(DeployStep.RECEIVED, _received(deploy)),
                self._entry(DeployStep.NOTE, why),
            ]
            await self.store.create_deploy(deploy)
            return deploy, "recorded"
        if self.watch is not None:
            old = self.watch
            self.watch = None
            message = f"superseded by {event.version} before its watch ended"
            await self.recorder.end(
                old.deploy, DeployStatus.SUPERSEDED, DeployStep.SUPERSEDED, message
            )
            self.metrics.deploys.labels(DeployStatus.SUPERSEDED).inc()
        unverified = unverified_key(config)
        if unverified in self.incidents.by_rule:
            message = f"resolved: a later deploy ({event.version}) is being watched"
            await self.incidents.resolve(unverified, now, message, {})
        return await self._watch(config, event, now), "watching"

    async def _watch(self, config: DeploysConfig, event: DeployEvent, now: float) -> Deploy:
        found = criteria(config, self.history.freeze(now))
        baseline = {c.key: c.baseline for c in found if c.key in baseline_keys(config)}
        deploy = self._new(event, now, await self._last_good(config), baseline)
        watch_for = config.watch_for.of(deploy.kind)
        limits = "; ".join(c.condition for c in found)
        for kind, message in (
            (DeployStep.RECEIVED, _received(deploy)),
            (DeployStep.BASELINE, f"rollback if: {limits or 'nothing configured'}"),
            (DeployStep.WATCHING, f"watching for {format_duration(watch_for)}"),
        ):
            deploy.timeline.append(self._entry(kind, message))
        await self.store.create_deploy(deploy)
        ends_at = now + watch_for
        self.watch = Watch(
            deploy, found, ends_at=ends_at, gives_up_at=ends_at + config.extend_up_to
        )
        self.last = deploy
        self.metrics.watching.set(1)
        log.info("watching a deploy", deploy=deploy.id, version=deploy.version, kind=deploy.kind)
        before = ", ".join(
            f"{c.what} {c.show(c.baseline)}" for c in found if c.baseline is not None
        )
        self.announcements.post(
            deploy, config.announce, messages.starting(deploy, watch_for, before)
        )
        return deploy

    async def _noted(self, event: DeployEvent) -> Deploy | None:
        """An event that is not a new deploy, noted on the one it concerns: production back
        on the version a rollback went to (told by Vercel or by `version_from`), or
        `version_from` seeing the deploy another source announced. CI's word is taken."""
        if event.source == "ci":
            return None
        last = self.last
        rollback = (DeployStatus.ROLLING_BACK, DeployStatus.ROLLED_BACK)
        if last is not None and last.status in rollback and event.version == last.previous:
            message = f"{event.source} reports {event.version} again: the rollback"
            await self.recorder.record(last, DeployStep.NOTE, message, source=event.source)
            return last
        watch = self.watch
        if event.source == "check" and watch is not None and watch.deploy.source != "check":
            message = f"{event.data.get('check')} now reports {event.version}"
            await self.recorder.record(watch.deploy, DeployStep.NOTE, message)
            return watch.deploy
        return None

    async def _build_failed(self, event: DeployEvent, now: float) -> tuple[Deploy, str]:
        config = self._settings()
        if event.environment != config.environment:
            return await self._deploy(event, now)
        deploy = self._new(event, now, await self._last_good(config), {})
        deploy.status, deploy.ended_at = DeployStatus.BUILD_FAILED, now
        message = "the build failed: production did not change, nothing to watch"
        deploy.timeline += [
            self._entry(DeployStep.RECEIVED, _received(deploy)),
            self._entry(DeployStep.BUILD_FAILED, message),
        ]
        await self.store.create_deploy(deploy)
        self.metrics.deploys.labels(DeployStatus.BUILD_FAILED).inc()
        self.announcements.post(deploy, config.announce, messages.build_failed(deploy))
        return deploy, "recorded"

    async def _version_seen(self, config: DeploysConfig, obs: Observation) -> None:
        value = obs.values.get(split_ref(config.version_from or "")[1]) if obs.known else None
        if value is None or math.isnan(value):
            return  # no version known: nothing changed that anyone can tell
        before, self._version = self._version, value
        if before is None or before == value:
            return  # the first seen since runbookd started is where it starts from
        event = DeployEvent(
            version=_version_text(value),
            environment=config.environment,
            source="check",
            data={"check": config.version_from, "before": _version_text(before)},
        )
        async with self._lock:
            await self._deploy(event, self.clock.now())


def _received(deploy: Deploy) -> str:
    by = f" by {deploy.by}" if deploy.by else ""
    commit = f" ({deploy.commit})" if deploy.commit else ""
    return (
        f"{deploy.source}: {deploy.kind} deploy of {deploy.version}{commit} to "
        f"{deploy.environment}{by}"
    )


def _version_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
