"""The HTTP interface: health, readiness, Prometheus metrics and the incident API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from daemon.models import IncidentStatus
from daemon.store import Store

MAX_LIMIT = 1000


class DaemonView(Protocol):
    """What the API reads from the running daemon."""

    store: Store
    registry: CollectorRegistry

    def ready(self) -> tuple[bool, str]: ...


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error answer is JSON with a reason, never an HTML page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)


def build_app(daemon: DaemonView) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=1024 * 1024)
    handlers = Handlers(daemon)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/api/v1/incidents", handlers.list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", handlers.get_incident)
    return app


class Handlers:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    async def healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop is turning.
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, why = self.daemon.ready()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "reason": why},
            status=200 if ready else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.daemon.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_incidents(self, request: web.Request) -> web.Response:
        query = request.query
        status: IncidentStatus | None = None
        if "status" in query:
            try:
                status = IncidentStatus(query["status"])
            except ValueError:
                choices = ", ".join(s.value for s in IncidentStatus)
                return json_error(400, f"status: must be one of {choices}")
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return json_error(400, "limit: not an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return json_error(400, f"limit: must be between 1 and {MAX_LIMIT}")
        incidents = await self.daemon.store.list_incidents(
            status=status, rule=query.get("rule"), limit=limit
        )
        items: list[dict[str, Any]] = [i.to_json(with_timeline=False) for i in incidents]
        return web.json_response({"incidents": items})

    async def get_incident(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        incident = await self.daemon.store.get_incident(incident_id)
        if incident is None:
            return json_error(404, f"no incident {incident_id!r}")
        return web.json_response(incident.to_json())
