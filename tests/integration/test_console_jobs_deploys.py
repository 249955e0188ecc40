"""The console's jobs and deploys on a real daemon: a job run now from the page runs and shows
in its runs, a second while it goes on is refused with the 409's reason, a restore drill's
recorded report is shown; a read session sees no form and its forged POSTs do nothing; a
deploy CI announces through the API is rolled back (or completes) and its verdict, why and
timeline show; unknown names are 404 pages; markup in what runs and deploys record is text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.runtime.daemon import Daemon
from daemon.store.protocol import Deploy, DeployEntry
from remediations.drill_report import CheckOutcome, DrillReport, TableCount
from tests.fakes.slack import FakeSlack
from tests.integration.test_console import READ, WRITE, base, csrf_of, logged_in, page
from tests.utils import run_daemon, serve, wait_for, wait_until

CONFIG = f"""\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {{state}}
  api:
    tokens:
      - {{{{name: ops, token: {WRITE}, scope: write}}}}
      - {{{{name: viewer, token: {READ}, scope: read}}}}
checks:
  health:
    type: http
    url: {{app}}/health
    interval: 100ms
    timeout: 1s
    jitter: 0
remediations:
  slow_backup:
    type: command
    # Runs until the test lets it end (the gate file), then says so with markup.
    argv: [sh, -c, 'while [ ! -e {{gate}} ]; do sleep 0.02; done; echo "<b>dumped</b>"']
    timeout: 30s
  drill:
    type: command
    argv: ['true']
  rollback:
    type: command
    argv: [sh, -c, 'echo rolled back >> {{log}}']
    cooldown: 0s
  deployments_channel:
    type: slack
    webhook_url: {{slack}}/services/T000/B000/XXXX
jobs:
  nightly_backup:
    run: slow_backup
    schedule: "0 3 * * *"
    timezone: Europe/Berlin
  restore_drill:
    run: drill
    schedule: "0 5 * * 0"
deploys:
  watch_for: {{{{standard: 1500ms}}}}
  rollback_if:
    critical: [health]
  for: 300ms
  min_samples: 2
  clear_for: 200ms
  verify_within: 10s
  extend_up_to: 1s
  rollback: rollback
  announce: [deployments_channel]
"""
HOSTILE = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


@dataclass
class Setup:
    daemon: Daemon
    state: dict[str, object]
    gate: Path
    log: Path
    slack: FakeSlack

    @property
    def url(self) -> str:
        return base(self.daemon)


@asynccontextmanager
async def running(tmp_path: Path, state: dict[str, object], app_url: str) -> AsyncIterator[Setup]:
    """A daemon with two jobs and a deploys: section, its Slack fake on loopback."""
    slack = FakeSlack()
    gate, log = tmp_path / "gate", tmp_path / "rollback.log"
    async with serve(slack.app) as slack_url:
        path = tmp_path / "runbookd.yaml"
        path.write_text(
            CONFIG.format(
                state=tmp_path / "state", app=app_url, gate=gate, log=log, slack=slack_url
            )
        )
        try:
            async with run_daemon(path) as daemon:
                yield Setup(daemon, state, gate, log, slack)
        finally:
            gate.touch()  # a run still waiting ends


@pytest.fixture
async def setup(tmp_path: Path, app_state: tuple[dict[str, object], str]) -> AsyncIterator[Setup]:
    async with running(tmp_path, *app_state) as ready:
        yield ready


# -- jobs ---------------------------------------------------------------------------------------


async def test_a_job_run_now_runs_and_a_second_meanwhile_shows_why_it_is_refused(
    setup: Setup,
) -> None:
    daemon = setup.daemon
    async with logged_in(daemon, WRITE) as client:
        status, html = await page(client, f"{setup.url}/ui/jobs")
        assert status == 200
        assert 'href="/ui/jobs/nightly_backup"' in html
        assert "<code>0 3 * * *</code> Europe/Berlin" in html
        assert html.count("Run now</button>") == 2
        csrf = csrf_of(html)
        url = f"{setup.url}/ui/jobs/nightly_backup/run"
        async with client.post(url, data={"csrf": csrf}) as r:
            assert r.url.path == "/ui/jobs/nightly_backup"
            html = await r.text()
        assert "started a run of nightly_backup" in html
        await wait_for(lambda: daemon.jobs.jobs["nightly_backup"].running)
        async with client.post(url, data={"csrf": csrf}) as r:
            assert r.url.path == "/ui/jobs/nightly_backup"
            html = await r.text()
        assert "a run of job &#39;nightly_backup&#39; is going on" in html
        assert 'class="flash bad"' in html
        assert 'http-equiv="refresh"' in html  # it runs: the page follows it

        setup.gate.touch()
        await wait_for(lambda: not daemon.jobs.jobs["nightly_backup"].running)
        (run,) = await daemon.store.job_runs("nightly_backup")
        assert (run.trigger, run.outcome) == ("manual", "succeeded")
        _, html = await page(client, f"{setup.url}/ui/jobs/nightly_backup")
        assert f'id="run-{run.id}"' in html
        assert "outcome-succeeded" in html
        assert "&lt;b&gt;dumped&lt;/b&gt;" in html  # its output, in its report, as text
        assert "<b>dumped</b>" not in html
        assert 'http-equiv="refresh"' not in html
        _, html = await page(client, f"{setup.url}/ui/jobs")
        assert "outcome-succeeded" in html

        async with client.post(f"{setup.url}/ui/jobs/nope/run", data={"csrf": csrf}) as r:
            assert r.url.path == "/ui/jobs"
            assert "no job &#39;nope&#39;" in await r.text()
        status, html = await page(client, f"{setup.url}/ui/jobs/nope")
        assert status == 404
        assert "no job &#39;nope&#39;" in html
    assert len(await daemon.store.job_runs("nightly_backup")) == 1


async def drill_run(
    daemon: Daemon,
    outcome: str = "failed",
    detail: str = f"drill failed: {HOSTILE}",
    **changes: Any,
) -> int:
    """A restore drill's run as the job runner records it: its report as the run's data."""
    report = DrillReport(1_700_000_000.0, 900.0, 86_400.0, "backups", key="db/2024.dump")
    report.backup_bytes = 52_428_800
    report.sha256 = report.sha256_expected = "ab" * 32
    report.time_to_recover_seconds, report.within_rto = 42.5, True
    report.within_rpo = False
    report.row_counts = [
        TableCount("users", 120, 120, ok=True),
        TableCount(HOSTILE, 7, 6, ok=False, error="6 rows restored, 7 in the backup"),
    ]
    report.checks = [CheckOutcome("SELECT count(*) > 0 FROM users", True, "true")]
    report.fail("the backup is 30h old: over the RPO of 1d")
    for key, value in changes.items():
        setattr(report, key, value)
    run_id = await daemon.store.add_job_run("restore_drill", "schedule", 1.7e9, 1.7e9)
    await daemon.store.finish_job_run(run_id, 1.7e9 + 50, outcome, detail, report.to_dict())
    return run_id


async def test_a_restore_drills_report_shows_what_it_recorded(setup: Setup) -> None:
    run_id = await drill_run(setup.daemon)
    async with logged_in(setup.daemon, READ) as client:
        status, html = await page(client, f"{setup.url}/ui/jobs/restore_drill")
    assert status == 200
    assert f'id="report-{run_id}"' in html
    for shown in (
        "50.0 MiB",  # backup_bytes
        "ab" * 32,  # its sha256
        "42.5s",  # time to recover
        "<dt>within_rto</dt><dd>yes</dd>",
        '<dt>within_rpo</dt><dd class="bad">no</dd>',
        "6 rows restored, 7 in the backup",
        "<td>120</td><td>120</td><td>yes</td><td>—</td>",  # no error: not "unknown"
        "SELECT count(*) &gt; 0 FROM users",
        "the backup is 30h old: over the RPO of 1d",
        "50s",  # the run's duration
    ):
        assert shown in html, shown
    assert HOSTILE not in html
    assert f"drill failed: {ESCAPED}" in html
    assert f"<td>{ESCAPED}</td>" in html  # a table's name in the row counts


async def test_a_read_session_sees_jobs_but_no_form_and_its_posts_do_nothing(
    setup: Setup,
) -> None:
    url = f"{setup.url}/ui/jobs/nightly_backup/run"
    async with logged_in(setup.daemon, READ) as client:
        for path in ("/ui/jobs", "/ui/jobs/nightly_backup"):
            status, html = await page(client, setup.url + path)
            assert status == 200
            assert "Run now" not in html
            assert "/run" not in html
            assert html.count("<button") == 1  # log out
        csrf = csrf_of(html)  # the logout form's
        for data in ({"csrf": csrf}, {}):
            async with client.post(url, data=data) as r:
                assert r.status == 403
                text = await r.text()
            assert ("acting needs write" if data else "CSRF token is not this session") in text
    async with logged_in(setup.daemon, WRITE) as client, client.post(url, data={}) as r:
        assert r.status == 403  # a write session, without its CSRF token
    assert not setup.daemon.jobs.jobs["nightly_backup"].running
    assert await setup.daemon.store.job_runs("nightly_backup") == []


# -- deploys ------------------------------------------------------------------------------------


async def announce(client: aiohttp.ClientSession, setup: Setup, **body: str) -> str:
    headers = {"Authorization": f"Bearer {WRITE}"}
    url = f"{setup.url}/api/v1/deploys"
    body = {"environment": "production"} | body
    async with client.post(url, json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        deploy_id: str = (await r.json())["deploy"]["id"]
        return deploy_id


async def status_of(daemon: Daemon, deploy_id: str) -> str | None:
    found = await daemon.store.get_deploy(deploy_id)
    return found.status if found is not None else None


async def test_a_deploy_rolled_back_and_one_completed_show_their_verdicts_and_timelines(
    setup: Setup,
) -> None:
    daemon = setup.daemon
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{setup.url}/ui/deploys")
        assert "No deploys recorded." in html
        good = await announce(client, setup, version="v1.0.0", commit="4f2a9c1d", by="ana")
        await wait_for(lambda: daemon.deploys.watch is None, within=10)
        assert await status_of(daemon, good) == "completed"

        bad = await announce(client, setup, version=f"v2 {HOSTILE}", commit="bad0bad0")
        await wait_for(lambda: daemon.deploys.watch is not None)
        setup.state["up"] = False
        await wait_for(lambda: setup.log.exists(), within=10)

        async def rolled_back() -> bool:
            return await status_of(daemon, bad) == "rolled_back"

        await wait_until(rolled_back, "the deploy rolled back", within=10)
        deploy = await daemon.store.get_deploy(bad)
        assert deploy is not None
        assert deploy.incident is not None

        status, html = await page(client, f"{setup.url}/ui/deploys")
        assert status == 200
        assert html.index(f'href="/ui/deploys/{bad}"') < html.index(f'href="/ui/deploys/{good}"')
        assert "deploy-rolled_back" in html
        assert "deploy-completed" in html
        assert "critical endpoint health failing (up 0)" in html  # the breach: why
        assert "rolled back" in html
        assert f'href="/ui/incidents/{deploy.incident}"' in html
        assert "<code>4f2a9c1d</code>" in html
        assert HOSTILE not in html
        assert f"v2 {ESCAPED}" in html

        _, listed = await page(client, f"{setup.url}/ui/deploys?status=completed")
        assert f'href="/ui/deploys/{good}"' in listed
        assert f'href="/ui/deploys/{bad}"' not in listed
        status, _ = await page(client, f"{setup.url}/ui/deploys?status=sideways")
        assert status == 400

        status, html = await page(client, f"{setup.url}/ui/deploys/{bad}")
        assert status == 200
        assert HOSTILE not in html
        assert f'href="/ui/incidents/{deploy.incident}"' in html
        assert "Previous (last known good)</dt><dd>v1.0.0</dd>" in html
        for kind in ("received", "announced", "breach", "rolled_back"):
            assert f'class="kind-{kind}"' in html, kind
        assert "Starting deployment of" in html  # its announcement
        assert "outcome-succeeded" in html  # posted
        assert "seconds_after_deploy=" in html  # the rollback's recorded facts
        _, html = await page(client, f"{setup.url}/ui/deploys/{good}")
        assert "completed: watched" in html
        status, html = await page(client, f"{setup.url}/ui/deploys/dep-nope")
        assert status == 404
        assert "no deploy &#39;dep-nope&#39;" in html

        _, overview = await page(client, f"{setup.url}/ui/")
        assert f'href="/ui/deploys/{bad}"' in overview
        assert 'href="/ui/jobs/nightly_backup"' in overview
        assert 'href="/ui/deploys"' in overview


async def test_a_deploy_recorded_with_little_shows_what_it_has_and_unknown_as_unknown(
    setup: Setup,
) -> None:
    now = setup.daemon.clock.now()
    deploy = Deploy(
        "dep-sparse",
        "v3",
        "production",
        "standard",
        "vercel",
        now,
        baseline={"traffic.error_ratio": 0.004, "traffic.p95_seconds": None},
        data={"deployment": {"url": HOSTILE}},
        timeline=[
            DeployEntry(now, "announced", "an entry from an older runbookd"),  # no text, no ok
            DeployEntry(now, "breach", HOSTILE, {"failing_since": now, "note": HOSTILE}),
        ],
    )
    await setup.daemon.store.create_deploy(deploy)
    async with logged_in(setup.daemon, READ) as client:
        status, html = await page(client, f"{setup.url}/ui/deploys/dep-sparse")
        assert status == 200
        assert "<td><code>traffic.error_ratio</code></td><td>0.4%</td>" in html
        assert '<code>traffic.p95_seconds</code></td><td><span class="quiet">unknown' in html
        assert "an entry from an older runbookd" in html
        assert 'http-equiv="refresh"' in html  # still watched: the page follows it
        assert HOSTILE not in html
        assert ESCAPED in html
        status, html = await page(client, f"{setup.url}/ui/deploys")
        assert status == 200
        assert HOSTILE not in html
