"""The HTTP interface: health, readiness, Prometheus metrics, and the /api/v1 routes of
daemon/api_operator.py (incidents, approvals, silences, rules, checks) and
daemon/api_intake.py (alerts pushed by other systems)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from daemon.alerts import Alert
from daemon.clock import Clock
from daemon.store import Store

if TYPE_CHECKING:
    from daemon.engine import Engine
    from daemon.pipeline import Pipeline
    from daemon.scheduler import Scheduler

MAX_BODY = 1024 * 1024


class DaemonView(Protocol):
    """What the API reads from, and steers in, the running daemon."""

    store: Store
    registry: CollectorRegistry
    clock: Clock
    engine: Engine
    pipeline: Pipeline
    scheduler: Scheduler

    def ready(self) -> tuple[bool, str]: ...

    async def intake(self, alerts: list[Alert]) -> int:
        """Feed alerts to the engine; returns how many matched at least one rule."""
        ...


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
    from daemon.api_intake import intake_routes
    from daemon.api_operator import operator_routes

    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY)
    health = Health(daemon)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_routes(operator_routes(daemon))
    app.router.add_routes(intake_routes(daemon))
    return app


class Health:
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
