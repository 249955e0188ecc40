"""End to end with real processes and servers on loopback: the scenarios on-call fears."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.cli.demo.app import DemoApp, Pager
from tests.utils import read_until, serve, wait_for

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
