"""The console's checks page: every check, a page at a time, filtered by status or name,
trouble first or by name, each with its recent values plotted. The overview shows only the
first few in trouble order; with thousands of checks this page is where the rest are read."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

from daemon.api.check_query import ORDERS, STATUSES, CheckQuery
from daemon.api.routes import Handler
from daemon.ui.views import listed

if TYPE_CHECKING:
    from daemon.ui.pages import Console

PAGE = "/ui/checks"
PAGE_SIZE = 100


class CheckPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def handlers(self) -> dict[str, Handler]:
        return {"uiChecks": self.listing}

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        asked: dict[str, Any] = {k: v for k, v in request.query.items() if v != ""}
        asked |= {"limit": PAGE_SIZE, "history": True}
        try:
            query = CheckQuery.from_args(asked)
        except ValueError as exc:
            return self.console.refused(request, 400, str(exc))
        section = await listed(self.console.daemon, "listChecks", "checks", query.to_args())
        total = int(section.body.get("total", 0))
        context: dict[str, Any] = {
            "session": session,
            "query": query,
            "items": section.items,
            "body": section.body,
            "error": section.error,
            "statuses": STATUSES,
            "orders": ORDERS,
            "page_size": PAGE_SIZE,
            "prev_url": _page(query, query.offset - PAGE_SIZE) if query.offset > 0 else "",
            "next_url": _page(query, query.offset + PAGE_SIZE)
            if query.offset + PAGE_SIZE < total
            else "",
        }
        return self.console.page(request, "checks.html", context)


def _page(query: CheckQuery, offset: int) -> str:
    moved = replace(query, offset=max(offset, 0))
    params = {"order": moved.order, "offset": str(moved.offset)}
    if moved.status:
        params["status"] = moved.status
    if moved.match:
        params["match"] = moved.match
    return str(URL(PAGE).with_query(params))
