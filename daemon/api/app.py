"""The HTTP interface: health, readiness, Prometheus metrics, and the /api/v1 routes of
daemon/api_operator.py (incidents, approvals, silences, rules, checks) and
daemon/api_intake.py (alerts pushed by other systems).

Every request passes, outermost first: a count by route template and status class, the
rewriting of every error (and any unexpected exception) as JSON, and daemon/auth.py's guard
(rate limit, body size, bearer token and scope). Before that, daemon/servers.py bounds the
connections and answers requests too malformed to reach the app.

JSON is strict both ways: a body with NaN, Infinity or a number beyond a double's range is
refused, and an answer that would hold one is an internal error rather than invalid JSON."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import BaseModel, ValidationError

from daemon.api.auth import Guard, route_of, too_large
from daemon.api.servers import HTTP_LIMITS, HttpLimits
from daemon.config.document import RunbookConfig
from daemon.config.settings import ApiSettings
from daemon.core.clock import Clock
from daemon.engine.alerts import Alert
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Store

if TYPE_CHECKING:
    from daemon.engine.engine import Engine
    from daemon.pipeline.runner import Pipeline
    from daemon.runtime.scheduler import Scheduler

log = structlog.get_logger("runbookd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Headers an error answer keeps when it is rewritten as JSON.
ERROR_HEADERS = ("WWW-Authenticate", "Retry-After", "Allow")
# NaN and the infinities are not JSON (RFC 8259): never written, whatever a store holds.
strict_dumps = functools.partial(json.dumps, allow_nan=False)


class DaemonView(Protocol):
    """What the API reads from, and steers in, the running daemon."""

    config: RunbookConfig
    store: Store
    registry: CollectorRegistry
    metrics: Metrics
    clock: Clock
    engine: Engine
    pipeline: Pipeline
    scheduler: Scheduler

    config_hash: str
    reload_problems: list[str]

    def ready(self) -> tuple[bool, str]: ...

    def health(self) -> tuple[bool, str]:
        """(alive, why not): not alive once a core task died."""
        ...

    def first_round(self) -> tuple[int, int]:
        """(checks that have run at least once, checks configured)."""
        ...

    async def reload_announced(self) -> bool:
        """Reload the config file (systemd is told, as for SIGHUP); False if refused."""
        ...

    async def intake(self, alerts: list[Alert]) -> int:
        """Feed alerts to the engine; returns how many matched at least one rule."""
        ...


M = TypeVar("M", bound=BaseModel)


class HTTPClientClosedRequest(web.HTTPClientError):
    """The client went away before its request was whole (nginx's 499): its fault, not ours,
    counted as a 4xx. Nobody reads the answer."""

    status_code = 499


async def read_body(request: web.Request) -> bytes:
    """The raw body, at most the app's max_body (aiohttp counts as it reads chunked bodies),
    arrived within the body timeout."""
    limits = request.app.get(HTTP_LIMITS) or HttpLimits()
    try:
        async with asyncio.timeout(limits.body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.client_max_size) from None
    except TimeoutError:
        reason = f"body not received within {limits.body_timeout:g}s"
        raise web.HTTPRequestTimeout(reason=reason) from None
    except ConnectionError:  # the client closed or reset the connection mid-body
        reason = "the client closed the connection before the body was complete"
        raise HTTPClientClosedRequest(reason=reason) from None
    except RequestPayloadError:  # broken chunked framing or Content-Encoding
        raise web.HTTPBadRequest(reason="body framing or encoding is malformed") from None


def require_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="expected Content-Type: application/json")


NOT_FINITE = "body: NaN, Infinity and numbers beyond ±1.79e308 are not JSON numbers we accept"
# Every digit as 0, E as e: a number beyond a double (10^309) has an exponent of 3 digits
# ("0e000", "0e+000") or, with at most 99, an integer part of 200 digits or more. Cheap to
# test (a few ms for a MiB, a tenth of validating it); only a body that may hold one is parsed
# again with the exact checks.
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_MAX_INT_DIGITS = len(str(int(sys.float_info.max)))


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf
        raise _NotFinite(text)
    return value


def _finite_int(text: str) -> int:
    # Checked on the text first: int() of a long digit string is slow, and refused at 4300.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or abs(value := int(text)) > sys.float_info.max:
        raise _NotFinite(text)
    return value


def _strict_loads(body: bytes | str) -> Any:
    return json.loads(
        body,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        parse_int=_finite_int,
    )


def parse_json(body: bytes) -> Any:
    """A JSON body, every number in it finite, or 400."""
    try:
        return _strict_loads(body)
    except _NotFinite:
        raise web.HTTPBadRequest(reason=NOT_FINITE) from None
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise web.HTTPBadRequest(reason="body is not valid JSON") from None


def _may_not_be_finite(body: bytes) -> bool:
    if b"NaN" in body or b"Infinity" in body:
        return True
    shape = body.translate(_NUMBER_SHAPE)
    return b"0e000" in shape or b"0e+000" in shape or b"0" * 200 in shape


def refuse_non_finite(body: bytes) -> None:
    """400 if `body` holds NaN, an infinity or a number beyond a double; fast for the others."""
    if _may_not_be_finite(body):
        parse_json(body)


def _printable(text: str) -> str:
    # Field names come from the caller; a reason must stay one plain line.
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


async def read_json(request: web.Request, model: type[M]) -> M:
    """The request body as `model`, or a 4xx with a JSON reason naming the field."""
    require_json(request)
    body = await read_body(request)
    refuse_non_finite(body)
    return parse_model(body, model)


def parse_model(body: bytes, model: type[M]) -> M:
    """A body already read and checked for non-finite numbers, as `model`, or 400 naming the
    field."""
    try:
        # Parsed and validated in one pass by pydantic-core: json.loads and validating the
        # dicts it built took a tenth of the daemon's CPU under a stream of webhooks.
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise web.HTTPBadRequest(reason="body is not valid JSON") from None
        where = _printable(".".join(str(p) for p in first["loc"])) or "body"
        raise web.HTTPBadRequest(reason=f"{where}: {first['msg']}") from None


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`web.json_response` that refuses to write NaN or an infinity (ValueError: a 500)."""
    return web.json_response(data, status=status, headers=headers, dumps=strict_dumps)


def json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": reason}, status=status, headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON with a reason, never an HTML page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {name: exc.headers[name] for name in ERROR_HEADERS if name in exc.headers}
        return json_error(exc.status, exc.reason, headers)
    except Exception:
        # A bug, or a store gone away: the caller learns nothing of the internals, the log
        # keeps the traceback, and the daemon goes on serving.
        log.exception("api request failed", method=request.method, route=route_of(request))
        return json_error(500, "internal error")


def count_requests(metrics: Metrics) -> Middleware:
    def count(request: web.Request, status: int) -> None:
        metrics.api_requests.labels(route_of(request), f"{status // 100}xx").inc()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects: errors_as_json answers the rest
            count(request, exc.status)
            raise
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
    from daemon.api.intake import intake_routes
    from daemon.api.operator import operator_routes

    settings = daemon.config.runbookd.api
    guard = Guard.from_settings(settings, monotonic)
    middlewares = [count_requests(daemon.metrics), errors_as_json, guard.middleware]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body)
    app[HTTP_LIMITS] = limits or http_limits(settings)
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
