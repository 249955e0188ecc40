from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from checks.base import CheckContext, CheckResult
from checks.scrape import ScrapeCheck, ScrapeCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.utils import free_port, serve

BOUNDS = ("0.1", "0.25", "0.5", "1", "+Inf")


def requests_lines(by_status: Mapping[str, float], job: str = "web") -> list[str]:
    return [
        f'http_requests_total{{job="{job}",status="{status}"}} {value}'
        for status, value in by_status.items()
    ]


def bucket_lines(cumulative: tuple[float, ...], job: str = "web") -> list[str]:
    """One histogram series: cumulative counts for BOUNDS, then _sum and _count."""
    name = "http_request_duration_seconds"
    lines = [
        f'{name}_bucket{{job="{job}",le="{le}"}} {count}'
        for le, count in zip(BOUNDS, cumulative, strict=True)
    ]
    return [
        *lines,
        f'{name}_sum{{job="{job}"}} 12.5',
        f'{name}_count{{job="{job}"}} {cumulative[-1]}',
    ]


def exposition(requests: list[str], buckets: list[str] | None = None) -> str:
    """Prometheus text with HELP/TYPE lines and an unrelated metric in between."""
    lines = [
        "# HELP process_cpu_seconds_total CPU time.",
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 12.5",
        "# HELP http_requests_total Requests served.",
        "# TYPE http_requests_total counter",
        *requests,
    ]
    if buckets is not None:
        lines += [
            "# HELP http_request_duration_seconds Request latency.",
            "# TYPE http_request_duration_seconds histogram",
            *buckets,
        ]
    return "\n".join([*lines, ""])


@dataclass
class MetricsPage:
    """What the test app's /metrics answers; tests rewrite it between scrapes."""

    text: str = ""
    status: int = 200


@pytest.fixture
def page() -> MetricsPage:
    return MetricsPage()


@pytest.fixture
async def url(page: MetricsPage) -> AsyncIterator[str]:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=page.text, status=page.status, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with serve(app) as base:
        yield f"{base}/metrics"


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(url: str, **fields: Any) -> ScrapeCheck:
    config = ScrapeCheckConfig.model_validate({"type": "scrape", "url": url, **fields})
    return ScrapeCheck("web", config)


async def scrape(
    check: ScrapeCheck, ctx: CheckContext, page: MetricsPage, text: str
) -> CheckResult:
    page.text = text
    return await check.run(ctx)


async def test_first_scrape_is_unknown(ctx: CheckContext, page: MetricsPage, url: str) -> None:
    result = await scrape(make(url), ctx, page, exposition(requests_lines({"200": 1000})))
    assert result.status is Status.UNKNOWN
    assert result.reason == "first scrape: no window yet"
    assert result.values == {}
    assert result.needs_previous  # `runbookd once` scrapes again


async def test_error_ratio_from_increases(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 1000, "503": 10, "404": 5})))
    await clock.advance(30)
    text = exposition(requests_lines({"200": 1075, "503": 30, "404": 10}))
    result = await scrape(check, ctx, page, text)
    assert result.status is Status.OK
    # 100 new requests, 20 of them 5xx; a 404 is not an error by default.
    assert result.values == {
        "up": 1.0,
        "requests": 100.0,
        "request_rate": pytest.approx(100 / 30),
        "error_ratio": pytest.approx(0.2),
    }  # no histogram in the text: no p95_seconds rather than a made-up one


async def test_error_statuses_codes_and_classes(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, error_statuses=["5xx", 429])
    statuses = ("200", "404", "429", "5xx")
    await scrape(check, ctx, page, exposition(requests_lines(dict.fromkeys(statuses, 0))))
    await clock.advance(30)
    counts = {"200": 50, "404": 10, "429": 15, "5xx": 25}  # an app that labels by class
    result = await scrape(check, ctx, page, exposition(requests_lines(counts)))
    assert result.values["error_ratio"] == pytest.approx(0.4)


async def test_counter_reset(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 500, "500": 50})))
    await clock.advance(30)
    # The app restarted: counters start again from zero, so the increase is the new value.
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 40, "500": 10})))
    assert result.status is Status.OK
    assert result.values["requests"] == 50.0
    assert result.values["error_ratio"] == pytest.approx(0.2)


async def test_new_series_counts_from_its_second_scrape(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 100})))
    await clock.advance(30)
    # The 503 series is new: we cannot tell how much of its 30 is recent, so it adds 0.
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 150, "503": 30})))
    assert (result.values["requests"], result.values["error_ratio"]) == (50.0, 0.0)
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 200, "503": 40})))
    assert result.values["requests"] == 60.0
    assert result.values["error_ratio"] == pytest.approx(10 / 60)


async def test_too_few_requests_is_unknown(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 100, "500": 0})))
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 101, "500": 4})))
    assert result.status is Status.UNKNOWN
    assert result.reason == "only 5 requests in the window (min_requests 10)"
    assert result.values == {}


async def test_window_sums_scrapes_and_forgets_old_ones(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, window="60s", latency_metric=None)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 0, "500": 0})))
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 90, "500": 10})))
    assert result.values["requests"] == 100.0
    assert result.values["request_rate"] == pytest.approx(100 / 30)  # only 30s seen so far

    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 130, "500": 20})))
    assert result.values["requests"] == 150.0
    assert result.values["request_rate"] == pytest.approx(2.5)
    assert result.values["error_ratio"] == pytest.approx(20 / 150)

    await clock.advance(30)  # the first scrape's increase (100, 10 errors) leaves the window
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 150, "500": 20})))
    assert result.values["requests"] == 70.0
    assert result.values["request_rate"] == pytest.approx(70 / 60)
    assert result.values["error_ratio"] == pytest.approx(10 / 70)

    await clock.advance(110)  # everything but the newest scrape is older than 60s
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 155, "500": 20})))
    assert result.status is Status.UNKNOWN
    assert result.reason == "only 5 requests in the window (min_requests 10)"


async def test_quantiles_interpolate_like_prometheus(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, quantiles=[0.5, 0.95, 0.99])
    requests = requests_lines({"200": 0})
    await scrape(check, ctx, page, exposition(requests, bucket_lines((10, 10, 10, 10, 10))))
    await clock.advance(30)
    # Bucket increases (cumulative): <=0.1: 40, <=0.25: 80, <=0.5: 90, <=1: 98, +Inf: 100.
    buckets = bucket_lines((50, 90, 100, 108, 110))
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 100}), buckets))
    assert result.status is Status.OK
    # p50: rank 50 lies in (0.1, 0.25], 10 of its 40 -> 0.1 + 0.15 * 10/40.
    assert result.values["p50_seconds"] == pytest.approx(0.1375)
    # p95: rank 95 lies in (0.5, 1], 5 of its 8 -> 0.5 + 0.5 * 5/8.
    assert result.values["p95_seconds"] == pytest.approx(0.8125)
    # p99: rank 99 lies in the +Inf bucket -> the highest finite bound.
    assert result.values["p99_seconds"] == 1.0


async def test_quantile_in_the_inf_bucket(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, quantiles=[0.5])
    await scrape(check, ctx, page, exposition(requests_lines({"200": 0}), bucket_lines((0,) * 5)))
    await clock.advance(30)
    buckets = bucket_lines((1, 2, 3, 4, 100))  # almost everything slower than 1s
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 100}), buckets))
    assert result.values["p50_seconds"] == 1.0


async def test_match_labels_filters_both_metrics(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, match_labels={"job": "web"})

    def text(web_ok: int, worker_ok: int, errors: int, web_fast: int, worker_slow: int) -> str:
        requests = requests_lines({"200": web_ok, "500": errors}, job="web")
        requests += requests_lines({"200": worker_ok, "500": errors * 25}, job="worker")
        buckets = bucket_lines((web_fast,) * 5, job="web")
        buckets += bucket_lines((0, 0, 0, 0, worker_slow), job="worker")
        return exposition(requests, buckets)

    await scrape(check, ctx, page, text(0, 0, 0, 0, 0))
    await clock.advance(30)
    result = await scrape(check, ctx, page, text(80, 500, 20, 100, 1000))
    assert result.values["requests"] == 100.0
    assert result.values["error_ratio"] == pytest.approx(0.2)
    # All 100 web observations are <= 0.1s: rank 95 of 100 in (0, 0.1]. The worker's slow
    # requests would have put p95 at 1.0.
    assert result.values["p95_seconds"] == pytest.approx(0.095)


async def test_metric_name_without_total_and_untyped_text(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, requests_metric="http_requests", latency_metric=None)
    # No HELP/TYPE lines: the parser sees untyped samples under their exposed names.
    await scrape(check, ctx, page, "\n".join(requests_lines({"200": 10, "502": 0})))
    await clock.advance(30)
    result = await scrape(check, ctx, page, "\n".join(requests_lines({"200": 30, "502": 5})))
    assert result.values["requests"] == 25.0
    assert result.values["error_ratio"] == pytest.approx(0.2)


async def test_metrics_endpoint_down_is_unknown(ctx: CheckContext) -> None:
    result = await make(f"http://127.0.0.1:{free_port()}/metrics").run(ctx)
    assert result.status is Status.UNKNOWN
    assert result.reason == "metrics fetch failed: connection refused"
    assert result.values == {}


async def test_metrics_endpoint_error_status_is_unknown(
    ctx: CheckContext, page: MetricsPage, url: str
) -> None:
    page.status = 500
    result = await scrape(make(url), ctx, page, "oops")
    assert (result.status, result.reason) == (
        Status.UNKNOWN,
        "metrics endpoint returned status 500",
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<html><body>Login</body></html>", "no http_requests_total series in the metrics"),
        ('http_requests_total{status="200" 5\n', "metrics text is not parseable: "),
        ("http_requests_total{status=200} 5\n", "metrics text is not parseable: "),
        ('http_request_duration_seconds_bucket{le="fast"} 1\n', "metrics text is not parseable"),
    ],
)
async def test_garbage_text_is_unknown(
    ctx: CheckContext, page: MetricsPage, url: str, text: str, reason: str
) -> None:
    result = await scrape(make(url), ctx, page, text)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith(reason)


async def test_match_labels_that_match_nothing(
    ctx: CheckContext, page: MetricsPage, url: str
) -> None:
    check = make(url, match_labels={"job": "api"})
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 5})))
    assert result.reason == "no http_requests_total series in the metrics matching job='api'"


async def test_a_failed_scrape_keeps_the_baseline(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, latency_metric=None)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 100, "500": 0})))
    await clock.advance(30)
    page.status = 503
    assert (await check.run(ctx)).status is Status.UNKNOWN
    await clock.advance(30)
    page.status = 200
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 150, "500": 10})))
    assert result.status is Status.OK
    assert result.values["requests"] == 60.0
    assert result.values["request_rate"] == pytest.approx(1.0)  # over the 60s since baseline


# --- the status label ---------------------------------------------------------------------


def go_lines(by_code: Mapping[str, float], method: str = "get") -> list[str]:
    """Go's promhttp: the status in `code`, alongside `method`."""
    return [
        f'http_requests_total{{code="{code}",method="{method}"}} {value}'
        for code, value in by_code.items()
    ]


async def test_go_style_code_label_counts_errors(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    # The app serves 26% errors; read with the wrong label they would all look like successes.
    check = make(url, latency_metric=None)
    await scrape(check, ctx, page, exposition(go_lines({"200": 1000, "500": 100})))
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(go_lines({"200": 1074, "500": 126})))
    assert result.status is Status.OK
    assert result.values["requests"] == 100.0
    assert result.values["error_ratio"] == pytest.approx(0.26)


@pytest.mark.parametrize(
    "label",
    [
        "status",
        "code",
        "status_code",
        "http_status_code",
        "http_response_status_code",
        "http.response.status_code",
        "response_code",
        "statusCode",
    ],
)
async def test_common_status_labels_are_recognised(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str, label: str
) -> None:
    def text(ok: int, failed: int) -> str:
        return exposition(
            [
                f'http_requests_total{{"{label}"="200",route="/"}} {ok}',
                f'http_requests_total{{"{label}"="503",route="/"}} {failed}',
            ]
        )

    check = make(url, latency_metric=None)
    await scrape(check, ctx, page, text(0, 0))
    await clock.advance(30)
    result = await scrape(check, ctx, page, text(90, 10))
    assert result.values["error_ratio"] == pytest.approx(0.1)


async def test_no_known_status_label_is_unknown_naming_the_labels(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    def text(ok: int, failed: int) -> str:
        return exposition(
            [
                f'http_requests_total{{method="get",path="/",result="ok"}} {ok}',
                f'http_requests_total{{method="get",path="/",result="fail"}} {failed}',
            ]
        )

    check = make(url, latency_metric=None)
    first = await scrape(check, ctx, page, text(100, 0))
    await clock.advance(30)
    result = await scrape(check, ctx, page, text(150, 50))
    for run in (first, result):
        assert run.status is Status.UNKNOWN
        assert run.values == {}
        assert run.reason == (
            "http_requests_total has no status label (tried status, code, status_code,"
            " http_status_code, http_response_status_code, http.response.status_code,"
            " http.status_code, response_code, http_status, statusCode;"
            " found labels: method, path, result)"
        )


async def test_one_series_without_the_status_label_makes_it_unknown(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    # Its requests could be errors or not: the ratio over the rest would be a guess.
    def text(ok: int, failed: int, other: int) -> str:
        return exposition([*go_lines({"200": ok, "500": failed}), f"http_requests_total {other}"])

    check = make(url, latency_metric=None)
    await scrape(check, ctx, page, text(0, 0, 0))
    await clock.advance(30)
    result = await scrape(check, ctx, page, text(90, 10, 50))
    assert result.status is Status.UNKNOWN
    assert (
        result.reason == "1 of 3 http_requests_total series have no code label (found labels: none)"
    )


async def test_an_empty_status_label_is_a_missing_one(
    ctx: CheckContext, page: MetricsPage, url: str
) -> None:
    # Prometheus reads an empty label value as no label at all.
    text = exposition(['http_requests_total{status="",job="web"} 5'])
    result = await scrape(make(url), ctx, page, text)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("http_requests_total has no status label (tried status,")
    assert result.reason.endswith("found labels: job, status)")


async def test_explicit_status_label_is_the_only_one_tried(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    check = make(url, status_label="http_code", latency_metric=None)
    # `code` is there too, but the config named another label.
    result = await scrape(check, ctx, page, exposition(go_lines({"200": 100})))
    assert result.status is Status.UNKNOWN
    assert result.reason == (
        "http_requests_total has no status label (tried http_code; found labels: code, method)"
    )

    def text(ok: int, failed: int) -> str:
        return exposition(
            [
                f'http_requests_total{{http_code="200",code="x"}} {ok}',
                f'http_requests_total{{http_code="502",code="y"}} {failed}',
            ]
        )

    await scrape(check, ctx, page, text(0, 0))
    await clock.advance(30)
    result = await scrape(check, ctx, page, text(80, 20))
    assert result.values["error_ratio"] == pytest.approx(0.2)


async def test_status_values_that_are_no_http_status_are_unknown(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    # status="error" cannot be told from status="ok" by error_statuses: no ratio from it.
    text = exposition(requests_lines({"ok": 100, "error": 30, "200": 5}))
    result = await scrape(make(url), ctx, page, text)
    assert result.status is Status.UNKNOWN
    assert result.reason == (
        "http_requests_total label status has values that are not HTTP statuses:"
        " 'ok', 'error' (set status_label)"
    )
    text = exposition(requests_lines(dict.fromkeys(("²⁰⁰", "5XX", "OK", "-1", "5x"), 1)))
    result = await scrape(make(url), ctx, page, text)
    assert result.reason == (
        "http_requests_total label status has values that are not HTTP statuses:"
        " '²⁰⁰', 'OK', '-1' (+1 more) (set status_label)"
    )


async def test_label_is_chosen_per_scrape(
    ctx: CheckContext, clock: ManualClock, page: MetricsPage, url: str
) -> None:
    # A new release moved from a Python client (status) to promhttp (code).
    check = make(url, window="90s", latency_metric=None)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 0, "500": 0})))
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 90, "500": 10})))
    assert result.values["error_ratio"] == pytest.approx(0.1)
    await clock.advance(30)
    # The app restarted with new series: they count from their second scrape.
    result = await scrape(check, ctx, page, exposition(go_lines({"200": 10, "500": 10})))
    assert result.status is Status.OK
    await clock.advance(30)
    result = await scrape(check, ctx, page, exposition(go_lines({"200": 70, "500": 50})))
    assert result.values["requests"] == 200.0  # the whole 90s window: 100 + 0 + 100
    assert result.values["error_ratio"] == pytest.approx((10 + 40) / 200)


async def test_no_request_rate_over_no_time(ctx: CheckContext, page: MetricsPage, url: str) -> None:
    # Two scrapes at one instant: a count, but no rate (not a rate of 0).
    check = make(url, latency_metric=None)
    await scrape(check, ctx, page, exposition(requests_lines({"200": 0, "500": 0})))
    result = await scrape(check, ctx, page, exposition(requests_lines({"200": 90, "500": 10})))
    assert result.status is Status.OK
    assert result.values["requests"] == 100.0
    assert "request_rate" not in result.values
