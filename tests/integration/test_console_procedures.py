"""The console's procedures on a real daemon: a run started from the page with its parameters
(a real command sees them), a step waiting for approval approved from the run's page, a run
cancelled and undone, a bad parameter refused with its reason, and a read session's forms
refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.runtime.daemon import Daemon
from tests.integration.test_console import READ, WRITE, base, csrf_of, logged_in, page
from tests.utils import run_daemon, wait_for

CONFIG = f"""\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {{state}}
  api:
    tokens:
      - {{{{name: ops, token: {WRITE}, scope: write}}}}
      - {{{{name: viewer, token: {READ}, scope: read}}}}
remediations:
  on:
    type: command
    argv: [sh, -c, 'echo "on $RUNBOOKD_PARAM_VERSION" >> {{log}}']
  off:
    type: command
    argv: [sh, -c, 'echo off >> {{log}}']
procedures:
  release:
    description: Turns maintenance on, waits for a person, then goes on.
    params:
      version: {{{{pattern: 'v[0-9]+'}}}}
    steps:
      - {{{{name: maintenance, run: on, undo: [off]}}}}
      - {{{{name: go_ahead, approval: true, timeout: 10m}}}}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", log=tmp_path / "steps.log"))
    async with run_daemon(path) as running:
        yield running


def steps(tmp: Path) -> list[str]:
    log = tmp / "steps.log"
    return log.read_text().splitlines() if log.exists() else []


async def test_a_run_is_started_approved_and_another_cancelled_from_the_console(
    daemon: Daemon, tmp_path: Path
) -> None:
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/procedures")
        assert "Turns maintenance on" in html
        assert "No runs yet." in html
        form = {"csrf": csrf_of(html), "param.version": "v7"}
        async with client.post(f"{base(daemon)}/ui/procedures/release/runs", data=form) as r:
            html = await r.text()
        assert r.url.path.startswith("/ui/procedure-runs/run-")
        run_id = r.url.path.rsplit("/", 1)[1]
        await wait_for(lambda: steps(tmp_path) == ["on v7"])
        await wait_for(lambda: bool(daemon.pipeline.approvals.pending))
        _, html = await page(client, f"{base(daemon)}/ui/procedure-runs/{run_id}")
        assert "Approve" in html
        assert 'http-equiv="refresh"' in html  # it runs: the page follows it
        approve = {"csrf": csrf_of(html), "reason": "checked"}
        url = f"{base(daemon)}/ui/procedure-runs/{run_id}/approve"
        async with client.post(url, data=approve) as r:
            assert "approve: done" in await r.text()
        await wait_for(lambda: daemon.procedures.tasks.get(run_id) is None)
        run = await daemon.store.get_procedure_run(run_id)
        assert run is not None
        assert run["status"] == "succeeded"

        async with client.post(f"{base(daemon)}/ui/procedures/release/runs", data=form) as r:
            second = r.url.path.rsplit("/", 1)[1]
        await wait_for(lambda: len(daemon.pipeline.approvals.pending) == 1)
        cancel = {"csrf": form["csrf"], "reason": "wrong release"}
        url = f"{base(daemon)}/ui/procedure-runs/{second}/cancel"
        async with client.post(url, data=cancel) as r:
            assert "cancel: done" in await r.text()
        await wait_for(lambda: daemon.procedures.tasks.get(second) is None)
        _, html = await page(client, f"{base(daemon)}/ui/procedure-runs/{second}")
        assert "cancelled by ops: wrong release" in html
        assert steps(tmp_path) == ["on v7", "on v7", "off"]  # the second run undone

        bad = {"csrf": form["csrf"], "param.version": "latest"}
        async with client.post(f"{base(daemon)}/ui/procedures/release/runs", data=bad) as r:
            html = await r.text()
        assert r.url.path == "/ui/procedures"
        assert "params.version: &#39;latest&#39; does not match" in html


async def test_a_read_session_sees_runs_but_no_forms_and_its_posts_are_refused(
    daemon: Daemon,
) -> None:
    async with logged_in(daemon, READ) as client:
        status, html = await page(client, f"{base(daemon)}/ui/procedures")
        assert status == 200
        assert "Run</button>" not in html
        _, overview = await page(client, f"{base(daemon)}/ui/")
        form = {"csrf": csrf_of(overview), "param.version": "v1"}
        async with client.post(f"{base(daemon)}/ui/procedures/release/runs", data=form) as r:
            assert r.status == 403
            assert "acting needs write" in await r.text()
    assert await daemon.store.list_procedure_runs() == []
