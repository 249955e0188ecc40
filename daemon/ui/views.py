"""What a console page shows, gathered through the port: the store (every replica reads it)
and the acts (the leader's memory: rules, checks, jobs, approvals; a standby asks the leader).
A section the leader cannot answer for says why instead of failing the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.api.acts import answer
from daemon.api.check_query import CheckQuery
from daemon.api.port import DaemonView
from daemon.core.models import Incident
from daemon.store.protocol import Deploy

RECENT_INCIDENTS = 20
RECENT_DEPLOYS = 10
# The overview's checks: trouble first, this many; the checks page pages through them all.
OVERVIEW_CHECKS = 25
OVERVIEW_QUERY = CheckQuery(order="trouble", limit=OVERVIEW_CHECKS, history=True)


@dataclass(slots=True)
class Section:
    """A list the leader answers for, or why it did not."""

    items: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    body: dict[str, Any] = field(default_factory=dict)  # the whole answer (totals, counts)


async def listed(
    daemon: DaemonView, act: str, key: str, args: dict[str, Any] | None = None
) -> Section:
    got = await answer(daemon, act, args or {})
    if got.status != 200:
        return Section(error=str(got.body.get("error", f"status {got.status}")))
    return Section(items=list(got.body.get(key, [])), body=got.body)


@dataclass(slots=True)
class Overview:
    role: str
    leader: str | None
    open_incidents: list[Incident]
    recent: list[Incident]
    rules: Section
    checks: Section
    jobs: Section
    deploys: list[Deploy]


async def overview(daemon: DaemonView) -> Overview:
    store = daemon.store
    opened = sorted(await store.open_incidents(), key=lambda i: i.opened_at, reverse=True)
    recent = [i for i in await store.list_incidents(limit=RECENT_INCIDENTS) if not i.is_open]
    return Overview(
        role=daemon.role(),
        leader=daemon.leader(),
        open_incidents=opened,
        recent=recent,
        rules=await listed(daemon, "listRules", "rules"),
        checks=await listed(daemon, "listChecks", "checks", OVERVIEW_QUERY.to_args()),
        jobs=await listed(daemon, "listJobs", "jobs"),
        deploys=await store.list_deploys(limit=RECENT_DEPLOYS),
    )


async def waiting_step(daemon: DaemonView, incident_id: str) -> dict[str, Any] | None:
    """The incident's step waiting for approval, if any (and if the leader says)."""
    approvals = await listed(daemon, "listApprovals", "approvals")
    return next((a for a in approvals.items if a.get("incident") == incident_id), None)
