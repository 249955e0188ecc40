"""The public status page (`/status`, `/status.json`): each component operational, degraded or
in outage, from its checks and the open incidents on them; the incidents users should know of,
in the runbook's Incident Update template; the last 90 days, each incident with what the public
was told of it (resolved, the updates, investigating). Opt-in (`status_page:`), open to
anyone who reaches the listener, so it shows nothing internal: no values, thresholds, rule or
check names, URLs, hosts or summaries (a summary carries values): only the components' names
the config gives, states, and times."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aiohttp import web

from daemon.api.port import DaemonView
from daemon.config.status_page import StatusPageConfig
from daemon.core.models import Incident, IncidentStatus, Step
from daemon.core.updates import STAGES, last_public, stage, updates
from daemon.ui import rendering
from daemon.ui.responses import SECURITY_HEADERS, etag_of
from daemon.ui.views import listed

HISTORY_DAYS = 90
HISTORY_LIMIT = 1000
RANK = {"operational": 0, "degraded": 1, "outage": 2}
# What a resolved incident's history needs of its timeline: the updates (the public ones shown).
PUBLIC = frozenset({Step.UPDATE})


@dataclass(slots=True)
class Component:
    name: str
    state: str = "operational"
    measured: bool = False  # False: none of its checks has a value yet (no data is not bad)


@dataclass(frozen=True, slots=True)
class Said:
    """One update the public was given: when, the stage, and its words for it."""

    at: float
    status: str
    current_status: str


@dataclass(slots=True)
class Update:
    """One incident in the runbook's Incident Update template, with the updates given so far,
    newest first: the resolution (once resolved) first, the opening last."""

    status: str
    impact: str
    started: float
    last_update: float
    what_happened: str
    current_status: str
    next_update: float | None
    resolved: float | None = None
    components: list[str] = field(default_factory=list)
    updates: list[Said] = field(default_factory=list)


@dataclass(slots=True)
class StatusPage:
    title: str
    state: str
    components: list[Component]
    active: list[Update]
    history: list[Update]
    generated_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def touched(config: StatusPageConfig, incident: Incident) -> list[str]:
    return [c.name for c in config.components if incident.check in c.checks]


def said(incident: Incident) -> list[Said]:
    """What the public was told of the incident, newest first, as a status page lists it:
    its resolution (once resolved), its public updates (daemon/pipeline/updates.py), then
    its opening. Reads only the `update` entries of the timeline."""
    given = [
        Said(p.ts, p.facts.stage, STAGES[p.facts.stage])
        for p in updates(incident)
        if p.facts.public
    ]
    opening = Said(incident.opened_at, "investigating", STAGES["investigating"])
    told = [*reversed(given), opening]
    if not incident.is_open and incident.resolved_at is not None:
        told.insert(0, Said(incident.resolved_at, "resolved", STAGES["resolved"]))
    return told


def update(config: StatusPageConfig, incident: Incident, names: list[str], impact: str) -> Update:
    status = stage(incident)
    told = said(incident)
    open_ = incident.is_open
    # The resolution is the last word, even after an update posted as it resolved.
    last = last_public(incident) if open_ else told[0].at
    return Update(
        status=status,
        impact=impact,
        started=incident.opened_at,
        last_update=last,
        what_happened=f"{' and '.join(names)}: {'outage' if impact == 'outage' else 'degraded'}.",
        current_status=STAGES[status],
        next_update=last + config.update_every if open_ else None,
        resolved=incident.resolved_at,
        components=names,
        updates=told,
    )


async def build(daemon: DaemonView, config: StatusPageConfig) -> StatusPage:
    now = daemon.clock.now()
    checks = {c["name"]: c for c in (await listed(daemon, "listChecks", "checks")).items}
    opened = await daemon.store.open_incidents()
    components: list[Component] = []
    for spec in config.components:
        component = Component(spec.name)
        for name in spec.checks:
            status = (checks.get(name) or {}).get("status")
            if status in ("ok", "warn", "critical"):
                component.measured = True
            if status in ("warn", "critical"):
                component.state = "degraded"
        for incident in opened:
            if incident.check in spec.checks:
                bad = "outage" if incident.severity == "critical" else "degraded"
                component.state = max(component.state, bad, key=RANK.__getitem__)
        components.append(component)
    state = max((c.state for c in components), key=RANK.__getitem__, default="operational")
    active = []
    for incident in sorted(opened, key=lambda i: i.opened_at, reverse=True):
        if names := touched(config, incident):
            impact = "outage" if incident.severity == "critical" else "degraded"
            active.append(update(config, incident, names, impact))
    since = now - HISTORY_DAYS * 86400
    resolved = await daemon.store.list_incidents(
        status=IncidentStatus.RESOLVED, limit=HISTORY_LIMIT
    )
    shown = [(i, names) for i in resolved if i.opened_at >= since and (names := touched(config, i))]
    # Their updates in one read (the history may hold hundreds), not each whole timeline.
    told = await daemon.store.incident_entries([i.id for i, _ in shown], PUBLIC)
    history = [
        update(
            config,
            replace(i, timeline=told.get(i.id, [])),
            names,
            "outage" if i.severity == "critical" else "degraded",
        )
        for i, names in shown
    ]
    return StatusPage(config.title, state, components, active, history, now)


NO_STATUS_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>No status page</title>'
    "</head><body><h1>No status page</h1><p>This runbookd publishes no status page: its "
    "config has no <code>status_page:</code> section.</p></body></html>"
)


class StatusPages:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    def _config(self) -> StatusPageConfig:
        config = self.daemon.config.status_page
        if config is None:
            raise web.HTTPNotFound(reason="no status page: the config has no status_page:")
        return config

    async def page(self, request: web.Request) -> web.StreamResponse:
        if self.daemon.config.status_page is None:  # a browser reads a page, not JSON
            return web.Response(
                status=404,
                text=NO_STATUS_PAGE,
                content_type="text/html",
                headers=SECURITY_HEADERS,
            )
        status = await build(self.daemon, self._config())
        context = {"page": status, "now": status.generated_at}
        response = rendering.html("status.html", context)
        # Public and the same for everyone: a cache may keep it a little.
        response.headers.update(SECURITY_HEADERS | {"Cache-Control": "public, max-age=15"})
        return response

    async def feed(self, request: web.Request) -> web.StreamResponse:
        body = json.dumps((await build(self.daemon, self._config())).to_json() | {"v": 1})
        tag = etag_of(json.dumps({**json.loads(body), "generated_at": None}))
        headers = SECURITY_HEADERS | {"ETag": tag, "Cache-Control": "public, max-age=15"}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=body, content_type="application/json", headers=headers)
