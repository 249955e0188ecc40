"""The `prometheus` check against a real Prometheus (basic auth on) scraping a test app, and
against small stubs for what a real one will not do on demand (hang, garbage, bearer auth)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from checks.base import CheckContext, CheckResult
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.prometheus_server import (
    PASSWORD,
    USERNAME,
    PrometheusServer,
    prometheus_server,
    require_prometheus,
)
from tests.utils import free_port, serve, serve_releasing

# What the scraped app exposes: unsafe label values, a NaN and an +Inf among them.
METRICS = """\
# TYPE app_temperature gauge
app_temperature{room="kitchen"} 21.5
app_temperature{room="living-room"} 19.25
app_temperature{room="1st.floor"} 18
app_temperature{room="attic"} NaN
# TYPE app_requests_total counter
app_requests_total 42
# TYPE app_queue_depth gauge
app_queue_depth +Inf
"""
TOKEN = "s3cret-token"


def make(url: str, query: str, **fields: Any) -> PrometheusCheck:
    data = {"type": "prometheus", "url": url, "query": query, **fields}
    return PrometheusCheck("prom", PrometheusCheckConfig.model_validate(data))


# --- a real Prometheus, started once for the module ---------------------------------------


def _target() -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrometheusServer]:
    require_prometheus()
    directory = tmp_path_factory.mktemp("prometheus")
    async with serve(_target()) as target:
        host_port = target.removeprefix("http://")
        async with prometheus_server(directory, [host_port], basic_auth=True) as server:
            yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_ctx() -> AsyncIterator[CheckContext]:
    """A session on the module's loop, where the tests against Prometheus run."""
    async with aiohttp.ClientSession() as session:
        yield CheckContext(session=session, clock=ManualClock())


AUTH = {"username": USERNAME, "password": PASSWORD}


@pytest.mark.asyncio(loop_scope="module")
class TestRealPrometheus:
    @pytest.fixture(autouse=True)
    def _setup(self, prometheus: PrometheusServer, module_ctx: CheckContext) -> None:
        self.url = prometheus.url
        self.ctx = module_ctx

    async def run(self, query: str, **fields: Any) -> CheckResult:
        fields.setdefault("basic_auth", AUTH)
        return await make(self.url, query, **fields).run(self.ctx)

    async def test_scalar(self) -> None:
        result = await self.run("scalar(app_requests_total)", value="requests")
        assert result == CheckResult(Status.OK, {"requests": 42.0, "series": 1.0})

    async def test_single_series_is_value(self) -> None:
        result = await self.run('app_temperature{room="kitchen"}')
        assert result == CheckResult(Status.OK, {"value": 21.5, "series": 1.0})

    async def test_vector_keyed_by_label(self) -> None:
        result = await self.run("app_temperature", label="room")
        values = {"kitchen": 21.5, "living_room": 19.25, "_1st_floor": 18.0, "series": 4.0}
        assert result == CheckResult(Status.OK, values, "dropped 1 NaN/±Inf series")

    async def test_max_series_keeps_the_first_by_name(self) -> None:
        result = await self.run("app_temperature", label="room", max_series=2)
        assert result.status is Status.OK
        assert result.values == {"_1st_floor": 18.0, "kitchen": 21.5, "series": 4.0}
        assert result.reason == (
            "dropped 1 NaN/±Inf series; kept 2 of 3 series by name (max_series 2)"
        )

    async def test_series_without_the_label_takes_the_value_name(self) -> None:
        result = await self.run('sum(app_temperature{room!="attic"})', label="room")
        assert result == CheckResult(Status.OK, {"value": 58.75, "series": 1.0})

    async def test_several_series_without_label_are_unknown(self) -> None:
        result = await self.run("app_temperature")
        assert result == CheckResult.unknown("query returned 4 series: set label to name them")

    async def test_label_that_does_not_tell_series_apart(self) -> None:
        result = await self.run("app_temperature", label="job")
        assert result == CheckResult.unknown("label job gives more than one series the name 'app'")
        result = await self.run('label_replace(vector(1), "k", "series", "", "")', label="k")
        assert result == CheckResult.unknown("label k names a series 'series', the count's name")

    async def test_empty_result_is_unknown(self) -> None:
        result = await self.run('app_temperature{room="garage"}')
        assert result == CheckResult.unknown("query returned no series")

    @pytest.mark.parametrize("query", ["NaN", 'app_temperature{room="attic"}', "app_queue_depth"])
    async def test_only_nan_or_inf_is_unknown(self, query: str) -> None:
        result = await self.run(query)
        assert result == CheckResult.unknown("query returned only NaN/±Inf values")

    async def test_bad_promql_is_unknown_with_prometheus_message(self) -> None:
        result = await self.run("sum(")
        assert result == CheckResult.unknown(
            'query error (bad_data): invalid parameter "query": 1:5: parse error: '
            "unclosed left parenthesis"
        )

    async def test_execution_error_is_unknown_and_short(self) -> None:
        result = await self.run("app_temperature + on() app_temperature")
        assert result.status is Status.UNKNOWN
        assert result.reason.startswith("query error (execution): found duplicate series")
        assert len(result.reason) <= len("query error (execution): ") + 160

    @pytest.mark.parametrize(
        ("query", "kind"), [("app_temperature[1m]", "matrix"), ('"hi"', "string")]
    )
    async def test_unsupported_result_type(self, query: str, kind: str) -> None:
        result = await self.run(query)
        assert result == CheckResult.unknown(f"unsupported result type {kind}")

    @pytest.mark.parametrize(
        "auth", [None, {"username": USERNAME, "password": "wrong"}], ids=["none", "wrong"]
    )
    async def test_auth_failed(self, auth: dict[str, str] | None) -> None:
        result = await self.run("vector(1)", basic_auth=auth)
        assert result == CheckResult.unknown("auth failed: status 401")

    async def test_password_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "\n")
        auth = {"username": USERNAME, "password_file": str(secret)}
        result = await self.run("vector(3)", basic_auth=auth)
        assert result == CheckResult(Status.OK, {"value": 3.0, "series": 1.0})


# --- stubs for what a real Prometheus will not do on demand --------------------------------


def _stub(release: asyncio.Event) -> web.Application:
    def scalar(value: str) -> web.Response:
        return web.json_response(
            {"status": "success", "data": {"resultType": "scalar", "result": [1.5, value]}}
        )

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return scalar("1")

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text='{"status": "succ', content_type="application/json")

    async def odd_shape(request: web.Request) -> web.Response:
        data = {"resultType": "vector", "result": {"not": "a list"}}
        return web.json_response({"status": "success", "data": data})

    async def unavailable(request: web.Request) -> web.Response:
        error = {"status": "error", "errorType": "unavailable", "error": "too many\n queries"}
        return web.json_response(error, status=503)

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(text="<html>Bad Gateway</html>", status=502)

    async def bearer(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization")
        if given is None:
            return web.Response(status=401)
        if given != f"Bearer {TOKEN}":
            return web.Response(status=403)
        # Echo the query as the answer, to show it arrived intact.
        return scalar(request.query["query"])

    app = web.Application()
    for prefix, handler in [
        ("/hang", hang),
        ("/garbage", garbage),
        ("/odd", odd_shape),
        ("/unavailable", unavailable),
        ("/bad-gateway", bad_gateway),
        ("/bearer", bearer),
    ]:
        app.router.add_get(f"{prefix}/api/v1/query", handler)
    return app


@pytest.fixture
async def stub() -> AsyncIterator[str]:
    async with serve_releasing(_stub) as url:
        yield url


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


async def test_connection_refused(ctx: CheckContext) -> None:
    result = await make(f"http://127.0.0.1:{free_port()}", "up").run(ctx)
    assert result == CheckResult.unknown("connection refused")


async def test_timeout(ctx: CheckContext, stub: str) -> None:
    # The request gives up a little before the check's timeout: 0.2s - 10%.
    result = await make(f"{stub}/hang", "up", timeout="200ms").run(ctx)
    assert result == CheckResult.unknown("timeout after 0.18s")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/garbage", "answer is not JSON"),
        ("/odd", "answer is not a Prometheus query result"),
        ("/unavailable", "Prometheus error, status 503 (unavailable): too many queries"),
        ("/bad-gateway", "Prometheus answered status 502"),
        ("/nothing-here", "Prometheus answered status 404"),
    ],
)
async def test_bad_answers_are_unknown(
    ctx: CheckContext, stub: str, path: str, reason: str
) -> None:
    result = await make(f"{stub}{path}", "up").run(ctx)
    assert result == CheckResult.unknown(reason)


async def test_bearer_token(ctx: CheckContext, stub: str, tmp_path: Path) -> None:
    url = f"{stub}/bearer/"  # a path prefix, with a trailing slash
    ok = await make(url, "2.5", token=TOKEN).run(ctx)
    assert ok == CheckResult(Status.OK, {"value": 2.5, "series": 1.0})
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    from_file = await make(url, "7", token_file=str(secret)).run(ctx)
    assert from_file.values == {"value": 7.0, "series": 1.0}
    assert await make(url, "1").run(ctx) == CheckResult.unknown("auth failed: status 401")
    wrong = await make(url, "1", token="nope").run(ctx)
    assert wrong == CheckResult.unknown("auth failed: status 403")
