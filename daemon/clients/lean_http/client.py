"""The lean client: GET and HEAD over kept-alive connections, with a total deadline, a bounded
body, redirects returned as they are (never followed), and one retry on a fresh connection
when a kept-alive one turned out closed before a byte of the answer came."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from yarl import URL

from daemon.clients.lean_http.connection import Connection
from daemon.clients.lean_http.errors import LeanHttpError, ServerDisconnected
from daemon.clients.lean_http.pool import Pool
from daemon.clients.lean_http.wire import PoolKey, PreparedRequest, Response, prepare

DEFAULT_BODY_LIMIT = 1 << 20
# aiohttp's keepalive_timeout: an idle connection older than this is closed, not reused.
KEEPALIVE_TIMEOUT = 15.0


def default_ssl_context() -> ssl.SSLContext:
    """Verified TLS as aiohttp's default: the system's CAs, host names checked, HTTP/1.1
    offered by ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


class LeanHttpClient:
    """Open one at startup, share it, close it at shutdown. `max_idle_per_host` bounds the
    idle connections kept to each server; the connections in use are bounded by the callers
    (the scheduler's checks in flight)."""

    def __init__(
        self,
        *,
        max_idle_per_host: int = 256,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_idle = max_idle_per_host
        self._keepalive = keepalive_timeout
        self._ssl = ssl_context
        self._pools: dict[PoolKey, Pool] = {}
        self._closed = False
        self._next_sweep = 0.0

    async def send(
        self,
        request: PreparedRequest,
        *,
        # The deadline is one timer on the connection, cheaper per request than a caller's
        # asyncio.timeout (a task-level cancel scope for every check run).
        timeout: float,  # noqa: ASYNC109
        read_body: bool = True,
        read_headers: bool = True,
        body_limit: int = DEFAULT_BODY_LIMIT,
        connect_timeout: float | None = None,
    ) -> Response:
        """The response, within `timeout` seconds in all (connecting included). Without
        `read_body` it comes with the head and `body` is None; without `read_headers` (and
        `read_body`) its `headers` are not collected. A body over `body_limit` bytes gives
        `oversized` and no body. Raises LeanHttpError or TimeoutError."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout
        if now >= self._next_sweep:
            self._sweep(now)
        pool = self._pools.get(request.key) or self._pool(request, loop)
        conn = pool.take_idle()
        # Only a kept-alive connection may turn out closed by the server as the request went
        # out; a new one that closes unanswered is the server's answer.
        retry = conn is not None
        if conn is None:
            conn = await self._connect(pool, loop, deadline, connect_timeout)
        while True:
            waiter = conn.send(
                request,
                keep_body=read_body,
                limit=body_limit,
                deadline=deadline,
                headers=read_headers,
            )
            try:
                return await waiter
            except ServerDisconnected as exc:
                if not (retry and exc.unanswered):
                    raise
            except asyncio.CancelledError:
                conn.abort()  # the caller gave up mid-request: the connection's state is unknown
                raise
            # Once more, on a new connection (a GET or HEAD may be repeated), and only once.
            retry = False
            conn = await self._connect(pool, loop, deadline, connect_timeout)

    async def get(
        self,
        url: URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 - as send's
        body_limit: int = DEFAULT_BODY_LIMIT,
    ) -> Response:
        return await self.send(
            _prepared("GET", url, headers), timeout=timeout, body_limit=body_limit
        )

    async def head(
        self,
        url: URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 - as send's
    ) -> Response:
        return await self.send(_prepared("HEAD", url, headers), timeout=timeout, read_body=False)

    async def close(self) -> None:
        """Close every connection, idle or busy; requests in flight fail."""
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # the transports' close callbacks run

    def open_connections(self) -> int:
        return sum(pool.open_connections() for pool in self._pools.values())

    # -- inside --------------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Close the connections idle for longer than the keep-alive timeout, and forget the
        servers no request went to since (a check removed by a reload)."""
        self._next_sweep = now + self._keepalive
        for key, pool in list(self._pools.items()):
            pool.close_idle(older_than=now - self._keepalive)
            if not pool.open_connections():
                del self._pools[key]

    def _pool(self, request: PreparedRequest, loop: asyncio.AbstractEventLoop) -> Pool:
        if self._closed:
            raise RuntimeError("the lean HTTP client is closed")
        context = None
        if request.tls:
            if self._ssl is None:
                self._ssl = default_ssl_context()
            context = self._ssl
        pool = Pool(
            request.host,
            request.port,
            context,
            max_idle=self._max_idle,
            keepalive_timeout=self._keepalive,
            loop=loop,
        )
        self._pools[request.key] = pool
        return pool

    @staticmethod
    async def _connect(
        pool: Pool, loop: asyncio.AbstractEventLoop, deadline: float, connect_timeout: float | None
    ) -> Connection:
        if connect_timeout is not None:
            deadline = min(deadline, loop.time() + connect_timeout)
        async with asyncio.timeout_at(deadline):
            return await pool.connect()


def _prepared(method: str, url: URL | str, headers: Mapping[str, str] | None) -> PreparedRequest:
    request = prepare(method, url, headers)
    if request is None:
        raise LeanHttpError(f"not a request this client makes: {method} {URL(url).scheme}")
    return request
