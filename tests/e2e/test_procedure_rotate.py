"""config/procedures/rotate-secrets.yaml, end to end: a real runbookd process runs the shipped
procedure against the Vercel fake (the documented env endpoints and redeploys), the
PagerDuty fake and an application whose health route the test controls. New values must
reach production; at any failure the old ones must be back (in the project, and in what
production serves) and on-call paged. No value, old or new, may appear anywhere runbookd
writes or answers: its log, every API answer, its state directory, the page, or any request
it sent other than the edits that carry the values."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.fakes.vercel import TEAM, TOKEN, Env, FakeVercel
from tests.leaks import find_leaks, random_text
from tests.procedure_daemon import Runbookd, credentials, runbookd, shipped, state_files
from tests.utils import serve

PROCEDURE = "rotate_secrets"
KEYS = ("SESSION_SECRET", "JWT_SECRET")


class World:
    def __init__(self) -> None:
        self.vercel = FakeVercel(teams={TEAM: "acme"}, ready_after=1)
        self.project = self.vercel.add_project("prj_store", "storefront", TEAM)
        self.old = {key: base64.b64encode(random_text(32).encode()).decode() for key in KEYS}
        # JWT_SECRET first: the list is newest first, so SESSION_SECRET is edited first.
        for created, key in enumerate(reversed(KEYS)):
            env = Env(
                f"env_{key.lower()}", key, self.old[key], "encrypted", ["production"], created
            )
            self.project.envs.append(env)
        self.vercel.add_deployment(self.project).env = dict(self.old)
        self.pager = FakePagerDuty()
        # The application fails its health check with new values: the rotation broke it.
        self.new_values_break_it = False
        self.daemon: Runbookd

    def values(self) -> dict[str, str]:
        return {e.key: e.value for e in self.project.envs}

    def serving(self) -> dict[str, str]:
        """The values the build production serves was made with."""
        return dict(self.vercel.deployments[self.project.production_id or ""].env)

    def env_path(self, key: str) -> str:
        return f"/v9/projects/prj_store/env/env_{key.lower()}"

    def edits(self) -> list[tuple[str, str]]:
        """(variable path, value) of every edit runbookd sent, in order."""
        return [
            (c.path, c.body["value"])
            for c in self.vercel.calls
            if c.method == "PATCH" and c.path.startswith("/v9/projects/")
        ]

    async def health(self, request: web.Request) -> web.Response:
        broken = self.new_values_break_it and self.serving() != self.old
        return web.json_response({"ok": not broken}, status=503 if broken else 200)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World()
    app = web.Application()
    app.router.add_get("/api/health", w.health)
    async with (
        serve(w.vercel.app) as vercel_url,
        serve(w.pager.app) as pager_url,
        serve(app) as app_url,
    ):
        vercel = {"api_url": vercel_url, "poll_interval": "50ms", "verify_timeout": "10s"}
        changes: dict[str, Any] = {
            "remediations.page_oncall.events_url": f"{pager_url}/v2/enqueue",
            "procedures.rotate_secrets.steps.1.timeout": "6s",  # healthy: 5m as shipped
            "checks.health.jitter": "0",  # its first run at once: the precondition reads it
        }
        for name in ("rotate_secrets", "restore_secrets"):
            changes |= {f"remediations.{name}.{k}": v for k, v in vercel.items()}
        files = credentials(tmp_path / "credentials", {"vercel": TOKEN, "pagerduty": ROUTING_KEY})
        env = {
            "CREDENTIALS_DIRECTORY": str(files),
            "APP_URL": app_url,
            "VERCEL_PROJECT_ID": "prj_store",
            "VERCEL_TEAM_ID": TEAM,
        }
        async with runbookd(shipped("rotate-secrets.yaml", changes), tmp_path, env) as daemon:
            w.daemon = daemon
            yield w
            await assert_no_value_leaked(w)


async def assert_no_value_leaked(w: World) -> None:
    """Neither the old values nor any sent in an edit appear anywhere but in those edits."""
    for path in ("procedure-runs", "procedures"):
        await w.daemon.call("get", path)
    values = {f"old {k}": v for k, v in w.old.items()}
    values |= {f"sent to {path} #{i}": v for i, (path, v) in enumerate(w.edits())}
    outputs = {"log": w.daemon.log.read_bytes()} | state_files(w.daemon.state)
    outputs |= {f"api answer {i}": answer for i, answer in enumerate(w.daemon.answers)}
    outputs |= {f"page {i}": json.dumps(r.body).encode() for i, r in enumerate(w.pager.received)}
    for i, call in enumerate(w.vercel.calls):
        body = None if call.method == "PATCH" else call.body  # the edits carry the values
        sent = {"path": call.path, "query": call.query, "headers": call.headers, "body": body}
        outputs[f"request {i} {call.method} {call.path}"] = json.dumps(sent).encode()
    assert w.daemon.log.stat().st_size > 0
    leaks = find_leaks(values, outputs)
    assert leaks == [], "\n".join(map(str, leaks))


async def test_a_rotation_puts_new_values_in_production(world: World) -> None:
    w = world
    began = time.monotonic()
    run = await w.daemon.ended(await w.daemon.start(PROCEDURE))

    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    new = w.values()
    for key in KEYS:
        assert len(base64.b64decode(new[key], validate=True)) == 32  # openssl rand -base64 32
        assert new[key] != w.old[key]
    assert new["SESSION_SECRET"] != new["JWT_SECRET"]
    assert w.serving() == new  # production redeployed with them
    assert "rotated SESSION_SECRET, JWT_SECRET; production serves" in run["steps"][0]["detail"]
    assert w.pager.events == []
    print(f"rotate procedure: {time.monotonic() - began:.1f}s")


@pytest.mark.parametrize("failure", ["env_refused", "build_failed", "unhealthy"])
async def test_a_failed_rotation_puts_the_old_values_back_and_pages(
    world: World, failure: str
) -> None:
    w = world
    builds = len(w.vercel.deployments)
    if failure == "env_refused":  # the second edit: the first must be put back
        w.vercel.fail_next(400, method="PATCH", path=w.env_path("JWT_SECRET"))
    elif failure == "build_failed":
        w.vercel.build_outcome = "ERROR"
    else:
        w.new_values_break_it = True
    run = await w.daemon.ended(await w.daemon.start(PROCEDURE))

    assert run["status"] == "failed", run
    assert w.values() == w.old
    assert w.serving() == w.old
    statuses = [s["status"] for s in run["steps"]]
    rotate = run["steps"][0]["detail"]
    if failure == "env_refused":
        assert statuses == ["failed", "pending"]
        assert "edit variable JWT_SECRET: HTTP 400" in rotate, rotate
        assert "the old values are kept" in rotate
        session = w.env_path("SESSION_SECRET")
        assert [v for p, v in w.edits() if p == session][1:] == [w.old["SESSION_SECRET"]]
        assert len(w.vercel.deployments) == builds  # nothing redeployed
    elif failure == "build_failed":
        assert statuses == ["failed", "pending"]
        assert "ended ERROR; the old values are back" in rotate, rotate
    else:
        assert statuses == ["undone", "failed"]
        assert "health not OK within 6s" in run["steps"][1]["detail"]
        undo = [e for e in run["timeline"] if e["kind"] == "undo"]
        assert "put back SESSION_SECRET, JWT_SECRET; production serves" in undo[0]["message"]
    (page,) = w.pager.events
    assert page["event_action"] == "trigger"
