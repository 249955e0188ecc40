"""The console's deploys: the recent ones with their status, version and commit, and the
verdict of their watch with why (the breach: which condition failed, its value against its
limit and the baseline before the deploy; the rollback; the end); a deploy's page with its
baseline, its source's data, its announcements and its whole timeline, linking to the
incident it opened. Read from the store (every replica reads it), as GET /api/v1/deploys.

A list shows each deploy's deciding entries, read for all of them in one store call
(`deploy_entries`), never one call per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from daemon.api.routes import Handler
from daemon.deploys.models import DeployStatus, DeployStep
from daemon.store.protocol import Deploy, DeployEntry
from daemon.ui import facts

if TYPE_CHECKING:
    from daemon.ui.pages import Console

RECENT = 50
# The entries that say what a watch came to and why.
VERDICT = frozenset(
    {
        DeployStep.EXTENDED,
        DeployStep.BREACH,
        DeployStep.ROLLED_BACK,
        DeployStep.NOT_ROLLED_BACK,
        DeployStep.COMPLETED,
        DeployStep.INCONCLUSIVE,
        DeployStep.SUPERSEDED,
        DeployStep.BUILD_FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class DeployView:
    deploy: Deploy
    verdict: list[DeployEntry]  # its deciding entries, oldest first
    announcements: list[DeployEntry] = field(default_factory=list)
    timeline: list[tuple[DeployEntry, list[facts.Fact]]] = field(default_factory=list)
    data: list[facts.Fact] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        ended = self.deploy.ended_at
        return None if ended is None else ended - self.deploy.started_at


class DeployPages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.daemon = console.daemon

    def handlers(self) -> dict[str, Handler]:
        return {"uiDeploys": self.listing, "uiDeploy": self.deploy}

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        status = request.query.get("status") or None
        if status is not None and status not in set(DeployStatus):
            choices = ", ".join(s.value for s in DeployStatus)
            return self.console.refused(request, 400, f"status: must be one of {choices}")
        store = self.daemon.store
        deploys = await store.list_deploys(status=status, limit=RECENT)
        verdicts = await store.deploy_entries([d.id for d in deploys], VERDICT)
        context = {
            "session": session,
            "deploys": [DeployView(d, verdicts.get(d.id, [])) for d in deploys],
            "status": status,
            "statuses": [s.value for s in DeployStatus],
            "configured": self.daemon.config.deploys is not None,
        }
        return self.console.page(request, "deploys.html", context)

    async def deploy(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        deploy_id = request.match_info["id"]
        found = await self.daemon.store.get_deploy(deploy_id)
        if found is None:
            return self.console.refused(request, 404, f"no deploy {deploy_id!r}")
        view = DeployView(
            found,
            [e for e in found.timeline if e.kind in VERDICT],
            [e for e in found.timeline if e.kind == DeployStep.ANNOUNCED],
            [(e, facts.facts(e.data)) for e in found.timeline],
            facts.facts(found.data),
        )
        context = {"session": session, "d": found, "v": view}
        return self.console.page(request, "deploy.html", context)
