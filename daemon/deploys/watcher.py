"""The deploy watcher: a deploy event starts a watch against the values as they were before
it; a breach of the runbook's "Rollback if" opens the incident `deploy:ENVIRONMENT`, whose
plan rolls back through the pipeline (the whole safety envelope, the timeline, verification
and escalation); a clean watch records the version as last known good; a watch that lacks
data goes on for `extend_up_to`, then opens `deploy:ENVIRONMENT:unverified`, which pages.

One deploy is watched at a time: a new one supersedes the watch going on. The deploy whose
rollback incident is open stays followed until it resolves: its conditions decide when the
values are back within their limits. Everything the watch does is recorded on the deploy's
own timeline and announced through `deploys.announce`.

Over 400 lines: a watch's whole life (start, supersede, extend, end, follow a rollback,
resume after a restart) in one place; splitting it by stage is noted as work to do.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from daemon.core.clock import Clock
from daemon.core.models import Incident, Observation, Step, TimelineEntry
from daemon.core.units import format_duration
from daemon.deploys import messages
from daemon.deploys.announce import Announcements
from daemon.deploys.config import DeploysConfig, split_ref
from daemon.deploys.criteria import (
    baseline_keys,
    criteria,
    incident_key,
    plans,
    unverified_key,
)
from daemon.deploys.history import History
from daemon.deploys.metrics import DeployMetrics
from daemon.deploys.models import DeployEvent, DeployStatus, DeployStep, deploy_id
from daemon.deploys.vercel import ERROR, PROMOTED, VercelDelivery, deploy_event
from daemon.deploys.watch import Watch
from daemon.rules.config import RuleConfig
from daemon.store.protocol import Deploy, DeployEntry, Store

log = structlog.get_logger("runbookd.deploys")

LAST_GOOD = "deploys:last_good"  # the store's namespace: per environment, the last known good
# Plan entries that mean the rollback will not run (the plan's gates, or a crash in it).
STOPPED = frozenset({Step.SILENCED, Step.CIRCUIT_OPEN, Step.ERROR})
NOT_RUN = frozenset({Step.SKIPPED, Step.DRY_RUN, Step.REJECTED, Step.INTERRUPTED})


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


class DeployWatcher:
    def __init__(
        self,
        config: DeploysConfig | None,
        *,
        store: Store,
        clock: Clock,
        incidents: Incidents,
        healthy: Callable[[RuleConfig], None],
        announcements: Announcements,
        metrics: DeployMetrics,
        staleness: dict[str, float],
    ) -> None:
        self.store = store
        self.clock = clock
        self.incidents = incidents
        self.healthy = healthy
        self.announcements = announcements
        self.metrics = metrics
        self.recorder = announcements.recorder
        self.config: DeploysConfig | None = None
        self.history = History([], 1.0)
        self.staleness = staleness
        self.watch: Watch | None = None  # the deploy being watched
        self.owner: Watch | None = None  # the deploy whose rollback incident is open
        self.last: Deploy | None = None  # the newest deploy watched
        self._version: float | None = None  # what `version_from` reported last
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.configure(config, staleness)

    # -- configuration -------------------------------------------------------------------------

    def configure(self, config: DeploysConfig | None, staleness: dict[str, float]) -> None:
        """Install the section (a reload); a watch going on keeps the limits it began with."""
        self.config, self.staleness = config, staleness
        if config is not None:
            keys = baseline_keys(config)
            if not self.history.same(keys, config.baseline_window):
                self.history = History(keys, config.baseline_window)
        if config is None or config.version_from is None:
            self._version = None

    def plans(self) -> dict[str, RuleConfig]:
        """The plans of the incidents deploys open, by key: what a restart resumes."""
        return plans(self.config) if self.config is not None else {}

    def _settings(self) -> DeploysConfig:
        if self.config is None:
            raise NotConfigured("no deploys: section in the config")
        return self.config

    # -- the sources ---------------------------------------------------------------------------

    async def deploy(self, event: DeployEvent) -> tuple[Deploy, str]:
        """A deploy from CI (or any source): the deploy, and what became of the event:
        "watching", "recorded" (not watched) or "noted" (on another deploy)."""
        self._settings()
        async with self._lock:
            return await self._deploy(event, self.clock.now())

    async def vercel(self, delivery: VercelDelivery) -> dict[str, Any]:
        """A verified Vercel delivery; what it came to (see daemon/deploys/vercel.py)."""
        config = self._settings()
        source = config.vercel
        answer: dict[str, Any] = {"received": delivery.type, "deploy": None}
        deployment = delivery.payload.deployment
        if delivery.type not in (PROMOTED, ERROR):
            reason = "a watch starts when production serves a deployment (deployment.promoted)"
            return answer | {"action": "ignored", "reason": reason}
        if deployment is None:
            raise ValueError("payload.deployment: required for deployment events")
        project = delivery.payload.project.id if delivery.payload.project else None
        if source is not None and source.project_id not in (None, project):
            return answer | {"action": "ignored", "reason": f"another project ({project})"}
        event = deploy_event(delivery, deployment)
        async with self._lock:
            now = self.clock.now()
            if (seen := await self.store.get_deploy(deploy_id(event, now))) is not None:
                reason = "this delivery was received before: nothing changes"
                return answer | {"action": "duplicate", "deploy": seen.id, "reason": reason}
            if delivery.type == ERROR:
                deploy, action = await self._build_failed(event, now)
            else:
                deploy, action = await self._deploy(event, now)
        # What the deploy's timeline says last (before the announcements, posted later).
        reason = deploy.timeline[-1].message if deploy.timeline else deploy.status
        return answer | {"action": action, "deploy": deploy.id, "reason": reason}

    # -- what the daemon feeds it --------------------------------------------------------------

    async def observe(self, obs: Observation) -> None:
        config = self.config
        if config is None:
            return
        if self.owner is None and (self.watch is None or not self.watch.breaching()):
            # Learned only while nothing breaches: a degradation never becomes its baseline.
            self.history.add(obs)
        if config.version_from is not None and obs.check == split_ref(config.version_from)[0]:
            await self._version_seen(config, obs)
        followed = [w for w in (self.watch, self.owner) if w is not None and obs.check in w.checks]
        if not followed:
            return
        async with self._lock:
            for watch in {id(w): w for w in followed}.values():
                watch.observe(obs)
            await self._decide(self.clock.now())

    async def tick(self, now: float) -> None:
        """Hold conditions whose check went stale; end a watch whose time is up."""
        if self.config is None or (self.watch is None and self.owner is None):
            return
        async with self._lock:
            for watch in (self.watch, self.owner):
                if watch is not None:
                    watch.stale(now, self.staleness)
            await self._decide(now)
            if self.watch is not None and now >= self.watch.ends_at:
                await self._end_of_watch(self.watch, now)

    def on_entry(self, incident: Incident, entry: TimelineEntry) -> None:
        """A timeline entry of any incident (the recorder's listener): the rollback's outcome
        and the resolution of a deploy's incident end or clear its deploy."""
        if self.config is None or incident.rule != incident_key(self.config):
            return
        task = asyncio.create_task(self._follow(incident, entry), name="deploy follow-up")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for the follow-ups and announcements under way (tests)."""
        while self._tasks or self.announcements.tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.announcements.settled()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.announcements.stop()

    # -- starting a watch ----------------------------------------------------------------------

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

    # -- deciding ------------------------------------------------------------------------------

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

    # -- the rollback incident's course --------------------------------------------------------

    async def _follow(self, incident: Incident, entry: TimelineEntry) -> None:
        config = self.config
        if config is None:
            return
        async with self._lock:
            owner = self.owner
            if owner is None or owner.deploy.incident != incident.id:
                return
            deploy, facts = owner.deploy, entry.step
            if (
                entry.kind == Step.ACTION
                and facts is not None
                and facts.remediation == config.rollback
            ):
                owner.acting = True
            outcome = _outcome(entry, config.rollback, acting=owner.acting)
            if outcome is not None and deploy.status == DeployStatus.ROLLING_BACK:
                await self._rollback_ended(config, deploy, incident, entry, outcome)
            if entry.kind == Step.RESOLVED:
                owner.resolved = True
                await self.recorder.record(
                    deploy, DeployStep.CLEARED, entry.message, incident=incident.id
                )
            # Followed until both are known: a rollback running as the incident resolves
            # still has its outcome to tell.
            if owner.resolved and deploy.status != DeployStatus.ROLLING_BACK:
                self.owner = None

    async def _rollback_ended(
        self,
        config: DeploysConfig,
        deploy: Deploy,
        incident: Incident,
        entry: TimelineEntry,
        outcome: DeployStatus,
    ) -> None:
        reasons = str(incident.trigger.get("reasons", incident.summary))
        if outcome is DeployStatus.ROLLED_BACK:
            after = entry.ts - deploy.started_at
            failing = entry.ts - float(incident.trigger.get("failing_since", deploy.started_at))
            message = (
                f"rolled back {after:.0f}s after the deploy, {failing:.0f}s after the first "
                f"failing check: {entry.message}"
            )
            await self.recorder.end(
                deploy,
                outcome,
                DeployStep.ROLLED_BACK,
                message,
                seconds_after_deploy=after,
                seconds_after_first_failure=failing,
                incident=incident.id,
            )
            self.metrics.rollback_seconds.observe(after)
            announcement = messages.rolled_back(deploy, reasons, entry.message)
        else:
            message = f"not rolled back: {entry.message}"
            await self.recorder.end(
                deploy, outcome, DeployStep.NOT_ROLLED_BACK, message, incident=incident.id
            )
            announcement = messages.not_rolled_back(deploy, reasons, entry.message)
        self.metrics.deploys.labels(outcome).inc()
        self.announcements.post(deploy, config.announce, announcement)

    # -- after a restart -----------------------------------------------------------------------

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

    # -- records -------------------------------------------------------------------------------

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


def _received(deploy: Deploy) -> str:
    by = f" by {deploy.by}" if deploy.by else ""
    commit = f" ({deploy.commit})" if deploy.commit else ""
    return (
        f"{deploy.source}: {deploy.kind} deploy of {deploy.version}{commit} to "
        f"{deploy.environment}{by}"
    )


def _outcome(entry: TimelineEntry, rollback: str, *, acting: bool) -> DeployStatus | None:
    """What a plan entry says of the rollback: done, not done, or nothing yet."""
    if entry.kind in STOPPED:
        return DeployStatus.NOT_ROLLED_BACK
    facts = entry.step
    if facts is None or facts.remediation != rollback or facts.on_resolve:
        # Resolved before the rollback began: the values were back within their limits.
        resolved = entry.kind == Step.RESOLVED and not acting
        return DeployStatus.NOT_ROLLED_BACK if resolved else None
    if entry.kind == Step.RESULT:
        return DeployStatus.ROLLED_BACK if facts.ok else DeployStatus.NOT_ROLLED_BACK
    return DeployStatus.NOT_ROLLED_BACK if entry.kind in NOT_RUN else None


def _version_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
