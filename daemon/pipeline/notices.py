"""Notifications and what a resolution owes: pages and their resolutions go out through the
store's outbox (daemon/pipeline/outbox.py), so a failed page is retried later, after a restart
too; the other remediations that acted get their `resolve` hook (a scale-out scales back in).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Mapping

from daemon.core.models import UPDATE_PHASE, Incident, RemediationResult
from daemon.pipeline.acting import Actor
from daemon.pipeline.outbox import Outbox
from daemon.pipeline.plan import Run, Stopped
from daemon.store.protocol import OutboxItem

# What a resolution owes one remediation: its name, and the outbox item of a page's resolution
# (None: the remediation's undo, called directly).
Owed = list[tuple[str, OutboxItem | None]]


class Notices:
    def __init__(self, actor: Actor, runs: Mapping[str, Run]) -> None:
        self.actor = actor
        self.runs = runs  # the plans under way: a page of one goes to its incident as it is
        self.outbox = Outbox(actor.store, actor.clock, self.deliver)
        # Per rule: the resolutions being delivered (and the undo they call).
        self._resolving: dict[str, set[asyncio.Task[None]]] = defaultdict(set)

    def cancel_undo(self, rule: str) -> None:
        """The rule fires again: a pending undo of its last episode is off."""
        for task in self._resolving.pop(rule, set()):
            task.cancel()

    async def resolved(self, incident: Incident) -> None:
        """Queue what the resolution owes (in the caller's transaction), then deliver it in
        the background."""
        owed = await self._owed(incident)
        task = self.actor.tasks.spawn(
            self._notify_resolved(incident, owed), f"resolve {incident.id}"
        )
        self._resolving[incident.rule].add(task)
        task.add_done_callback(self._resolving[incident.rule].discard)

    async def deliver(self, item: OutboxItem, retry: bool) -> RemediationResult | None:
        """One attempt at an outbox item (a page, an update, or the page's resolution)."""
        actor = self.actor
        run = self.runs.get(item.incident_id)
        incident = run.incident if run else await actor.store.get_incident(item.incident_id)
        remediation = actor.plan.remediations.get(item.remediation)
        config = actor.plan.configs.get(item.remediation)
        if incident is None or remediation is None or config is None:
            return RemediationResult(False, f"{item.remediation}: no longer configured")
        if item.phase == "execute":
            phase = "outbox retry" if retry else "do"
            return await actor.run_action(
                incident, item.remediation, remediation, config, phase, retry=retry
            )
        if item.phase == UPDATE_PHASE:
            return await actor.tell(incident, item.remediation, remediation, config)
        return await actor.undo(incident, item.remediation, remediation, config)

    async def _owed(self, incident: Incident) -> Owed:
        """What a resolution owes every remediation that acted on the incident: the pages'
        resolutions, queued in the outbox now (in the caller's transaction, with the
        resolution itself), and the other remediations' undo (a scale-out scales back in).
        A page still waiting in the outbox is owed one too: it goes out, then its resolution
        (the outbox keeps that order), or the pager would keep an incident open for good. In
        the order they acted: a change event may report the undo of the step before it."""
        store = self.actor.store
        stored = await store.get_incident(incident.id) or incident
        pending = [
            i.remediation for i in await store.outbox_pending(incident.id) if i.phase == "execute"
        ]
        acted = dict.fromkeys(
            [
                *(facts.remediation for e in stored.timeline if (facts := e.succeeded())),
                *pending,
            ]
        )
        owed: Owed = []
        for name in acted:
            plan = self.actor.plan  # read anew after each await: a reload may swap it
            remediation = plan.remediations.get(name)
            if remediation is None or name not in plan.configs:
                continue
            notice = None
            if remediation.notifier:
                notice = await self.outbox.queue(incident.id, name, "resolve")
            owed.append((name, notice))
        return owed

    async def _notify_resolved(self, incident: Incident, owed: Owed) -> None:
        """Deliver what the resolution owes; a notice not delivered now is retried from the
        outbox (after a restart too)."""
        # Stopped: the pages' resolutions are in the outbox; they go out after the restart.
        with contextlib.suppress(Stopped):
            for name, notice in owed:
                remediation = self.actor.plan.remediations.get(name)
                config = self.actor.plan.configs.get(name)
                if notice is not None:
                    if not self.actor.stopping:
                        await self.outbox.attempt(notice)
                elif remediation is not None and config is not None:
                    await self.actor.undo(incident, name, remediation, config)
