"""The `http` remediation and the shared retry policy, against a real server on loopback."""

from __future__ import annotations

import asyncio
import email.utils
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.http import HttpRemediation, HttpRemediationConfig
from remediations.retry import EXCERPT_CHARS
from tests.fakes import Received, make_incident, receive
from tests.utils import free_port, serve

TOKEN = "tok-5f0c9a7e1b2d4c6e8a0b"


class Endpoint:
    """Answers queued replies in order, then 200 {"accepted": true}; records every request."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: deque[web.Response] = deque()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def reply(
        self, status: int, text: str = "", count: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        for _ in range(count):
            self.replies.append(web.Response(status=status, text=text, headers=headers))

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(await receive(request))
        if self.replies:
            return self.replies.popleft()
        return web.json_response({"accepted": True})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
async def base_url(endpoint: Endpoint) -> AsyncIterator[str]:
    async with serve(endpoint.app) as url:
        yield url


def make(url: str, **config: Any) -> HttpRemediation:
    model = HttpRemediationConfig.model_validate({"type": "http", "url": url, **config})
    return HttpRemediation("webhook", model)


# --- templating -----------------------------------------------------------------------------


async def test_body_placeholders_insert_values_as_data(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    body = {
        "id": "{{ incident.id }}",
        "value": "{{incident.value}}",
        "threshold": "{{ incident.threshold }}",
        "opened_at": "{{ incident.opened_at }}",
        "text": "{{ incident.rule }} on {{ incident.check }}: {{ incident.value }} > "
        "{{ incident.threshold }}",
        "nested": [{"severity": "{{ incident.severity }}"}, 3, True, None],
        "literal": "{{ not closed",
    }
    result = await make(f"{base_url}/hook", body=body).execute(ctx, make_incident())

    assert result.ok
    [request] = endpoint.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {
        "id": "inc-20270115-0001",
        "value": 0.072,
        "threshold": 0.05,
        "opened_at": 1_800_000_000.0,
        "text": "high_error_rate on error_rate: 0.072 > 0.05",
        "nested": [{"severity": "critical"}, 3, True, None],
        "literal": "{{ not closed",
    }


async def test_hostile_incident_text_stays_a_plain_string(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    hostile = '"} , "x": 1 {{ incident.id }} {0} %s ${HOME}'
    body = {"summary": "{{ incident.summary }}", "line": "alert: {{ incident.summary }}"}
    incident = make_incident(summary=hostile)

    assert (await make(base_url, body=body).execute(ctx, incident)).ok

    assert endpoint.requests[0].body == {"summary": hostile, "line": f"alert: {hostile}"}


async def test_missing_trigger_value_becomes_null_or_empty(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    body = {"value": "{{ incident.value }}", "text": "value={{ incident.value }}"}
    await make(base_url, body=body).execute(ctx, make_incident(trigger={}))

    assert endpoint.requests[0].body == {"value": None, "text": "value="}


# --- request shape, auth, secrets ------------------------------------------------------------


async def test_method_headers_and_token_file(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str, tmp_path: Any
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    remediation = make(
        f"{base_url}/api/scale?key=query-secret",
        method="PUT",
        headers={"X-Runbook": "scale-out"},
        token_file=str(token_file),
        body={"replicas": 4},
    )

    result = await remediation.execute(ctx, make_incident())

    [request] = endpoint.requests
    assert request.method == "PUT"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["X-Runbook"] == "scale-out"
    assert request.body == {"replicas": 4}
    assert result.ok
    assert result.data == {
        "request": {
            "method": "PUT",
            "url": base_url,
            "headers": ["Authorization", "X-Runbook"],
            "has_body": True,
        },
        "status": 200,
        "response": '{"accepted": true}',
        "attempts": 1,
    }
    assert result.detail == f"PUT {base_url}: HTTP 200"
    for secret in (TOKEN, "query-secret", "/api/scale"):
        assert secret not in repr(result)


async def test_echoed_credentials_are_masked(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(400, f"bad request; you sent Bearer {TOKEN} and key k-123456")
    remediation = make(base_url, token=TOKEN, headers={"X-Api-Key": "k-123456"})

    result = await remediation.execute(ctx, make_incident())

    assert result.data["response"] == "bad request; you sent Bearer *** and key ***"
    assert TOKEN not in repr(result)


async def test_get_without_body(ctx: RemediationContext, endpoint: Endpoint, base_url: str) -> None:
    result = await make(base_url, method="GET").execute(ctx, make_incident())

    assert result.ok
    [request] = endpoint.requests
    assert request.method == "GET"
    assert request.body == ""
    assert "Content-Type" not in request.headers


async def test_response_excerpt_is_bounded(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(200, "x" * 100_000)

    result = await make(base_url).execute(ctx, make_incident())

    assert result.data["response"] == "x" * EXCERPT_CHARS + "…(truncated)"


# --- success and failure classification ------------------------------------------------------


async def test_expect_status(ctx: RemediationContext, endpoint: Endpoint, base_url: str) -> None:
    endpoint.reply(200)
    endpoint.reply(201)
    remediation = make(base_url, expect_status=[201])

    first = await remediation.execute(ctx, make_incident())
    second = await remediation.execute(ctx, make_incident())

    assert (first.ok, first.recoverable, first.data["status"]) == (False, False, 200)
    assert second.ok
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_not_retried(
    ctx: RemediationContext, clock: ManualClock, endpoint: Endpoint, base_url: str, status: int
) -> None:
    endpoint.reply(status, "nope", count=4)

    result = await make(base_url).execute(ctx, make_incident())

    assert len(endpoint.requests) == 1
    assert clock.slept == []
    assert not result.ok
    assert not result.recoverable
    assert result.data["status"] == status
    assert result.data["response"] == "nope"
    assert result.detail == f"POST {base_url}: HTTP {status}"


async def test_redirects_are_not_followed(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(302, headers={"Location": "http://elsewhere.invalid/steal"})

    result = await make(base_url, token=TOKEN).execute(ctx, make_incident())

    assert (result.ok, result.recoverable, result.data["status"]) == (False, False, 302)
    assert len(endpoint.requests) == 1


async def test_5xx_is_retried_with_exponential_backoff(
    ctx: RemediationContext, clock: ManualClock, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(500, count=1)
    endpoint.reply(502, count=1)
    endpoint.reply(503, count=1)

    result = await make(base_url).execute(ctx, make_incident())

    assert result.ok
    assert len(endpoint.requests) == 4
    assert clock.slept == [1.0, 2.0, 4.0]
    assert result.data["attempts"] == 4
    assert result.data["backoff_seconds"] == [1.0, 2.0, 4.0]


async def test_429_honours_retry_after_in_full(
    ctx: RemediationContext, clock: ManualClock, endpoint: Endpoint, base_url: str
) -> None:
    # 49 s from now, so 40 s from when it is read, after the first two waits (7 s + 2 s).
    later = email.utils.formatdate(clock.now() + 49, usegmt=True)
    endpoint.reply(429, headers={"Retry-After": "7"})
    endpoint.reply(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    endpoint.reply(429, headers={"Retry-After": later})

    result = await make(base_url, retry={"max_delay": "1m"}).execute(ctx, make_incident())

    assert result.ok
    # Seconds are waited in full; a past date falls back to our backoff; a date is waited for.
    assert clock.slept[:2] == [7.0, 2.0]
    assert 39.0 <= clock.slept[2] <= 40.0


async def test_a_retry_after_beyond_max_delay_is_left_to_the_caller(
    ctx: RemediationContext, clock: ManualClock, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(429, headers={"Retry-After": "600"})

    result = await make(base_url, retry={"max_delay": "1m"}).execute(ctx, make_incident())

    # Never asked again sooner than the provider said: the outbox waits the 600 s.
    assert len(endpoint.requests) == 1
    assert clock.slept == []
    assert (result.ok, result.recoverable, result.retry_after) == (False, True, 600.0)


async def test_exhausted_attempts_are_recoverable(
    ctx: RemediationContext, clock: ManualClock, endpoint: Endpoint, base_url: str
) -> None:
    endpoint.reply(503, "busy", count=10)

    result = await make(base_url, retry={"attempts": 3, "base_delay": "2s"}).execute(
        ctx, make_incident()
    )

    assert len(endpoint.requests) == 3
    assert clock.slept == [2.0, 4.0]
    assert not result.ok
    assert result.recoverable
    assert result.data["status"] == 503
    assert result.detail == f"POST {base_url}: gave up after 3 attempts, last: HTTP 503"


async def test_refused_connection_is_retried_then_recoverable(
    ctx: RemediationContext, clock: ManualClock
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"

    result = await make(url).execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert result.data["attempts"] == 4
    assert result.data["status"] is None
    assert result.data["error"].startswith("ClientConnectorError")
    assert clock.slept == [1.0, 2.0, 4.0]


async def test_timeout_is_retried_then_recoverable(
    ctx: RemediationContext, clock: ManualClock
) -> None:
    release = asyncio.Event()
    calls = 0

    async def hang(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", hang)
    async with serve(app) as url:
        try:
            remediation = make(url, timeout="100ms", retry={"attempts": 2})
            result = await remediation.execute(ctx, make_incident())
        finally:
            release.set()

    assert calls == 2
    assert (result.ok, result.recoverable) == (False, True)
    assert result.data["error"] == "timed out after 0.1s"
    assert clock.slept == [1.0]


async def test_garbage_response_is_retried_without_leaking_the_url(
    ctx: RemediationContext,
) -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"http://127.0.0.1:{port}/hooks/s3cr3t-path?key=s3cr3t-query"
        result = await make(url, retry={"attempts": 2}).execute(ctx, make_incident())
    finally:
        server.close()
        await server.wait_closed()

    assert (result.ok, result.recoverable, result.data["attempts"]) == (False, True, 2)
    assert result.data["error"].startswith("ClientResponseError: Bad status line")
    assert "s3cr3t" not in repr(result)


# --- resolve and side-effect flags ------------------------------------------------------------


async def test_resolve_posts_resolve_body_only_when_configured(
    ctx: RemediationContext, endpoint: Endpoint, base_url: str
) -> None:
    incident = make_incident()
    assert await make(base_url, method="PUT").resolve(ctx, incident) is None
    assert endpoint.requests == []

    remediation = make(base_url, method="PUT", resolve_body={"resolved": "{{ incident.id }}"})
    result = await remediation.resolve(ctx, incident)

    assert result is not None
    assert result.ok
    [request] = endpoint.requests
    assert (request.method, request.body) == ("POST", {"resolved": "inc-20270115-0001"})
