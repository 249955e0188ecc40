"""`runbookd jobs` against a real daemon: the table, a run by hand, its runs, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from daemon.cli.main import main
from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
remediations:
  vacuum:
    type: command
    argv: ['true']
jobs:
  maintenance:
    run: vacuum
    schedule: "0 4 * * 0"
    timezone: Europe/Berlin
"""


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    async with run_daemon(path) as running:
        yield running


async def runbookd(daemon: Daemon, *argv: str) -> int:
    url = f"http://127.0.0.1:{daemon.port}"
    return await asyncio.to_thread(main, [*argv, "--url", url])


async def test_list_run_and_show_a_job(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert await runbookd(daemon, "jobs") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["JOB", "SCHEDULE", "NEXT", "LAST", "LAST", "SUCCESS", "ACTION"]
    assert out[1].split()[:7] == ["maintenance", "0", "4", "*", "*", "0", "Europe/Berlin"]
    assert "never ran" in out[1]

    assert await runbookd(daemon, "jobs", "run", "maintenance") == 0
    assert capsys.readouterr().out.startswith("started maintenance")
    await wait_for(lambda: not daemon.jobs.jobs["maintenance"].running)

    assert await runbookd(daemon, "jobs", "show", "maintenance", "--json") == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert (run["trigger"], run["outcome"]) == ("manual", "succeeded")
    assert await runbookd(daemon, "jobs", "show", "maintenance") == 0
    (header, row) = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["RUN", "TRIGGER", "DUE"]
    assert row.split()[:2] == [str(run["id"]), "manual"]
    assert "succeeded" in row


async def test_an_unknown_job_exits_1_with_the_reason(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await runbookd(daemon, "jobs", "run", "nope") == 1
    assert "no job 'nope'" in capsys.readouterr().err
