"""`runbookd once`: every check run one time against real servers, printed as a table; a
check that needs an earlier sample (a scrape's rates) runs again after a short pause."""

from __future__ import annotations

from aiohttp import web

from daemon.cli.demo.app import DemoApp
from daemon.cli.once import AGAIN_AFTER_MAX, OnceExit, run_once
from daemon.config.loader import load_config_text
from tests.once import CONFIG
from tests.utils import PauseClock, free_port, requests_to, serve


def app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    application = web.Application()
    application.router.add_get("/health", health)
    return application


async def test_all_ok_exits_0_and_prints_a_table() -> None:
    async with serve(app()) as url:
        config = load_config_text(CONFIG.format(url=url, dead=free_port()))
        lines: list[str] = []
        assert await run_once(config, ["api"], out=lines.append) == 0
    header, row = lines
    assert header.split() == ["CHECK", "STATUS", "TOOK", "VALUES", "REASON"]
    assert row.split()[:2] == ["api", "OK"]
    assert "up=1" in row
    assert "status_code=200" in row


async def test_anything_not_ok_exits_1_with_the_reason() -> None:
    async with serve(app()) as url:
        config = load_config_text(CONFIG.format(url=url, dead=free_port()))
        lines: list[str] = []
        assert await run_once(config, out=lines.append) == 1
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["api"].split()[1] == "OK"
    assert rows["gone"].split()[1] == "CRITICAL"
    assert rows["gone"].endswith("connection refused")


# -- checks that need two samples --------------------------------------------------------------

SCRAPE_CONFIG = """
checks:
  health:
    type: http
    url: {url}/health
    interval: 1s
  traffic:
    type: scrape
    url: {url}/metrics
    interval: {interval}
    window: 1m
    min_requests: 50
"""


def rows(lines: list[str]) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in lines[1:]}


async def test_a_scrape_check_scrapes_twice_and_measures_the_traffic_between() -> None:
    demo = DemoApp()
    demo.versions.append("v2-bad")  # every fifth request fails
    async with serve(demo.app) as url:
        # The app has served, an error too: its series exist (a scrape counts a new series
        # from its second sight on, as Prometheus's rate() does).
        await requests_to(url, 5)()
        config = load_config_text(SCRAPE_CONFIG.format(url=url, interval="2s"))
        clock = PauseClock(requests_to(url, 200))
        lines: list[str] = []
        assert await run_once(config, out=lines.append, clock=clock) is OnceExit.OK
    assert clock.slept == [2.0]  # one pause, the scrape's interval
    traffic = rows(lines)["traffic"]
    assert traffic[1] == "OK"
    assert {"error_ratio=0.2", "requests=200", "request_rate=100"} <= set(traffic)
    assert rows(lines)["health"][1] == "OK"


async def test_the_pause_is_bounded_and_only_checks_that_asked_run_again() -> None:
    demo, health_runs = DemoApp(), []

    async def counted(request: web.Request) -> web.StreamResponse:
        health_runs.append(request.path)
        return await demo.health(request)

    app = web.Application()
    app.router.add_get("/health", counted)
    app.router.add_get("/api/tasks", demo.tasks)
    app.router.add_get("/metrics", demo.metrics)
    async with serve(app) as url:
        await requests_to(url, 5)()
        config = load_config_text(SCRAPE_CONFIG.format(url=url, interval="10m"))
        clock = PauseClock(requests_to(url, 60))
        assert await run_once(config, out=lambda _: None, clock=clock) is OnceExit.OK
    assert clock.slept == [AGAIN_AFTER_MAX]
    assert health_runs == ["/health"]


async def test_too_little_traffic_is_unknown_and_exits_3() -> None:
    demo = DemoApp()
    async with serve(demo.app) as url:
        await requests_to(url, 5)()
        config = load_config_text(SCRAPE_CONFIG.format(url=url, interval="1s"))
        clock = PauseClock(requests_to(url, 10))
        lines: list[str] = []
        assert await run_once(config, out=lines.append, clock=clock) is OnceExit.UNKNOWN
    traffic = " ".join(rows(lines)["traffic"])
    assert "UNKNOWN" in traffic
    assert "only 10 requests in the window (min_requests 50)" in traffic
