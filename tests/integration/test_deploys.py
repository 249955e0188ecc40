"""Deploys in a real daemon, against the Vercel and Slack fakes on loopback: Vercel's signed
deployment webhooks (a good signature starts a watch, a forged, missing or stale one is
refused and changes nothing, a replayed delivery is answered and changes nothing), a bad
deploy rolled back through Vercel's API and announced, and CI's announcements through the API
and the command line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from daemon.cli.main import main
from daemon.runtime.daemon import Daemon
from tests.fakes.slack import FakeSlack
from tests.fakes.vercel import TOKEN, FakeVercel, Project, signed
from tests.utils import run_daemon, serve, wait_for

SECRET = "vercel-webhook-secret-0123456789"
CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
checks:
  health:
    type: http
    url: {app}/health
    interval: 200ms
    timeout: 150ms
    jitter: 0
remediations:
  rollback:
    type: vercel_rollback
    token: {token}
    project_id: prj_store
    api_url: {vercel}
    poll_interval: 100ms
    verify_timeout: 5s
    cooldown: 0s
  deployments_channel:
    type: slack
    webhook_url: {slack}/services/T000/B000/XXXX
  page_oncall:
    type: slack
    webhook_url: {slack}/services/T000/B000/XXXX
deploys:
  watch_for: {{standard: 2s, hotfix: 4s}}
  rollback_if:
    critical: [health]
  for: 600ms
  min_samples: 3
  clear_for: 200ms
  verify_within: 10s
  extend_up_to: 2s
  rollback: rollback
  announce: [deployments_channel]
  page: [page_oncall]
  vercel:
    webhook_secret: {secret}
    project_id: prj_store
    max_age: 1m
"""


class App:
    """The application watched: its health endpoint answers as `up` says."""

    def __init__(self) -> None:
        self.up = True
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok" if self.up else "down"}, status=200 if self.up else 503
        )


@dataclass
class Setup:
    daemon: Daemon
    vercel: FakeVercel
    project: Project
    slack: FakeSlack
    app: App
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/api/v1/vercel/events"

    async def deliver(self) -> list[tuple[int, Any]]:
        return await self.vercel.deliver(self.session, self.events_url, SECRET)

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(self.events_url, data=body, headers=headers) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.url}/api/v1{path}") as r:
            return r.status, await r.json()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.slack.messages]


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


@asynccontextmanager
async def servers(tmp_path: Path) -> AsyncIterator[tuple[Path, FakeVercel, FakeSlack, App]]:
    """The fakes on loopback, and a config that points the daemon at them."""
    vercel, slack, app = FakeVercel(now=time.time), FakeSlack(), App()
    async with (
        serve(vercel.app) as vercel_url,
        serve(slack.app) as slack_url,
        serve(app.app) as app_url,
    ):
        path = tmp_path / "runbookd.yaml"
        path.write_text(
            CONFIG.format(
                state=tmp_path / "state",
                app=app_url,
                vercel=vercel_url,
                slack=slack_url,
                token=TOKEN,
                secret=SECRET,
            )
        )
        yield path, vercel, slack, app


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with servers(tmp_path) as (path, vercel, slack, app):
        project = vercel.add_project("prj_store", "storefront")
        async with run_daemon(path) as daemon, aiohttp.ClientSession() as session:
            yield Setup(daemon, vercel, project, slack, app, session)


async def test_a_signed_promotion_starts_a_watch_forged_and_stale_ones_change_nothing(
    setup: Setup,
) -> None:
    first = setup.vercel.add_deployment(setup.project)
    answers = await setup.deliver()
    # created and succeeded change nothing; the promotion (production serves it) is a deploy.
    assert [(status, a["received"], a["action"]) for status, a in answers] == [
        (200, "deployment.created", "ignored"),
        (200, "deployment.succeeded", "ignored"),
        (200, "deployment.promoted", "watching"),
    ]
    deploy_id = answers[-1][1]["deploy"]
    status, deploy = await setup.get(f"/deploys/{deploy_id}")
    assert (status, deploy["version"], deploy["source"]) == (200, first.id, "vercel")
    assert deploy["commit"] == (first.id * 8)[:40].lower()
    assert deploy["data"]["deployment"]["url"] == first.url
    await wait_for(lambda: setup.slack.messages)
    assert setup.texts()[0].startswith(f"Starting deployment of {first.id} to production at ")

    # The next deployment's promotion, sent by hand.
    second = setup.vercel.add_deployment(setup.project)
    promoted = [d for d in setup.vercel.deliveries if d["type"] == "deployment.promoted"]
    setup.vercel.deliveries.clear()
    body, headers = signed(promoted[0], SECRET)
    forged_body, forged = signed(promoted[0], "not-the-secret-0123456789")

    # Forged, missing, or over another body: 401 with a reason, and no deploy.
    assert await setup.post(forged_body, forged) == (
        401,
        {
            "error": "x-vercel-signature: bad signature (expected the hex HMAC-SHA1 of the body "
            "with deploys.vercel.webhook_secret)"
        },
    )
    unsigned = {"Content-Type": "application/json"}
    assert await setup.post(body, unsigned) == (401, {"error": "missing x-vercel-signature header"})
    tampered = body.replace(second.id.encode(), first.id.encode())
    assert (await setup.post(tampered, headers))[0] == 401
    _, listed = await setup.get("/deploys")
    assert [d["id"] for d in listed["deploys"]] == [deploy_id]

    status, answer = await setup.post(body, headers)
    assert (status, answer["action"]) == (200, "watching")
    second_deploy = answer["deploy"]
    for _ in range(2):  # replayed: idempotent
        assert await setup.post(body, headers) == (
            200,
            {
                "received": "deployment.promoted",
                "action": "duplicate",
                "deploy": second_deploy,
                "reason": "this delivery was received before: nothing changes",
            },
        )
    _, listed = await setup.get("/deploys")
    assert [(d["id"], d["status"]) for d in listed["deploys"]] == [
        (second_deploy, "watching"),
        (deploy_id, "superseded"),
    ]

    # Stale: signed, but generated long ago (an old delivery replayed).
    stale = dict(promoted[0], id="evt_old", createdAt=int((time.time() - 3600) * 1000))
    status, error = await setup.post(*signed(stale, SECRET))
    assert status == 401
    assert error["error"].startswith("stale delivery: createdAt is 1h before runbookd's clock")
    # Signed, but with a number JSON does not have: 400.
    not_finite = body.replace(b'"createdAt": ', b'"createdAt": 1e400, "x": ')
    status, error = await setup.post(*signed(json.loads(not_finite), SECRET))
    # (json.loads reads 1e400 as inf; sent again, it is written as Infinity)
    assert status == 400
    assert error["error"].startswith("body: NaN, Infinity and numbers beyond")
    # Signed but not a delivery: 400 naming the field.
    status, error = await setup.post(
        *signed({"id": "evt_x", "type": "deployment.promoted"}, SECRET)
    )
    assert (status, error["error"]) == (400, "createdAt: Field required")
    _, listed = await setup.get("/deploys")
    assert len(listed["deploys"]) == 2


async def test_a_bad_deploy_is_rolled_back_through_vercel_and_announced(setup: Setup) -> None:
    good = setup.vercel.add_deployment(setup.project)
    await setup.deliver()
    await wait_for(lambda: any(t.startswith("✅") for t in setup.texts()))
    assert setup.texts()[-1] == f"✅ Deployment of {good.id} completed"

    setup.vercel.add_deployment(setup.project)  # a bad build
    (*_, (status, answer)) = await setup.deliver()
    assert (status, answer["action"]) == (200, "watching")
    bad_deploy = answer["deploy"]
    await asyncio.sleep(0.5)
    setup.app.up = False
    broke_at = time.monotonic()
    await wait_for(lambda: setup.vercel.projects["prj_store"].production_id == good.id)
    rolled_at = time.monotonic()
    await wait_for(lambda: any(t.startswith("Rolled back") for t in setup.texts()))
    assert setup.texts()[-1] == (
        f"Rolled back to {good.id} due to critical endpoint health failing (up 0)"
    )
    (rollback,) = setup.vercel.requests("POST", f"/v1/projects/prj_store/rollback/{good.id}")
    assert "runbookd: incident inc-" in rollback.query["description"]
    _, deploy = await setup.get(f"/deploys/{bad_deploy}")
    assert deploy["status"] == "rolled_back"
    assert deploy["previous"] == good.id
    rolled = next(e for e in deploy["timeline"] if e["kind"] == "rolled_back")
    # `for: 600ms` at a 200ms interval: the rollback begins within `for` plus one interval
    # of the first failing check; Vercel's switch (polled every 100ms) comes on top.
    assert rolled["data"]["seconds_after_first_failure"] < 0.6 + 0.2 + 1.0
    assert rolled_at - broke_at < 0.6 + 0.2 + 1.0 + 0.5
    value = setup.daemon.registry.get_sample_value(
        "runbookd_deploys_total", {"outcome": "rolled_back"}
    )
    assert value == 1
    # The incident that rolled it back resolves once the application is healthy again.
    setup.app.up = True
    incident = deploy["incident"]
    await wait_for(lambda: incident not in {i.id for i in setup.daemon.engine.incidents.values()})
    status, detail = await setup.get(f"/incidents/{incident}")
    assert [e["kind"] for e in detail["timeline"]][:3] == ["opened", "action", "result"]
    assert "verified" in [e["kind"] for e in detail["timeline"]]


async def runbookd(setup: Setup, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv, "--url", setup.url])


async def test_ci_announces_through_the_api_and_the_command_line(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["deploy", "announce", "--version", "v1.2.3", "--kind", "hotfix", "--by", "ana"]
    assert await runbookd(setup, *argv, "--commit", "4f2a9c1") == 0
    out = capsys.readouterr().out
    assert out.startswith("watching dep-")
    deploy_id = out.split()[1]
    assert out.endswith(f"(v1.2.3 to production): `runbookd deploys show {deploy_id}` follows it\n")

    assert await runbookd(setup, "deploys") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["ID", "STATUS", "VERSION", "ENV", "KIND", "SOURCE"]
    assert row.split()[:6] == [deploy_id, "watching", "v1.2.3", "production", "hotfix", "ci"]
    assert await runbookd(setup, "deploys", "show", deploy_id) == 0
    shown = capsys.readouterr().out
    assert "version:  v1.2.3 to production (commit 4f2a9c1 by ana)" in shown
    assert "ci: hotfix deploy of v1.2.3 (4f2a9c1) to production by ana" in shown
    assert "watching for 4s" in shown
    assert await runbookd(setup, "deploys", "list", "--status", "completed", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"deploys": []}

    # Another environment is recorded, not watched.
    async with setup.session.post(
        f"{setup.url}/api/v1/deploys", json={"version": "v9", "environment": "staging"}
    ) as r:
        answer = await r.json()
    assert (r.status, answer["action"], answer["deploy"]["status"]) == (
        201,
        "recorded",
        "not_watched",
    )
    # Refusals say why.
    async with setup.session.post(
        f"{setup.url}/api/v1/deploys", json={"version": "", "environment": "production"}
    ) as r:
        assert (r.status, await r.json()) == (
            400,
            {"error": "version: String should have at least 1 character"},
        )
    assert await setup.get("/deploys?status=sideways") == (
        400,
        {"error": "status: must be one of " + ", ".join(
            ["watching", "rolling_back", "completed", "rolled_back", "not_rolled_back",
             "inconclusive", "superseded", "build_failed", "not_watched"]
        )},
    )  # fmt: skip
    assert await setup.get("/deploys/dep-nope") == (404, {"error": "no deploy 'dep-nope'"})
    assert await runbookd(setup, "deploys", "show", "dep-nope") == 1
    assert "no deploy 'dep-nope'" in capsys.readouterr().err


async def test_without_a_deploys_section_deploys_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(f"runbookd:\n  listen: 127.0.0.1:0\n  state_dir: {tmp_path / 'state'}\n")
    async with run_daemon(path) as daemon, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{daemon.port}"
        argv = ["deploy", "announce", "--version", "v1", "--url", url]
        assert await asyncio.to_thread(main, argv) == 1
        assert "no deploys: section in the config" in capsys.readouterr().err
        # A Vercel delivery gets the answer a bad signature gets: no secret to verify it.
        body, headers = signed({"id": "evt_1", "type": "deployment.promoted"}, SECRET)
        async with session.post(f"{url}/api/v1/vercel/events", data=body, headers=headers) as r:
            assert r.status == 401


async def test_a_watch_goes_on_after_a_restart(tmp_path: Path) -> None:
    async with servers(tmp_path) as (path, _, slack, _):
        body = {"version": "v2", "environment": "production", "kind": "hotfix"}
        async with run_daemon(path) as daemon, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{daemon.port}/api/v1/deploys"
            async with session.post(url, json=body) as r:
                deploy_id = (await r.json())["deploy"]["id"]
            started = daemon.clock.now()
        async with run_daemon(path) as daemon:
            watch = daemon.deploys.watch
            assert watch is not None
            assert watch.deploy.id == deploy_id
            # It ends when it would have: the hotfix's 4s after the deploy, not after the start.
            assert watch.ends_at == pytest.approx(started + 4, abs=0.05)
            await wait_for(lambda: daemon.deploys.watch is None)
            deploy = await daemon.store.get_deploy(deploy_id)
            assert deploy is not None
            kinds = [e.kind for e in deploy.timeline]
            assert kinds.index("resumed") < kinds.index("completed")
            assert deploy.status == "completed"
        assert [m["text"] for m in slack.messages][-1] == "✅ Deployment of v2 completed"
