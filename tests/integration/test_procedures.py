"""Procedures against a real daemon: started over the API and with `runbookd procedure`, real
`command` remediations that see the run's parameters, a `wait_for` on a real HTTP check, a
failure undone, a cancel, and the refusals (unknown procedure, a bad parameter, a precondition
not met)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from daemon.cli.main import main
from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon, serve, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  app:
    type: http
    url: {url}/health
    interval: 1h            # a procedure's wait_for runs it at once, not at its interval
    timeout: 2s
remediations:
  maintenance_on:
    type: command
    argv: [sh, -c, 'echo "on $RUNBOOKD_PARAM_VERSION" >> {log}']
  maintenance_off:
    type: command
    argv: [sh, -c, 'echo off >> {log}']
  migrate:
    type: command
    argv:                   # fails for v0.0.0
      - sh
      - -c
      - 'echo "migrate $RUNBOOKD_PARAM_VERSION" >> {log}; test "$RUNBOOKD_PARAM_VERSION" != v0.0.0'

  slow:
    type: command
    argv: [sh, -c, 'echo slow >> {log}; sleep 30']
    timeout: 60s
procedures:
  deploy_migration:
    params:
      version: {{pattern: 'v[0-9]+\\.[0-9]+\\.[0-9]+'}}
    preconditions: [app]
    steps:
      - {{name: maintenance_on, run: maintenance_on, undo: [maintenance_off]}}
      - {{name: migrate, run: migrate}}
      - {{name: maintenance_off, run: maintenance_off}}
      - {{name: healthy, wait_for: app, timeout: 30s}}
  long:
    steps:
      - {{name: on, run: maintenance_on, undo: [maintenance_off]}}
      - {{name: slow, run: slow}}
"""


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def app() -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    application = web.Application()
    application.router.add_get("/health", health)
    async with serve(application) as url:
        yield url


@pytest.fixture
async def daemon(tmp_path: Path, app: str) -> AsyncIterator[Daemon]:
    path = tmp_path / "runbookd.yaml"
    log = tmp_path / "steps.log"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=app, log=log))
    async with run_daemon(path) as running:
        running.observed.run_now("app")  # the precondition has a run to read
        await wait_for(lambda: running.observed.latest("app") is not None)
        yield running


def steps_log(daemon: Daemon) -> list[str]:
    path = Path(daemon.config.runbookd.state_dir).parent / "steps.log"
    return path.read_text().splitlines() if path.exists() else []


async def call(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{daemon.port}/api/v1/{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return r.status, await r.json()


async def ended(daemon: Daemon, run_id: str) -> dict[str, Any]:
    async def done() -> bool:
        status, run = await call(daemon, "get", f"procedure-runs/{run_id}")
        return status == 200 and run["ended_at"] is not None

    for _ in range(400):  # bounded: 20 s
        if await done():
            break
        await asyncio.sleep(0.05)
    status, run = await call(daemon, "get", f"procedure-runs/{run_id}")
    assert status == 200
    assert run["ended_at"] is not None, run
    result: dict[str, Any] = run
    return result


async def runbookd(daemon: Daemon, *argv: str) -> int:
    url = f"http://127.0.0.1:{daemon.port}"
    return await asyncio.to_thread(main, [*argv, "--url", url])


async def test_a_run_passes_its_params_to_each_command_and_waits_for_the_check(
    daemon: Daemon,
) -> None:
    body = {"params": {"version": "v1.2.3"}, "by": "ana"}
    status, started = await call(daemon, "post", "procedures/deploy_migration/runs", body)
    assert status == 201
    run = await ended(daemon, started["id"])
    assert run["status"] == "succeeded"
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 4
    assert steps_log(daemon) == ["on v1.2.3", "migrate v1.2.3", "off"]
    assert run["steps"][3]["detail"] == "app is OK"
    status, listed = await call(daemon, "get", "procedure-runs?procedure=deploy_migration")
    assert [r["id"] for r in listed["runs"]] == [run["id"]]
    assert "timeline" not in listed["runs"][0]


async def test_a_failed_migration_turns_maintenance_off_again(daemon: Daemon) -> None:
    body = {"params": {"version": "v0.0.0"}, "by": "ana"}  # the migration exits 1 for it
    status, started = await call(daemon, "post", "procedures/deploy_migration/runs", body)
    assert status == 201
    run = await ended(daemon, started["id"])
    assert run["status"] == "failed"
    assert [s["status"] for s in run["steps"]] == ["undone", "failed", "pending", "pending"]
    assert steps_log(daemon) == ["on v0.0.0", "migrate v0.0.0", "off"]


async def test_refusals_say_why_and_start_nothing(daemon: Daemon) -> None:
    runs = "procedures/deploy_migration/runs"
    assert await call(daemon, "post", "procedures/nope/runs", {"by": "ana"}) == (
        404,
        {"error": "no procedure 'nope'"},
    )
    status, refused = await call(daemon, "post", runs, {"params": {"version": "latest"}, "by": "a"})
    assert status == 400
    assert "params.version: 'latest' does not match" in refused["error"]
    status, refused = await call(daemon, "post", runs, {"params": {}})
    assert status == 400  # no `by`: the body's model names it
    assert "by" in refused["error"]
    assert (await call(daemon, "get", "procedure-runs"))[1] == {"runs": []}
    assert steps_log(daemon) == []


async def test_the_cli_runs_follows_and_cancels(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["procedure", "run", "deploy_migration", "--param", "version=v2.0.0", "--by", "ana"]
    assert await runbookd(daemon, *argv, "--follow") == 0
    out = capsys.readouterr().out
    assert "maintenance_on: running maintenance_on" in out
    assert out.rstrip().endswith("succeeded")
    bad = ["procedure", "run", "deploy_migration", "--param", "v2", "--by", "ana"]
    assert await runbookd(daemon, *bad) == 2
    assert "--param 'v2': give NAME=VALUE" in capsys.readouterr().err

    assert await runbookd(daemon, "procedure", "run", "long", "--by", "ana", "--json") == 0
    run_id = json.loads(capsys.readouterr().out)["id"]
    await wait_for(lambda: "slow" in steps_log(daemon))
    assert await runbookd(daemon, "procedure", "cancel", run_id, "--by", "ana") == 0
    assert "cancelling" in capsys.readouterr().out
    run = await ended(daemon, run_id)
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["steps"]] == ["undone", "cancelled"]
    assert steps_log(daemon)[-1] == "off"
    assert await runbookd(daemon, "procedure", "show", run_id) == 0
    shown = capsys.readouterr().out
    assert "cancelled by ana" in shown
    assert await runbookd(daemon, "procedure") == 0
    listed = capsys.readouterr().out
    assert "deploy_migration" in listed
    assert "maintenance_on -> migrate -> maintenance_off -> healthy" in listed
