"""send_json reading whole bodies (`max_body`), against a real server on loopback.

The excerpt, backoff and classification rules for every caller are in test_remediation_http.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from yarl import URL

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.retry import EXCERPT_CHARS, send_json
from tests.utils import serve

SECRET = "sk-0d9c8b7a6f5e4d3c2b1a"
LARGE = json.dumps({"items": [{"id": f"item_{i}", "note": "x" * 40} for i in range(200)]})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


class Server:
    """Answers queued replies in order, then 200 LARGE; records each request's query."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.replies: deque[web.Response] = deque()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def reply(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        self.replies.append(web.Response(status=status, text=text, headers=headers))

    async def _handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.replies:
            return self.replies.popleft()
        return web.Response(text=LARGE, content_type="application/json")


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
async def url(server: Server) -> AsyncIterator[str]:
    async with serve(server.app) as base:
        yield base


async def test_max_body_keeps_the_whole_body_and_the_excerpt(
    ctx: RemediationContext, url: str
) -> None:
    assert len(LARGE) > 5 * EXCERPT_CHARS

    outcome = await send_json(ctx, "GET", url, None, max_body=len(LARGE))

    assert outcome.ok
    assert outcome.text == LARGE
    assert outcome.json() == json.loads(LARGE)
    assert outcome.body == LARGE[:EXCERPT_CHARS] + "…(truncated)"
    assert outcome.as_data()["response"] == outcome.body


async def test_without_max_body_only_the_excerpt_is_kept(ctx: RemediationContext, url: str) -> None:
    outcome = await send_json(ctx, "GET", url, None)

    assert outcome.ok
    assert outcome.text == ""
    assert outcome.json() is None
    assert outcome.body == LARGE[:EXCERPT_CHARS] + "…(truncated)"


@pytest.mark.parametrize("status", [200, 503])
async def test_a_body_past_max_body_fails_and_is_not_retried(
    ctx: RemediationContext, clock: ManualClock, server: Server, url: str, status: int
) -> None:
    server.reply(status, LARGE)

    outcome = await send_json(ctx, "GET", url, None, max_body=len(LARGE) - 1)

    assert (outcome.ok, outcome.recoverable, outcome.attempts) == (False, False, 1)
    assert outcome.status == status
    assert outcome.error == "response too large"
    assert outcome.describe() == "response too large"
    assert outcome.json() is None
    assert outcome.body == LARGE[:EXCERPT_CHARS] + "…(truncated)"
    assert clock.slept == []


@pytest.mark.parametrize("text", ["", "not json {"])
async def test_json_is_none_for_an_empty_or_unparsable_body(
    ctx: RemediationContext, server: Server, url: str, text: str
) -> None:
    server.reply(200, text)

    outcome = await send_json(ctx, "GET", url, None, max_body=EXCERPT_CHARS)

    assert outcome.ok
    assert outcome.json() is None


async def test_secrets_are_masked_in_the_whole_body(
    ctx: RemediationContext, server: Server, url: str
) -> None:
    echoed = json.dumps({"error": {"code": "forbidden", "message": f"token {SECRET}" * 100}})
    server.reply(403, echoed)

    outcome = await send_json(ctx, "GET", url, None, max_body=len(echoed), redact_values=[SECRET])

    assert SECRET not in repr(outcome.json())
    assert SECRET not in outcome.text + outcome.body
    assert outcome.json()["error"]["message"].startswith("token ***")


async def test_a_url_with_query_parameters_is_sent_as_given(
    ctx: RemediationContext, server: Server, url: str
) -> None:
    target = URL(url).joinpath("v6", "deployments").with_query({"limit": "5", "q": "a b&c"})

    outcome = await send_json(ctx, "GET", target, None, max_body=len(LARGE))

    assert outcome.ok
    assert server.queries == [{"limit": "5", "q": "a b&c"}]


async def test_retry_after_is_honoured_when_reading_whole_bodies(
    ctx: RemediationContext, clock: ManualClock, server: Server, url: str
) -> None:
    server.reply(429, headers={"Retry-After": "7"})
    server.reply(503, '{"error": {"code": "busy"}}')

    outcome = await send_json(ctx, "GET", url, None, max_body=len(LARGE))

    assert outcome.ok
    assert outcome.attempts == 3
    assert clock.slept == [7.0, 2.0]
    assert outcome.json() == json.loads(LARGE)


async def test_a_429s_reset_time_is_its_wait_and_only_a_429s(
    ctx: RemediationContext, clock: ManualClock, server: Server, url: str
) -> None:
    """X-RateLimit-Reset (epoch seconds) is read when a 429 says nothing else; one already
    past, or on a 5xx (where it only reports the quota), leaves our own backoff."""
    now = clock.now()
    server.reply(429, headers={"X-RateLimit-Reset": f"{now + 12:.0f}"})
    server.reply(429, headers={"X-RateLimit-Reset": f"{now - 600:.0f}"})
    server.reply(503, headers={"X-RateLimit-Reset": f"{now + 3600:.0f}"})

    outcome = await send_json(ctx, "GET", url, None, max_body=len(LARGE))

    assert outcome.ok
    assert clock.slept == [12.0, 2.0, 4.0]


async def test_the_attempt_timeout_bounds_each_attempt_when_reading_whole_bodies(
    ctx: RemediationContext, clock: ManualClock
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        # Headers arrive at once; the body never finishes within the attempt timeout.
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"partial": ')
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/", hang)
    async with serve(app) as base:
        try:
            outcome = await send_json(
                ctx, "GET", base, None, attempt_timeout=0.1, attempts=2, max_body=len(LARGE)
            )
        finally:
            release.set()

    assert (outcome.ok, outcome.recoverable, outcome.attempts) == (False, True, 2)
    assert outcome.error == "timed out after 0.1s"
    assert outcome.json() is None
    assert clock.slept == [1.0]
