"""The HTTP interface: health, readiness, Prometheus metrics and the incident API."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, ValidationError

from daemon.alerts import Alert, AlertmanagerWebhook
from daemon.approvals import Decision
from daemon.models import IncidentStatus
from daemon.store import Store
from daemon.units import StrictModel

MAX_LIMIT = 1000


class DaemonView(Protocol):
    """What the API reads from, and steers in, the running daemon."""

    store: Store
    registry: CollectorRegistry

    def ready(self) -> tuple[bool, str]: ...

    def pending_approvals(self) -> list[dict[str, Any]]: ...

    def decide(self, incident_id: str, decision: Decision) -> bool: ...

    def has_rule(self, rule: str) -> bool: ...

    async def reset_circuit(self, rule: str) -> bool: ...

    async def intake(self, alerts: list[Alert]) -> int:
        """Feed alerts to the engine; returns how many matched at least one rule."""
        ...


class DecisionBody(StrictModel):
    """Who decides, and why: both land on the incident's timeline."""

    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body as `model`, or a 4xx with a JSON reason naming the field."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="expected Content-Type: application/json")
    try:
        data = json.loads(await request.read())
    except ValueError:
        raise web.HTTPBadRequest(reason="body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise web.HTTPBadRequest(reason=f"{where}: {first['msg']}") from None


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
    app.router.add_post("/api/v1/incidents/{id}/approve", handlers.approve)
    app.router.add_post("/api/v1/incidents/{id}/reject", handlers.reject)
    app.router.add_get("/api/v1/approvals", handlers.list_approvals)
    app.router.add_post("/api/v1/rules/{rule}/reset", handlers.reset_circuit)
    app.router.add_post("/api/v1/alerts", handlers.alertmanager)
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

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, approved=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._decide(request, approved=False)

    async def _decide(self, request: web.Request, *, approved: bool) -> web.Response:
        incident_id = request.match_info["id"]
        body = await read_json(request, DecisionBody)
        if not self.daemon.decide(incident_id, Decision(approved, body.by, body.reason)):
            return json_error(404, f"incident {incident_id!r} has no step waiting for approval")
        return web.json_response({"incident": incident_id, "approved": approved, "by": body.by})

    async def list_approvals(self, request: web.Request) -> web.Response:
        return web.json_response({"approvals": self.daemon.pending_approvals()})

    async def reset_circuit(self, request: web.Request) -> web.Response:
        rule = request.match_info["rule"]
        if not self.daemon.has_rule(rule):
            return json_error(404, f"no rule {rule!r}")
        was_open = await self.daemon.reset_circuit(rule)
        return web.json_response({"rule": rule, "was_open": was_open})

    async def alertmanager(self, request: web.Request) -> web.Response:
        """The Alertmanager webhook (version 4; Grafana's superset too)."""
        body = await read_json(request, AlertmanagerWebhook)
        alerts = body.to_alerts()
        matched = await self.daemon.intake(alerts)
        return web.json_response({"received": len(alerts), "matched": matched})
