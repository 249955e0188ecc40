"""The console's approvals: every step waiting for a person, across incidents, oldest first,
with what the incident is about and how long is left before the step times out. Approving or
rejecting posts to the incident's own form (the same act, the same checks), so a decision is
made in one place however it is reached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.api.routes import Handler
from daemon.ui.views import listed

if TYPE_CHECKING:
    from daemon.ui.pages import Console


class ApprovalPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def handlers(self) -> dict[str, Handler]:
        return {"uiApprovals": self.listing}

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        daemon = self.console.daemon
        section = await listed(daemon, "listApprovals", "approvals")
        # One read of the open incidents for all of them (a waiting step's incident is open).
        incidents = {i.id: i for i in await daemon.store.open_incidents()}
        waiting: list[dict[str, Any]] = sorted(section.items, key=lambda a: a["asked_at"])
        context = {
            "session": session,
            "approvals": [a | {"about": incidents.get(a["incident"])} for a in waiting],
            "error": section.error,
        }
        return self.console.page(request, "approvals.html", context)
