"""`runbookd demo deploy`: two deploys announced by CI and watched against the values before
them. v2 is good: its watch completes and v2 becomes the last known good. v3-bad fails every
fifth request and makes every fourth slow: the breach is detected against the pre-deploy
baseline, v3-bad is rolled back to v2 and the rollback is announced.

Everything binds 127.0.0.1: the application, a Slack channel that prints the announcements, a
pager, and the daemon with config/demo-deploy.yaml (the runbook's deploy watch in seconds
instead of minutes). The demo prints what happens as it happens and exits 0 once every step
was seen, or 1 naming the step that did not happen.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from daemon.api.servers import serve
from daemon.cli.demo.app import Channel, DemoApp, Pager
from daemon.cli.demo.run import (
    DemoFailed,
    Stage,
    bundled_config,
    say_now,
    show_timelines,
    traffic,
)
from daemon.config.loader import load_config
from daemon.core.models import Incident
from daemon.core.units import format_duration
from daemon.deploys.criteria import percent, seconds
from daemon.deploys.state import LAST_GOOD
from daemon.runtime.daemon import Daemon

DEPLOY_CONFIG = bundled_config("demo-deploy.yaml")
CLIENTS = 2  # concurrent users: a slow version still gets enough traffic to be judged
WORK = 0.02  # every request's own time (a simulated query)
SLOW, SLOW_EVERY = 0.3, 4  # v3-bad: every fourth request 300 ms slower
ERRORS_EVERY = 100  # every version: 1% of requests fail, the background error rate
# The latency histogram's buckets: the good versions' requests fall well inside the first
# wide one, so a loaded machine's jitter does not read as a 50% slowdown.
BUCKETS = (0.01, 0.1, 0.25, 0.5, 1.0, 2.5)
STEP_TIMEOUT = 15.0  # each step's bound: a watch (6s) and its extension fit in it


async def run_deploy_demo(
    config_path: Path = DEPLOY_CONFIG,
    out: Callable[[str], None] = say_now,
    step_timeout: float = STEP_TIMEOUT,
    stay: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """The story, then, if it completed and `stay` is given, everything kept up until `stay`
    (given the console's URL) returns: the deploys it recorded can be browsed."""
    stage = Stage(out, step_timeout)
    app = DemoApp(
        work=WORK, errors_every=ERRORS_EVERY, slow_every=SLOW_EVERY, slow=SLOW, buckets=BUCKETS
    )
    pager = Pager()

    def post(text: str, facts: list[str]) -> None:
        stage.say(f"  #deployments: {text}")
        if facts:
            stage.say(f"                {' · '.join(facts)}")

    channel = Channel(post)
    with tempfile.TemporaryDirectory(prefix="runbookd-demo-deploy-") as state_dir:
        async with (
            serve(app.app) as app_url,
            serve(pager.app) as pager_url,
            serve(channel.app) as slack_url,
        ):
            os.environ.update(
                DEMO_APP_URL=app_url,
                DEMO_PAGER_URL=pager_url,
                DEMO_SLACK_URL=slack_url,
                RUNBOOKD_STATE_DIR=state_dir,
            )
            daemon = Daemon(load_config(config_path), config_path=config_path)
            opened = show_timelines(stage, daemon)
            async with aiohttp.ClientSession() as session:
                users = [
                    asyncio.create_task(traffic(session, f"{app_url}/api/tasks"))
                    for _ in range(CLIENTS)
                ]
                await daemon.start()
                try:
                    world = World(stage, daemon, app, app_url, channel, opened, session)
                    code = await world.scenario()
                    if code == 0 and stay is not None:
                        console = f"http://127.0.0.1:{daemon.port}/ui/deploys"
                        stage.say(f"the console stays up at {console} (Ctrl-C ends the demo)")
                        await stay(console)
                    return code
                except DemoFailed as failed:
                    stage.say(f"✗ demo failed: this step did not happen: {failed}")
                    return 1
                finally:
                    for user in users:
                        user.cancel()
                    await asyncio.gather(*users, return_exceptions=True)
                    await daemon.stop()


class World:
    def __init__(
        self,
        stage: Stage,
        daemon: Daemon,
        app: DemoApp,
        app_url: str,
        channel: Channel,
        opened: list[Incident],
        session: aiohttp.ClientSession,
    ) -> None:
        self.stage = stage
        self.daemon = daemon
        self.app = app
        self.app_url = app_url
        self.channel = channel
        self.opened = opened
        self.session = session
        self.api = f"http://127.0.0.1:{daemon.port}/api/v1"

    async def scenario(self) -> int:
        stage, daemon, app = self.stage, self.daemon, self.app
        stage.say(f"application v1 serving {CLIENTS} users; runbookd on port {daemon.port}")
        stage.say(f"console: http://127.0.0.1:{daemon.port}/ui/deploys (browsable while it runs)")
        await stage.until(
            "runbookd ready: every check ran once", daemon.scheduler.first_round.is_set
        )
        await stage.until("baseline measured", self.baseline_known)
        stage.say(f"  before any deploy: {self.baseline()}")

        good = await self.deploy("v2", "4f2a9c1", "v2 serving (as good as v1)")
        await stage.until(
            "v2's watch completed",
            lambda: self.channel.saw("✅ Deployment of v2 completed"),
        )
        stored = await self.get_deploy(good["id"])
        last_good = await daemon.store.get_value(LAST_GOOD, good["environment"])
        if stored["status"] != "completed" or not isinstance(last_good, dict):
            raise DemoFailed("v2's watch recorded as completed")
        if last_good.get("version") != "v2":
            raise DemoFailed("v2 recorded as last known good")
        stage.say("✓ v2 recorded as last known good")

        bad = await self.deploy(
            "v3-bad",
            "9c1e07b",
            f"v3-bad serving: every fifth request fails, every fourth is {SLOW * 1000:.0f} ms "
            "slower",
        )
        if bad["previous"] != "v2":
            raise DemoFailed("v3-bad's deploy names v2 as the version before it")
        await stage.until(
            "breach detected against the pre-deploy baseline: rollback incident opened",
            lambda: bool(self.opened),
        )
        incident = self.opened[0]
        await stage.until("rolled back to v2", lambda: app.current == "v2" and bool(app.rollbacks))
        await stage.until(
            "rollback announced: Rolled back to v2",
            lambda: self.channel.saw("Rolled back to v2 due to"),
        )
        await stage.until(
            "incident resolved: the values are back within their limits",
            lambda: not incident.is_open,
        )
        return await self.show_record(bad["id"])

    def baseline_known(self) -> bool:
        frozen = self.daemon.deploys.history.freeze(self.daemon.clock.now())
        return all(value is not None for value in frozen.values())

    def baseline(self) -> str:
        frozen = self.daemon.deploys.history.freeze(self.daemon.clock.now())
        shown = {"traffic.error_ratio": percent, "traffic.p95_seconds": seconds}
        return ", ".join(
            f"{key} {shown[key](value)}"
            for key, value in frozen.items()
            if value is not None and key in shown
        )

    async def deploy(self, version: str, commit: str, serving: str) -> dict[str, Any]:
        """As CI does it: announce the deploy to runbookd, then deploy."""
        body = {"version": version, "environment": "production", "commit": commit, "by": "ci"}
        async with self.session.post(f"{self.api}/deploys", json=body) as response:
            answer = await response.json()
            if response.status != 201 or answer.get("action") != "watching":
                raise DemoFailed(f"{version} announced by CI and watched (HTTP {response.status})")
        deploy: dict[str, Any] = answer["deploy"]
        self.stage.say(
            f"CI: POST /api/v1/deploys {version} -> {deploy['id']} watching "
            f"(last known good: {deploy['previous'] or 'none yet'})"
        )
        async with self.session.post(
            f"{self.app_url}/admin/deploy", json={"version": version}
        ) as response:
            response.raise_for_status()
        self.stage.say(serving)
        return deploy

    async def get_deploy(self, deploy_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.api}/deploys/{deploy_id}") as response:
            if response.status != 200:
                raise DemoFailed(f"GET /api/v1/deploys/{deploy_id} answered")
            found: dict[str, Any] = await response.json()
            return found

    async def show_record(self, deploy_id: str) -> int:
        stored = await self.get_deploy(deploy_id)
        self.stage.say(f"GET /api/v1/deploys/{deploy_id}: {stored['status']}")
        for entry in stored["timeline"]:
            after = entry["ts"] - stored["started_at"]
            self.stage.say(f"  deploy +{after:4.1f}s {entry['kind']:>11}: {entry['message']}")
        if stored["status"] != "rolled_back":
            raise DemoFailed(f"deploy {deploy_id} stored as rolled_back")
        [rolled] = [e for e in stored["timeline"] if e["kind"] == "rolled_back"]
        failing = rolled["data"]["seconds_after_first_failure"]
        hold = (
            format_duration(self.daemon.config.deploys.for_) if self.daemon.config.deploys else "?"
        )
        self.stage.say(f"first failing check to rollback: {failing:.1f}s (`for: {hold}` included)")
        self.stage.say(
            "demo complete: v2 completed and kept as last known good; v3-bad broke its "
            "baseline and was rolled back to v2"
        )
        return 0
