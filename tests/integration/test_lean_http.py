"""The lean HTTP client against real servers on loopback: aiohttp's, and raw asyncio servers
that answer exactly the bytes a test gives (chunked, close-delimited, oversized, slow, closed
mid-keep-alive, malformed), and TLS with a self-signed CA from trustme."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
import trustme
from aiohttp import web

from checks.base import CheckContext
from checks.http import HttpCheck, HttpCheckConfig
from daemon.clients.lean_http import (
    BodyIncomplete,
    ConnectFailed,
    LeanHttpClient,
    MalformedResponse,
    ServerDisconnected,
    prepare,
)
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.utils import free_port, serve, wait_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class RawServer:
    """What a raw server saw: the connections it accepted, the request heads it read, and
    whether each connection was closed by the client."""

    port: int
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    client_closed: list[bool] = field(default_factory=list)
    got_head: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def read_head(reader: asyncio.StreamReader, seen: RawServer) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    seen.heads.append(head)
    seen.got_head.set()
    return head


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    """`handler(reader, writer, n)` serves the n-th connection (from 0); then the server waits
    for the client's end of it (recorded in `client_closed`)."""
    seen = RawServer(port=0)
    tasks: set[asyncio.Task[None]] = set()

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = seen.connections
        seen.connections += 1
        seen.client_closed.append(False)
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer, index)
            if not writer.is_closing():
                await reader.read()  # until the client closes
                seen.client_closed[index] = True
        except (ConnectionError, asyncio.IncompleteReadError):
            seen.client_closed[index] = True
        except asyncio.CancelledError:  # the server stops: asyncio's streams log a cancelled task
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    seen.port = server.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def raw(handler: Callable[[RawServer], Handler]) -> AsyncIterator[RawServer]:
    """A raw server whose handler knows what the server saw."""
    holder: list[RawServer] = []

    async def bound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await handler(holder[0])(reader, writer, n)

    async with raw_server(bound) as seen:
        holder.append(seen)
        yield seen


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def replies(*responses: bytes) -> Callable[[RawServer], Handler]:
    def make(seen: RawServer) -> Handler:
        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
        ) -> None:
            for response in responses:
                await read_head(reader, seen)
                writer.write(response)
                await writer.drain()

        return handler

    return make


@pytest.fixture
async def client() -> AsyncIterator[LeanHttpClient]:
    lean = LeanHttpClient()
    try:
        yield lean
    finally:
        await lean.close()
    assert lean.open_connections() == 0


# -- against aiohttp's server ---------------------------------------------------------------------


def _app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"host": request.headers["Host"], "token": request.headers.get("X-Token")}
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b'{"status": "ok"}')
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/health")

    async def peer(request: web.Request) -> web.Response:
        assert request.transport is not None
        return web.Response(text=str(request.transport.get_extra_info("peername")[1]))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/moved", moved)
    app.router.add_get("/peer", peer)
    return app


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    async with serve(_app()) as url:
        yield url


async def test_get_sends_host_and_headers_and_reuses_one_connection(
    client: LeanHttpClient, app_url: str
) -> None:
    answer = await client.get(f"{app_url}/health", headers={"X-Token": "abc"}, timeout=5)
    host = app_url.removeprefix("http://")
    assert (answer.status, answer.body) == (200, b'{"host": "%s", "token": "abc"}' % host.encode())
    assert answer.header("content-type") == "application/json; charset=utf-8"
    ports = {(await client.get(f"{app_url}/peer", timeout=5)).body for _ in range(5)}
    assert len(ports) == 1  # one kept-alive connection served them all
    assert client.open_connections() == 1


async def test_chunked_and_gzip_bodies(client: LeanHttpClient, app_url: str) -> None:
    assert (await client.get(f"{app_url}/chunked", timeout=5)).body == b"one,two,three"
    assert (await client.get(f"{app_url}/gzip", timeout=5)).body == b'{"status": "ok"}'


async def test_head_then_get_on_the_same_connection(client: LeanHttpClient, app_url: str) -> None:
    head = await client.head(f"{app_url}/health", timeout=5)
    assert (head.status, head.body) == (200, None)
    assert int(head.header("content-length") or 0) > 0  # a body it does not send
    assert (await client.get(f"{app_url}/health", timeout=5)).status == 200
    assert client.open_connections() == 1


async def test_without_headers_or_body_only_the_status_comes_on_the_same_connection(
    client: LeanHttpClient, app_url: str
) -> None:
    """What the http check asks when it reads no body: the status alone; the connection
    switches between collecting header fields and not, request by request."""
    for method in ("GET", "HEAD", "GET"):
        request = prepare(method, f"{app_url}/health")  # head and body in one write
        assert request is not None
        bare = await client.send(request, timeout=5, read_body=False, read_headers=False)
        assert (bare.status, bare.headers, bare.body) == (200, [], None)
        full = await client.get(f"{app_url}/chunked", timeout=5)
        assert (full.body, full.header("transfer-encoding")) == (b"one,two,three", "chunked")
    assert client.open_connections() == 1


async def test_a_redirect_is_returned_not_followed(client: LeanHttpClient, app_url: str) -> None:
    answer = await client.get(f"{app_url}/moved", timeout=5)
    assert (answer.status, answer.header("location")) == (301, "/health")


# -- raw servers: framing -------------------------------------------------------------------------


async def test_raw_chunked_with_extensions_and_trailers(client: LeanHttpClient) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    async with raw(replies(response, response)) as server:
        for _ in range(2):
            assert (await client.get(server.url, timeout=5)).body == b"hello world"
    assert server.connections == 1


async def test_a_close_delimited_body(client: LeanHttpClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as server:
        assert (await client.get(server.url, timeout=5)).body == b"until the end"
        assert (await client.get(server.url, timeout=5)).body == b"until the end"
    assert server.connections == 2  # not reused after a close


async def test_an_informational_response_is_skipped(client: LeanHttpClient) -> None:
    response = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + ok(b"final")
    async with raw(replies(response)) as server:
        answer = await client.get(server.url, timeout=5)
    assert (answer.status, answer.body, answer.header("link")) == (200, b"final", None)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(ok(b"x" * 2000), id="content-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e8\r\n"
            + b"x" * 1000
            + b"\r\n"
            + b"3e8\r\n"
            + b"x" * 1000
            + b"\r\n0\r\n\r\n",
            id="chunked",
        ),
    ],
)
async def test_a_body_over_the_limit_is_cut_and_the_connection_closed(
    client: LeanHttpClient, response: bytes
) -> None:
    async with raw(replies(response, response)) as server:
        answer = await client.get(server.url, timeout=5, body_limit=1500)
        assert (answer.status, answer.body, answer.oversized) == (200, None, True)
        fits = await client.get(server.url, timeout=5, body_limit=5000)
        assert fits.body == b"x" * 2000
    assert server.connections == 2
    assert server.client_closed[0]


async def test_a_gzip_body_over_the_limit_once_decoded(client: LeanHttpClient) -> None:
    zipped = gzip.compress(b"x" * 5000)
    response = ok(zipped, b"Content-Encoding: gzip\r\n")
    async with raw(replies(response)) as server:
        answer = await client.get(server.url, timeout=5, body_limit=4000)
    assert (answer.body, answer.oversized) == (None, True)


async def test_a_truncated_gzip_body_is_incomplete(client: LeanHttpClient) -> None:
    response = ok(gzip.compress(b"x" * 5000)[:-8], b"Content-Encoding: gzip\r\n")
    async with raw(replies(response)) as server:
        with pytest.raises(BodyIncomplete, match="response body incomplete"):
            await client.get(server.url, timeout=5)


# -- raw servers: time and closes -----------------------------------------------------------------


def slow_body(seen: RawServer) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        await writer.drain()
        await reader.read()  # the rest never comes: wait for the client to give up

    return handler


async def test_a_slow_body_times_out_and_closes_the_connection(client: LeanHttpClient) -> None:
    async with raw(slow_body) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.get(server.url, timeout=0.2)
        assert 0.19 <= loop.time() - started < 2
        assert client.open_connections() == 0
        await wait_for(lambda: server.client_closed == [True], within=5)


def fast_then_stalled(seen: RawServer) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_head(reader, seen)
        writer.write(ok(b"fast"))
        await read_head(reader, seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
        await reader.read()

    return handler


@pytest.mark.parametrize(("first", "second"), [(0.1, 0.4), (5.0, 0.2)])
async def test_each_request_on_a_connection_times_out_at_its_own_deadline(
    client: LeanHttpClient, first: float, second: float
) -> None:
    """The connection's timer, armed for the first request, neither ends the second early
    (a later deadline) nor late (an earlier one)."""
    async with raw(fast_then_stalled) as server:
        assert (await client.get(server.url, timeout=first)).body == b"fast"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.get(server.url, timeout=second)
        assert second - 0.01 <= loop.time() - started < second + 0.5
    assert server.connections == 1


async def test_without_the_body_the_head_answers_and_the_rest_is_bounded(
    client: LeanHttpClient,
) -> None:
    async with raw(slow_body) as server:
        request = prepare("GET", server.url)
        assert request is not None
        answer = await client.send(request, timeout=0.2, read_body=False)
        assert (answer.status, answer.body) == (200, None)
        assert client.open_connections() == 1  # reading the rest of the body
        # The body does not come within the request's deadline: the connection is closed.
        await wait_for(lambda: server.client_closed == [True], within=5)
        assert client.open_connections() == 0


async def test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one(
    client: LeanHttpClient,
) -> None:
    def closing_second(seen: RawServer) -> Handler:
        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
        ) -> None:
            await read_head(reader, seen)
            writer.write(ok(b"first"))
            await writer.drain()
            if n == 0:  # the second request finds the connection closed, unanswered
                await read_head(reader, seen)
                writer.close()

        return handler

    async with raw(closing_second) as server:
        assert (await client.get(server.url, timeout=5)).body == b"first"
        assert (await client.get(server.url, timeout=5)).body == b"first"
    assert server.connections == 2
    assert len(server.heads) == 3


async def test_no_retry_on_a_new_connection_nor_after_part_of_an_answer(
    client: LeanHttpClient,
) -> None:
    def closes(seen: RawServer) -> Handler:
        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
        ) -> None:
            await read_head(reader, seen)
            if n == 1:
                writer.write(ok(b"kept"))
                await read_head(reader, seen)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
                await writer.drain()
            writer.close()

        return handler

    async with raw(closes) as server:
        # A fresh connection closed unanswered: not retried.
        with pytest.raises(ServerDisconnected, match="server disconnected"):
            await client.get(server.url, timeout=5)
        assert server.connections == 1
        assert (await client.get(server.url, timeout=5)).body == b"kept"
        # Part of the answer came: the server saw the request, so no second try.
        with pytest.raises(ServerDisconnected) as caught:
            await client.get(server.url, timeout=5)
        assert not caught.value.unanswered
    assert server.connections == 2


async def test_idle_connections_past_the_keepalive_timeout_are_closed(app_url: str) -> None:
    lean = LeanHttpClient(keepalive_timeout=0.05)
    try:
        async with raw(replies(ok(b"a"))) as gone:
            assert (await lean.get(gone.url, timeout=5)).body == b"a"
            assert lean.open_connections() == 1
            await asyncio.sleep(0.1)  # longer than the keep-alive timeout (a lower bound only)
            # A request to another server closes the stale one (a check a reload removed).
            assert (await lean.get(f"{app_url}/health", timeout=5)).status == 200
            assert lean.open_connections() == 1
            await wait_for(lambda: gone.client_closed == [True], within=5)
    finally:
        await lean.close()


async def test_a_cancelled_request_closes_its_connection(client: LeanHttpClient) -> None:
    async with raw(slow_body) as server:
        task = asyncio.create_task(client.get(server.url, timeout=5))
        await asyncio.wait_for(server.got_head.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.open_connections() == 0
        await wait_for(lambda: server.client_closed == [True], within=5)
        assert server.client_closed == [True]


async def test_connection_refused(client: LeanHttpClient) -> None:
    with pytest.raises(ConnectFailed, match=r"^connection refused$"):
        await client.get(f"http://127.0.0.1:{free_port()}/", timeout=5)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed response: invalid status line"),
        (b"SMTP ready\r\n\r\n", "malformed response: invalid status line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
            "malformed response: invalid character in content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "malformed response: invalid character in chunk size",
        ),
    ],
)
async def test_a_malformed_response_is_a_clear_error(
    client: LeanHttpClient, response: bytes, reason: str
) -> None:
    async with raw(replies(response)) as server:
        with pytest.raises(MalformedResponse) as caught:
            await client.get(server.url, timeout=5)
    assert caught.value.reason.lower() == reason
    assert client.open_connections() == 0


async def test_bytes_after_the_response_keep_the_connection_from_reuse(
    client: LeanHttpClient,
) -> None:
    async with raw(replies(ok(b"one") + b"HTTP/1.1 200 OK\r\n", ok(b"two"))) as server:
        assert (await client.get(server.url, timeout=5)).body == b"one"
        assert (await client.get(server.url, timeout=5)).body == b"one"
    assert server.connections == 2


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_server(ca: trustme.CA) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    runner = web.AppRunner(_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"https://localhost:{port}"
    finally:
        await runner.cleanup()


async def test_tls_verified_against_the_ca_given(ca: trustme.CA) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    lean = LeanHttpClient(ssl_context=trusting)
    async with tls_server(ca) as url:
        try:
            for _ in range(3):
                answer = await lean.get(f"{url}/health", timeout=5)
                assert answer.status == 200
            assert lean.open_connections() == 1
        finally:
            await lean.close()


async def test_tls_refuses_a_self_signed_certificate_by_default(
    client: LeanHttpClient, ca: trustme.CA
) -> None:
    async with tls_server(ca) as url:
        with pytest.raises(ConnectFailed, match=r"^TLS certificate verification failed$"):
            await client.get(f"{url}/health", timeout=5)


# -- through the http check -----------------------------------------------------------------------


def check(url: str, **fields: object) -> HttpCheck:
    config = HttpCheckConfig.model_validate({"type": "http", "url": url, **fields})
    return HttpCheck("web", config)


async def test_the_check_reports_lean_failures_as_it_reports_aiohttp_ones(
    client: LeanHttpClient, ca: trustme.CA
) -> None:
    async with aiohttp.ClientSession() as session:
        ctx = CheckContext(session, ManualClock(), client)
        async with raw(replies(b"HTTP/1.1 2x0 OK\r\n\r\n")) as server:
            result = await check(server.url).run(ctx)
        assert (result.status, result.reason) == (
            Status.CRITICAL,
            "malformed response: invalid status line",
        )
        async with tls_server(ca) as url:
            result = await check(f"{url}/health").run(ctx)
        assert result.reason == "TLS certificate verification failed"
        big = ok(b"x" * ((1 << 20) + 1))
        async with raw(replies(big)) as server:
            result = await check(server.url, expect_body="x").run(ctx)
        assert result.reason == "body larger than 1 MiB"


@pytest.mark.parametrize(
    ("method", "headers", "url"),
    [
        ("POST", {}, "http://127.0.0.1:8080/"),
        ("GET", {"Accept-Encoding": "br"}, "http://127.0.0.1:8080/"),
        ("GET", {"Connection": "close"}, "http://127.0.0.1:8080/"),
        ("GET", {}, "http://user:secret@127.0.0.1:8080/"),
    ],
)
def test_what_the_lean_client_does_not_do_stays_with_aiohttp(
    method: str, headers: dict[str, str], url: str
) -> None:
    assert prepare(method, url, headers) is None
    assert check(url, method=method, headers=headers)._lean is None


def test_the_request_bytes() -> None:
    request = prepare("GET", "http://[::1]:8080/health?c=1", {"X-Token": "abc"})
    assert request is not None
    assert request.data.split(b"\r\n")[:2] == [b"GET /health?c=1 HTTP/1.1", b"Host: [::1]:8080"]
    assert b"\r\nX-Token: abc\r\n" in request.data
    assert request.data.endswith(b"\r\n\r\n")
    default_port = prepare("HEAD", "https://example.com/")
    assert default_port is not None
    assert default_port.data.startswith(b"HEAD / HTTP/1.1\r\nHost: example.com\r\n")
    assert default_port.key == ("https", "example.com", 443)


# -- on uvloop, the daemon's loop -----------------------------------------------------------------

WITH_APP = [
    test_get_sends_host_and_headers_and_reuses_one_connection,
    test_chunked_and_gzip_bodies,
    test_head_then_get_on_the_same_connection,
    test_without_headers_or_body_only_the_status_comes_on_the_same_connection,
    test_a_redirect_is_returned_not_followed,
]
WITH_RAW = [
    lambda lean: test_each_request_on_a_connection_times_out_at_its_own_deadline(lean, 0.1, 0.4),
    lambda lean: test_each_request_on_a_connection_times_out_at_its_own_deadline(lean, 5.0, 0.2),
    test_raw_chunked_with_extensions_and_trailers,
    test_a_close_delimited_body,
    test_a_slow_body_times_out_and_closes_the_connection,
    test_without_the_body_the_head_answers_and_the_rest_is_bounded,
    test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one,
    test_no_retry_on_a_new_connection_nor_after_part_of_an_answer,
    test_a_cancelled_request_closes_its_connection,
    test_connection_refused,
]


def test_the_same_on_uvloop() -> None:
    """The daemon runs on uvloop, whose transports (TCP and TLS) are its own: the cases above
    once more on it, each with a client of its own."""
    uvloop = pytest.importorskip("uvloop")

    async def each(case: Callable[[LeanHttpClient], Awaitable[None]]) -> None:
        lean = LeanHttpClient()
        try:
            await case(lean)
        finally:
            await lean.close()
        assert lean.open_connections() == 0

    async def scenario() -> None:
        async with serve(_app()) as url:
            for with_app in WITH_APP:
                await each(lambda lean, case=with_app: case(lean, url))  # type: ignore[misc]
        for with_raw in WITH_RAW:
            await each(with_raw)
        await test_tls_verified_against_the_ca_given(trustme.CA())
        await each(
            lambda lean: test_tls_refuses_a_self_signed_certificate_by_default(lean, trustme.CA())
        )

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
