"""The HTTP interface: health, readiness, Prometheus metrics, and the /api/v1 routes of
operator.py (incidents, approvals, silences, rules, checks, jobs), intake.py (alerts pushed by
other systems) and deploys.py (deploys, Vercel's webhooks), and the console under /ui/
(daemon/ui), all reaching the daemon through port.py only. What only the leader of several
replicas can do goes through acts.py, which hands it over from a standby.

Every request passes one middleware: auth.py's guard (rate limit, body size, bearer token and
scope), then the route; every error (and any unexpected exception) rewritten as JSON, and the
answer counted by route template and status class. Before that, servers.py
bounds the connections and answers requests too malformed to reach the app. Bodies are strict
JSON both ways (bodies.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, Counter

from daemon.api.auth import Guard, route_of
from daemon.api.bodies import json_error, json_response
from daemon.api.deploys import deploy_handlers
from daemon.api.intake import intake_handlers
from daemon.api.operator import operator_handlers
from daemon.api.port import DaemonView
from daemon.api.procedures import procedure_handlers
from daemon.api.routes import UI_OPERATIONS, bind
from daemon.api.servers import HTTP_LIMITS, HttpLimits
from daemon.config.settings import ApiSettings
from daemon.runtime.metrics import Metrics

log = structlog.get_logger("runbookd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Headers an error answer keeps when it is rewritten as JSON.
ERROR_HEADERS = ("WWW-Authenticate", "Retry-After", "Allow")


def answers_counted_as_json(metrics: Metrics, guard: Guard) -> Middleware:
    """The guard (`Guard.admit`: rate limit, body size, bearer token and scope), then the
    route; every error answer is JSON with a reason, never an HTML page or a traceback; every
    answer is counted by route template and status class. One middleware for all three: each
    layer costs every request a coroutine and aiohttp's wrapper around it."""
    # The counter's child per label pair: labels() takes a lock and checks its arguments.
    counters: dict[tuple[str, int], Counter] = {}

    def count(request: web.Request, status: int) -> None:
        key = (route_of(request), status // 100)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = metrics.api_requests.labels(key[0], f"{key[1]}xx")
        counter.inc()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            guard.admit(request)
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect
                count(request, exc.status)
                raise
            headers = {name: exc.headers[name] for name in ERROR_HEADERS if name in exc.headers}
            response = json_error(exc.status, exc.reason, headers)
        except Exception:
            # A bug, or a store gone away: the caller learns nothing of the internals, the log
            # keeps the traceback, and the daemon goes on serving.
            log.exception("api request failed", method=request.method, route=route_of(request))
            response = json_error(500, "internal error")
        count(request, response.status)
        return response

    return middleware


def http_limits(settings: ApiSettings) -> HttpLimits:
    """The connection limits under runbookd.api."""
    return HttpLimits(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        idle_timeout=settings.idle_timeout,
        max_connections=settings.max_connections,
    )


def build_app(
    daemon: DaemonView,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    limits: HttpLimits | None = None,
) -> web.Application:
    """The HTTP app; `monotonic` is the rate limiter's time source (tests move it), `limits`
    replace runbookd.api's connection limits (tests shorten them)."""
    settings = daemon.config.runbookd.api
    guard = Guard.from_settings(settings, monotonic, lambda: daemon.config.runbookd.api.tokens)
    middlewares = [answers_counted_as_json(daemon.metrics, guard)]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body)
    app[HTTP_LIMITS] = limits or http_limits(settings)
    health = Health(daemon)
    handlers: dict[str, Handler] = {
        "healthz": health.healthz,
        "readyz": health.readyz,
        "metrics": health.metrics,
    }
    handlers |= operator_handlers(daemon) | intake_handlers(daemon) | deploy_handlers(daemon)
    handlers |= procedure_handlers(daemon) | lazy_console(daemon)
    app.router.add_routes(bind(handlers))
    return app


def lazy_console(daemon: DaemonView) -> dict[str, Handler]:
    """The console's handlers (routes.UI_OPERATIONS), its modules and Jinja2 imported on the
    first request to one: a daemon nobody browses does not carry them."""
    loaded: dict[str, Handler] = {}

    def handler(operation_id: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not loaded:
                from daemon.ui.pages import console_handlers

                loaded.update(console_handlers(daemon))
            return await loaded[operation_id](request)

        return handle

    return {op.operation_id: handler(op.operation_id) for op in UI_OPERATIONS}


class Health:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    async def healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop is turning; a core task that died (the
        # scheduler, say) means it turns for nothing.
        alive, why = self.daemon.health()
        if alive:
            return json_response({"status": "ok"})
        return json_response({"status": "failed", "reason": why}, status=503)

    async def readyz(self, request: web.Request) -> web.Response:
        ready, why = self.daemon.ready()
        ran, checks = self.daemon.first_round()
        body = {
            "status": "ready" if ready else "not ready",
            "reason": why,
            # single: one daemon on its own store; leader or standby among replicas.
            "role": self.daemon.role(),
            # Readiness does not wait for the first round; its progress, for people and scripts.
            "checks": checks,
            "checks_run": ran,
        }
        return json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        # Not generate_latest(registry): the per-check families are rendered in slices,
        # letting the scheduler run in between (daemon/metrics.py).
        body = await self.daemon.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
