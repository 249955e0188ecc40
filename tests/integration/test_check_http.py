from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from checks.base import CheckContext, CheckResult
from checks.http import HttpCheck, HttpCheckConfig
from daemon.clients.lean_http import LeanHttpClient
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.utils import free_port, serve_releasing

HEALTH = {"status": "ok", "checks": {"db": "up", "cache": "down"}, "replicas": [{"ok": True}]}


def _app(release: asyncio.Event) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response(HEALTH)

    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"status": "down"}, status=503)

    async def degraded(request: web.Request) -> web.Response:
        return web.json_response({"status": "degraded"})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="all systems go")

    async def version(request: web.Request) -> web.Response:
        build = {"number": 1234, "name": "v1.2.3", "flag": True, "huge": 10**400}
        return web.Response(text=json.dumps({"build": build}), content_type="application/json")

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def echo_header(request: web.Request) -> web.Response:
        return web.Response(text=f"token={request.headers.get('X-Token', '')}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(text="ok")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/degraded", degraded)
    app.router.add_get("/text", text)
    app.router.add_get("/version", version)
    app.router.add_get("/no-content", no_content)
    app.router.add_get("/header", echo_header)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hang", hang)
    app.router.add_get("/moved", moved)
    return app


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_releasing(_app) as url:
        yield url


@pytest.fixture(params=["lean", "aiohttp"])
async def ctx(
    request: pytest.FixtureRequest, session: aiohttp.ClientSession, clock: ManualClock
) -> AsyncIterator[CheckContext]:
    """Every test twice: GETs through the lean client (as the daemon makes them), and through
    aiohttp (what a context without the lean client, and a POST, use)."""
    if request.param == "aiohttp":
        yield CheckContext(session=session, clock=clock)
        return
    lean = LeanHttpClient()
    try:
        yield CheckContext(session=session, clock=clock, lean_http=lean)
    finally:
        await lean.close()


def make(url: str, **fields: Any) -> HttpCheck:
    config = HttpCheckConfig.model_validate({"type": "http", "url": url, **fields})
    return HttpCheck("health", config)


async def run(ctx: CheckContext, url: str, **fields: Any) -> CheckResult:
    return await make(url, **fields).run(ctx)


async def test_ok(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/ok", expect_json={"status": "ok"}, expect_body='"db"')
    assert result.status is Status.OK
    assert result.reason == ""
    assert result.values["up"] == 1.0
    assert result.values["status_code"] == 200.0
    assert 0.0 < result.values["latency_seconds"] < 1.0


async def test_wrong_status_is_critical(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/unavailable")
    assert result.status is Status.CRITICAL
    assert result.reason == "status 503, expected 200"
    assert result.values["up"] == 0.0
    assert result.values["status_code"] == 503.0


async def test_status_class_and_list(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/no-content", expect_status=["2xx"])
    assert result.status is Status.OK
    assert result.values["status_code"] == 204.0
    result = await run(ctx, f"{base_url}/unavailable", expect_status=[200, "3xx"])
    assert result.reason == "status 503, expected 200 or 3xx"


async def test_json_field_mismatch(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/degraded", expect_json={"status": "ok"})
    assert result.status is Status.CRITICAL
    assert result.reason == "json field status = 'degraded', expected 'ok'"
    assert result.values["up"] == 0.0
    assert result.values["status_code"] == 200.0


async def test_nested_json_path(ctx: CheckContext, base_url: str) -> None:
    url = f"{base_url}/ok"
    ok = await run(ctx, url, expect_json={"checks.db": "up", "replicas.0.ok": True})
    assert ok.status is Status.OK
    bad = await run(ctx, url, expect_json={"checks.db": "up", "checks.cache": "up"})
    assert (bad.status, bad.reason) == (
        Status.CRITICAL,
        "json field checks.cache = 'down', expected 'up'",
    )
    missing = await run(ctx, url, expect_json={"checks.queue": "up"})
    assert missing.reason == "json field checks.queue is missing"
    # JSON true is not the number 1.
    typed = await run(ctx, url, expect_json={"replicas.0.ok": 1})
    assert typed.reason == "json field replicas.0.ok = true, expected 1"


async def test_values_read_from_the_json_body(ctx: CheckContext, base_url: str) -> None:
    values = {"build": "build.number", "name": "build.name", "flag": "build.flag"}
    values |= {"huge": "build.huge", "gone": "build.nope"}
    result = await run(ctx, f"{base_url}/version", values=values)
    assert result.status is Status.OK
    # Only numbers are values: a text, a boolean, a number beyond a double or a missing field
    # leave the value out (a rule on it holds), never 0.
    assert result.values["build"] == 1234.0
    assert not {"name", "flag", "huge", "gone"} & result.values.keys()
    text = await run(ctx, f"{base_url}/text", values={"build": "build.number"})
    assert (text.status, "build" in text.values) == (Status.OK, False)


async def test_body_substring(ctx: CheckContext, base_url: str) -> None:
    assert (await run(ctx, f"{base_url}/text", expect_body="systems go")).status is Status.OK
    result = await run(ctx, f"{base_url}/text", expect_body="ok")
    assert result.status is Status.CRITICAL
    assert result.reason == "body does not contain 'ok'"
    assert result.values["up"] == 0.0


async def test_non_json_body(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/text", expect_json={"status": "ok"})
    assert (result.status, result.reason) == (Status.CRITICAL, "body is not JSON")
    assert result.values["up"] == 0.0


async def test_headers_are_sent(ctx: CheckContext, base_url: str) -> None:
    url = f"{base_url}/header"
    result = await run(ctx, url, headers={"X-Token": "abc"}, expect_body="token=abc")
    assert result.status is Status.OK


async def test_connection_refused(ctx: CheckContext) -> None:
    result = await run(ctx, f"http://127.0.0.1:{free_port()}/healthz")
    assert result.status is Status.CRITICAL
    assert result.reason == "connection refused"
    assert result.values == {"up": 0.0}


async def test_timeout(ctx: CheckContext, base_url: str) -> None:
    # The request gives up a little before the check's timeout: 0.2s - 10%.
    result = await run(ctx, f"{base_url}/hang", timeout="200ms")
    assert result.status is Status.CRITICAL
    assert result.reason == "timeout after 0.18s"
    assert result.values == {"up": 0.0}


async def test_slow_is_warn(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/slow", max_latency="50ms")
    assert result.status is Status.WARN
    assert result.reason.startswith("slow: ")
    assert result.reason.endswith("s, max_latency 0.05s")
    assert result.values["up"] == 1.0
    assert result.values["latency_seconds"] >= 0.15


async def test_a_redirect_is_not_followed(ctx: CheckContext, base_url: str) -> None:
    result = await run(ctx, f"{base_url}/moved")
    assert (result.status, result.reason) == (Status.CRITICAL, "status 302, expected 200")
    assert result.values["status_code"] == 302.0
    assert (await run(ctx, f"{base_url}/moved", expect_status=["3xx"])).status is Status.OK
