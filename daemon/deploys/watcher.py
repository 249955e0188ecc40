"""The deploy watcher: a deploy event starts a watch against the values as they were before
it; a breach of the runbook's "Rollback if" opens the incident `deploy:ENVIRONMENT`, whose
plan rolls back through the pipeline (the whole safety envelope, the timeline, verification
and escalation); a clean watch records the version as last known good; a watch that lacks
data goes on for `extend_up_to`, then opens `deploy:ENVIRONMENT:unverified`, which pages.

One deploy is watched at a time: a new one supersedes the watch going on. The deploy whose
rollback incident is open stays followed until it resolves: its conditions decide when the
values are back within their limits. Everything the watch does is recorded on the deploy's
own timeline and announced through `deploys.announce`.

A watch's life in stages, each in its module: starting.py (a deploy event starts or
supersedes a watch), deciding.py (breach, completion, extension, giving up), following.py
(the rollback incident's course) and restoring.py (after a restart), sharing state.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from daemon.core.clock import Clock
from daemon.core.models import Incident, Observation, TimelineEntry
from daemon.deploys.announce import Announcements
from daemon.deploys.config import DeploysConfig, split_ref
from daemon.deploys.criteria import baseline_keys, incident_key, plans
from daemon.deploys.deciding import Deciding
from daemon.deploys.following import Following
from daemon.deploys.history import History
from daemon.deploys.metrics import DeployMetrics
from daemon.deploys.models import DeployEvent, deploy_id
from daemon.deploys.restoring import Restoring
from daemon.deploys.starting import Starting
from daemon.deploys.state import Incidents
from daemon.deploys.vercel import ERROR, PROMOTED, VercelDelivery, deploy_event
from daemon.rules.config import RuleConfig
from daemon.store.protocol import Deploy, Store


class DeployWatcher(Starting, Deciding, Following, Restoring):
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
        self.config = None
        self.history = History([], 1.0)
        self.staleness = staleness
        self.watch = None
        self.owner = None
        self.last = None
        self._version = None
        self._lock = asyncio.Lock()
        self._tasks = set()
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
