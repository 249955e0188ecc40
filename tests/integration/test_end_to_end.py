"""End to end with real processes and servers on loopback: the scenarios on-call fears."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.cli.demo.app import DemoApp, Pager
from tests.utils import run_daemon, serve, wait_for

NOT_FIXED = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  circuit_breaker_after: 1
checks:
  errors:
    type: scrape
    url: {app}/metrics
    interval: 200ms
    timeout: 1s
    window: 1s
    min_requests: 5
rules:
  high_error_rate:
    when: errors.error_ratio > 5%
    for: 400ms
    min_samples: 2
    do: [rollback]
    verify_within: 2s
    escalate: [page]
remediations:
  rollback:
    type: http
    url: {app}/admin/rollback
    body: {{incident: "{{{{ incident.id }}}}"}}
    cooldown: 0s
  page:
    type: pagerduty
    events_url: {pager}/v2/enqueue
    routing_key: R0UT1NGKEYDEM0000000000000000000
    cooldown: 0s
"""


@pytest.fixture
async def world() -> AsyncIterator[tuple[DemoApp, Pager, str, str]]:
    app, pager = DemoApp(), Pager()
    async with serve(app.app) as app_url, serve(pager.app) as pager_url:
        yield app, pager, app_url, pager_url


async def traffic(session: aiohttp.ClientSession, url: str) -> None:
    while True:
        async with session.get(url) as response:
            await response.read()
        await asyncio.sleep(0.005)


async def test_a_rollback_that_does_not_help_pages_and_stops_the_next_one(
    tmp_path: Path, world: tuple[DemoApp, Pager, str, str], session: aiohttp.ClientSession
) -> None:
    app, pager, app_url, pager_url = world
    app.versions += ["v2-bad", "v3-bad"]  # rolling back one step lands on another bad version
    path = tmp_path / "runbookd.yaml"
    path.write_text(NOT_FIXED.format(state=tmp_path / "state", app=app_url, pager=pager_url))
    load = asyncio.create_task(traffic(session, f"{app_url}/api/tasks"))
    try:
        async with run_daemon(path) as daemon:
            # episode 1: the rollback lands on v2-bad, verification fails, the page goes out
            await wait_for(lambda: "trigger" in pager.actions(), within=15)
            assert app.current == "v2-bad"
            assert len(app.rollbacks) == 1
            (first,) = daemon.engine.incidents.values()
            await wait_for(lambda: first.timeline[-1].kind == "circuit_open")
            # people fix it by hand; the incident resolves
            app.versions.append("v4")
            await wait_for(lambda: not first.is_open, within=15)
            # episode 2: a bad deploy again; the breaker holds automation, people are paged
            app.versions.append("v5-bad")
            await wait_for(lambda: len(pager.events) >= 3, within=15)
            (second,) = daemon.engine.incidents.values()
            assert [e.kind for e in second.timeline][:2] == ["opened", "circuit_open"]
    finally:
        load.cancel()
    assert len(app.rollbacks) == 1, "the circuit breaker let a second rollback through"
    assert app.current == "v5-bad"
    assert pager.actions() == ["trigger", "resolve", "trigger"]
