"""End to end with real processes and servers on loopback: the scenarios on-call fears."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from daemon.cli.demo.app import DemoApp, Pager
from tests.utils import read_until, run_daemon, serve, wait_for

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


KILL9 = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  health:
    type: http
    url: {app}/health
    interval: 100ms
    timeout: 1s
    expect_json: {{status: down-on-purpose}}
rules:
  unhealthy:
    when: health.up < 1
    do: [migrate]
    escalate: [page]
remediations:
  migrate:
    type: command
    argv: ["{script}"]
    timeout: 60s
    cooldown: 1h
  page:
    type: pagerduty
    events_url: {pager}/v2/enqueue
    routing_key: R0UT1NGKEYDEM0000000000000000000
"""


@contextmanager
def daemon_process(config: Path) -> Iterator[subprocess.Popen[str]]:
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_kill_9_during_a_remediation_is_found_and_not_repeated(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.log"
    script = tmp_path / "migrate.sh"
    # a slow, non-idempotent remediation: it counts its runs, then takes its time
    script.write_text(f'#!/bin/sh\necho "$RUNBOOKD_INCIDENT_ID" >> {runs}\nsleep 30\n')
    script.chmod(0o755)

    async def scenario() -> None:
        app, pager = DemoApp(), Pager()
        async with serve(app.app) as app_url, serve(pager.app) as pager_url:
            config = tmp_path / "runbookd.yaml"
            config.write_text(
                KILL9.format(state=tmp_path / "state", app=app_url, pager=pager_url, script=script)
            )
            with daemon_process(config) as first:
                await asyncio.to_thread(read_until, first, '"step": "action"')
                await wait_for(lambda: runs.exists() and runs.read_text().strip() != "")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
            with daemon_process(config) as second:
                text = await asyncio.to_thread(read_until, second, '"step": "interrupted"')
                assert "was running when runbookd stopped" in text
                await wait_for(lambda: "trigger" in pager.actions())
                second.send_signal(signal.SIGTERM)
                await asyncio.to_thread(second.wait, 15)
        (incident_id,) = runs.read_text().split()  # ran once, never repeated
        assert [e["dedup_key"] for e in pager.events] == [incident_id]

    asyncio.run(scenario())
