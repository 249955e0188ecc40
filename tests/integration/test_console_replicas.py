"""The console on a standby: it shows what the leader holds (checks, approvals) and hands the
operator's action to the leader, like the API does. Two daemons on one PostgreSQL database."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.pg import Database, fresh_database
from tests.utils import run_daemon, wait_for

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
