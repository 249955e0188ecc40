"""Starting aiohttp applications on a host and port, including "any free port" (0), behind
the connection limits that keep slow, idle or malformed clients from holding the daemon.

aiohttp's server closes idle keep-alive connections (`keepalive_timeout`) but waits without
bound for a request head sent a byte at a time, accepts connections until the process runs out
of file descriptors, and answers a malformed request with plain text that quotes it (a token in
a broken Authorization header, say) while logging a traceback. `GuardedHandler` adds a head
timeout and JSON errors that never echo the request; `GuardedServer` caps the connections.
aiohttp has no public hook for these: they read a little of its protocol's state (the queue of
parsed requests, whether one is being handled), which tests/integration/test_hostile_http.py pins.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

log = structlog.get_logger("runbookd.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long a client may take, and how many connections it may hold: the settings of the
    same names under `runbookd.api`, with these defaults. Tests use fractions of a second."""

    # From the first byte of a request, its line and headers must arrive within this.
    header_timeout: float = 10.0
    # A request body must arrive whole within this once its handler starts reading it.
    body_timeout: float = 30.0
    # A connection that sends no request for this long is closed (also a new one). Above Go's
    # 90 s keep-alive (Prometheus, Alertmanager), so they close first and never send on a
    # connection we are closing.
    idle_timeout: float = 120.0
    # Beyond this many open connections, the oldest one not in a request is closed for a new
    # one. Also at most half the process's file-descriptor limit: the rest is for checks,
    # remediations and the store.
    max_connections: int = 512


HTTP_LIMITS = web.AppKey("http_limits", HttpLimits)
"""Set on an app by its builder; `start_site` serves the app with these limits."""


def connection_cap(configured: int) -> int:
    """`configured`, or half the soft RLIMIT_NOFILE if that is lower (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft // 2:
        return configured
    return max(16, soft // 2)


# -- errors before a request reaches the app -----------------------------------------------------

# What a request the parser refused is told. Never the parser's own message: it quotes the
# offending bytes (a header value, a token).
PARSE_PROBLEMS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.BadHttpMethod, "malformed request line: unknown method"),
    (http_exceptions.BadStatusLine, "malformed request line: expected METHOD TARGET HTTP/1.x"),
    (http_exceptions.LineTooLong, "request line or header field too long"),
    (http_exceptions.InvalidURLError, "malformed request target"),
    (http_exceptions.InvalidHeader, "malformed header"),
    (http_exceptions.PayloadEncodingError, "malformed body framing or encoding"),
    (http_exceptions.HttpProcessingError, "malformed request: header syntax or body framing"),
)
# Failures that are the client's doing: logged in one line, without a traceback.
CLIENT_FAULTS = (http_exceptions.HttpProcessingError, RequestPayloadError, ConnectionError)


def parse_problem(exc: BaseException | None) -> str:
    for kind, reason in PARSE_PROBLEMS:
        if isinstance(exc, kind):
            return reason
    return "malformed request"


def raw_json_answer(status: int, reason: str) -> bytes:
    """A whole HTTP answer, for a client that never completed a request."""
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with a deadline on request heads and quiet, JSON
    answers to malformed requests."""

    def __init__(self, manager: web.Server, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits
        self._head_timer: asyncio.TimerHandle | None = None

    def between_requests(self) -> bool:
        """No request parsed and waiting, none being handled: bytes that arrive now are the
        head of the next request (or nothing has arrived: the connection is idle)."""
        return not self._messages and not self._request_in_progress

    def data_received(self, data: bytes) -> None:
        starting = bool(data) and self._head_timer is None and self.between_requests()
        super().data_received(data)
        if self.transport is None or not self.between_requests():
            self._stop_head_timer()  # the head is complete (or refused)
        elif starting:
            timeout = self.limits.header_timeout
            self._head_timer = self._loop.call_later(timeout, self._head_timed_out)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or not self.between_requests():
            return
        within = self.limits.header_timeout
        log.debug("request head not received in time: connection closed", within=within)
        reason = f"request line and headers not received within {within:g}s"
        self.transport.write(raw_json_answer(408, reason))
        self.force_close()  # the transport sends the answer, then closes

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse or hand to the app (`message`
        quotes the request: it is never used)."""
        if isinstance(exc, CLIENT_FAULTS) or status < 500:
            status = status if status < 500 else 400
            reason = parse_problem(exc)
            log.info("malformed http request", status=status, problem=reason, peer=request.remote)
        else:
            log.error("http request failed", status=status, exc_info=exc)
            reason = HTTPStatus(status).phrase.lower()
        if request.writer.output_size > 0:  # part of an answer is out: nothing more to say
            raise ConnectionError("an answer was partly sent")
        response = web.json_response({"error": reason}, status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's other error logs (a body that failed while being skipped, say): one line
        for a client's fault, a traceback for anything else."""
        exc = kw.get("exc_info")
        what = str(args[0]) if args else "error"
        if isinstance(exc, CLIENT_FAULTS):
            log.info("http connection closed on a client error", error=type(exc).__name__)
        elif isinstance(exc, BaseException):
            log.error("http server error", what=what, exc_info=exc)
        else:
            log.error("http server error", what=what)


class GuardedServer(web.Server):
    """aiohttp's connection manager, making `GuardedHandler`s and capping their number."""

    def __init__(self, base: web.Server, limits: HttpLimits) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **base._kwargs,
        )
        self.limits = limits
        self.cap = connection_cap(limits.max_connections)
        if self.cap < limits.max_connections:
            log.warning(
                "connection cap lowered to half the file-descriptor limit",
                configured=limits.max_connections,
                cap=self.cap,
            )
        self._full = False

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        open_ = [h for h, t in self._connections.items() if not t.is_closing()]
        if len(open_) <= self.cap:
            if self._full and len(open_) < self.cap * 0.9:
                self._full = False
                log.info("http connections below the cap again", cap=self.cap)
            return
        if not self._full:
            self._full = True
            log.warning("http connection cap reached: closing the oldest idle", cap=self.cap)
        # The oldest connection not in a request makes room, so a health check always gets
        # in. If every one is in a request, the new one is closed: each of those ends within
        # the body timeout (or its handler's own bound), so that does not last.
        victim = next((h for h in open_ if _waiting(h) and h is not handler), handler)
        victim.force_close()


def _waiting(handler: web.RequestHandler) -> bool:
    return isinstance(handler, GuardedHandler) and handler.between_requests()


class GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, limits: HttpLimits) -> None:
        super().__init__(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout,
            # A body the handler did not read is skipped for at most this long.
            lingering_time=min(10.0, limits.body_timeout),
        )
        self.limits = limits

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.limits)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app`; returns its runner (to clean up) and the port actually bound."""
    runner = GuardedRunner(app, app.get(HTTP_LIMITS) or HttpLimits())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:  # e.g. the port is taken: the app's cleanup hooks run all the same
        await runner.cleanup()
        raise
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or [])
    if not sockets:
        await runner.cleanup()
        raise OSError(f"nothing bound on {host}:{port}")
    bound: int = sockets[0].getsockname()[1]
    return runner, bound


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` on a free port for the duration; yields its base URL."""
    runner, port = await start_site(app, host, 0)
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
