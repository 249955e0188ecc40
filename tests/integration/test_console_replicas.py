"""The console on a standby: it shows what the leader holds (checks, approvals, jobs) and hands
the operator's action (an approval, a job run now) to the leader, like the API does. Two
daemons on one PostgreSQL database."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.pg import Database, fresh_database
from tests.utils import run_daemon, wait_for, wait_until

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  store: {{type: postgres, dsn_file: {dsn_file}, lease_ttl: 1s}}
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [notify]
remediations:
  notify:
    type: http
    url: {url}/hook
    body: {{approved: true}}
    require_approval: true
    approval_timeout: 1m
  mark:
    type: command
    argv: ['true']
jobs:
  nightly:
    run: mark
    schedule: "0 3 * * *"
"""


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    async with fresh_database() as database:
        yield database


def config(directory: Path, database: Database, url: str) -> Path:
    directory.mkdir()
    (directory / "dsn").write_text(database.dsn + "\n")
    path = directory / "runbookd.yaml"
    path.write_text(CONFIG.format(state=directory / "state", dsn_file=directory / "dsn", url=url))
    return path


async def test_a_standbys_console_shows_the_leaders_state_and_hands_it_the_approval(
    tmp_path: Path, database: Database, app_state: tuple[dict[str, object], str]
) -> None:
    state, url = app_state
    async with contextlib.AsyncExitStack() as stack:
        leader = await stack.enter_async_context(run_daemon(config(tmp_path / "a", database, url)))
        standby = await stack.enter_async_context(run_daemon(config(tmp_path / "b", database, url)))
        assert (leader.role(), standby.role()) == ("leader", "standby")
        state["up"] = False
        await wait_for(lambda: bool(leader.pipeline.approvals.pending))
        (pending,) = leader.pipeline.approvals.pending.values()
        jar = aiohttp.CookieJar(unsafe=True)
        client = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
        base = f"http://127.0.0.1:{standby.port}/ui"
        async with client.post(f"{base}/login") as r:  # no tokens: the console opens
            html = await r.text()
        assert "This replica is the <strong>standby</strong>" in html
        assert "status-critical" in html  # the leader's checks: a standby runs none
        assert standby.observed.latest("health") is None
        async with client.get(f"{base}/incidents/{pending.incident_id}") as r:
            html = await r.text()
        assert "waits for approval" in html  # the leader's approvals
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found
        form = {"csrf": found[1], "reason": "from the standby"}
        async with client.post(f"{base}/incidents/{pending.incident_id}/approve", data=form) as r:
            html = await r.text()
        assert "approve: done" in html
        await wait_for(lambda: bool(state.get("hooks")))
        assert not leader.pipeline.approvals.pending


async def test_a_standbys_console_lists_the_leaders_jobs_and_hands_it_a_run_now(
    tmp_path: Path, database: Database, app_state: tuple[dict[str, object], str]
) -> None:
    url = app_state[1]
    async with contextlib.AsyncExitStack() as stack:
        leader = await stack.enter_async_context(run_daemon(config(tmp_path / "a", database, url)))
        standby = await stack.enter_async_context(run_daemon(config(tmp_path / "b", database, url)))
        jar = aiohttp.CookieJar(unsafe=True)
        client = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
        base = f"http://127.0.0.1:{standby.port}/ui"
        async with client.post(f"{base}/login") as r:
            assert r.status == 200
        async with client.get(f"{base}/jobs") as r:
            html = await r.text()
        assert 'href="/ui/jobs/nightly"' in html
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found
        async with client.post(f"{base}/jobs/nightly/run", data={"csrf": found[1]}) as r:
            html = await r.text()
        assert "started a run of nightly" in html
        await wait_for(lambda: not leader.jobs.jobs["nightly"].running)

        async def ran() -> bool:
            runs = await standby.store.job_runs("nightly")
            return [(run.trigger, run.outcome) for run in runs] == [("manual", "succeeded")]

        await wait_until(ran, "the leader ran the job")
        async with client.get(f"{base}/jobs/nightly") as r:
            assert "outcome-succeeded" in await r.text()  # the shared store's runs
