"""Jobs in a real daemon: started by hand through the API, recorded, exported, listed; a
failed run opens the incident of the rule watching it; runs survive a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
remediations:
  dump:
    type: command
    argv: [sh, -c, 'echo "run $RUNBOOKD_INCIDENT_ID for $RUNBOOKD_RULE" > {out}']
  broken:
    type: command
    argv: [sh, -c, 'echo "no space left" >&2; exit 3']
  page:
    type: command
    argv: ['true']
jobs:
  nightly:
    run: dump
    schedule: "0 2 * * *"
    timezone: Europe/Berlin
  drill:
    run: broken
    schedule: "0 3 1 */3 *"
rules:
  drill_failed:
    when: drill.failed > 0
    do: [page]
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", out=tmp_path / "out.txt"))
    return path


async def call(
    session: aiohttp.ClientSession, daemon: Daemon, method: str, path: str
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{daemon.port}/api/v1{path}"
    async with session.request(method, url) as r:
        return r.status, await r.json()


async def test_a_job_run_by_hand_is_recorded_listed_and_exported(tmp_path: Path) -> None:
    config = write(tmp_path)
    async with run_daemon(config) as daemon, aiohttp.ClientSession() as session:
        status, jobs = await call(session, daemon, "GET", "/jobs")
        assert status == 200
        nightly = next(j for j in jobs["jobs"] if j["name"] == "nightly")
        assert (nightly["run"], nightly["running"], nightly["last_run"]) == ("dump", False, None)
        assert nightly["next_at"] > daemon.clock.now()

        assert await call(session, daemon, "POST", "/jobs/nightly/run") == (
            202,
            {"job": "nightly", "started": True},
        )
        await wait_for(lambda: not daemon.jobs.jobs["nightly"].running)
        status, runs = await call(session, daemon, "GET", "/jobs/nightly/runs")
        (run,) = runs["runs"]
        assert (run["trigger"], run["outcome"]) == ("manual", "succeeded")
        # The command learns which run it serves, as it would learn an incident.
        assert (tmp_path / "out.txt").read_text() == f"run job-nightly-{run['id']} for nightly\n"
        value = daemon.registry.get_sample_value(
            "runbookd_job_runs_total", {"job": "nightly", "outcome": "succeeded"}
        )
        assert value == 1

        assert (await call(session, daemon, "POST", "/jobs/nope/run"))[0] == 404
        assert (await call(session, daemon, "GET", "/jobs/nope/runs"))[0] == 404
        status, error = await call(session, daemon, "GET", "/jobs/nightly/runs?limit=0")
        assert (status, error) == (400, {"error": "limit: must be between 1 and 1000"})

    # A restart keeps the runs.
    async with run_daemon(config) as daemon, aiohttp.ClientSession() as session:
        _, jobs = await call(session, daemon, "GET", "/jobs")
        nightly = next(j for j in jobs["jobs"] if j["name"] == "nightly")
        assert nightly["last_run"]["outcome"] == "succeeded"
        assert nightly["last_success_at"] == nightly["last_run"]["ended_at"]


async def test_a_failed_run_opens_the_incident_of_the_rule_watching_it(tmp_path: Path) -> None:
    async with run_daemon(write(tmp_path)) as daemon, aiohttp.ClientSession() as session:
        await call(session, daemon, "POST", "/jobs/drill/run")
        await wait_for(lambda: "drill_failed" in daemon.engine.incidents)
        _, runs = await call(session, daemon, "GET", "/jobs/drill/runs")
        (run,) = runs["runs"]
        assert run["outcome"] == "failed"
        assert "exit" in run["detail"]
        incident = daemon.engine.incidents["drill_failed"]
        assert incident.trigger["value"] == 1
