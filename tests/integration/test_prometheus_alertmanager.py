"""End to end with the real alerting chain: Prometheus -> Alertmanager -> runbookd -> the app.

A bad deploy raises the application's error rate; Prometheus evaluates HighErrorRate from its
own scrapes and fires; Alertmanager posts the webhook (with runbookd's bearer token, once
runbookd has tokens) and keeps repeating it while the alert fires; runbookd opens ONE incident
and rolls back ONCE; the error rate falls, Prometheus resolves the alert, Alertmanager posts
the resolution and the incident resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from daemon.cli.demo.app import DemoApp
from daemon.config.settings import DaemonSettings
from daemon.runtime.daemon import Daemon
from tests.alertmanager_server import (
    alertmanager_server,
    require_alertmanager,
    webhook_notifications,
)
from tests.prometheus_server import alert_states, prometheus_server, require_prometheus
from tests.utils import run_daemon, serve


def _has_api_tokens() -> bool:
    """Whether this runbookd has `runbookd.api.tokens` (bearer-token auth on /api/v1)."""
    api = DaemonSettings.model_fields.get("api")
    if api is None:
        return False
    annotation = api.annotation
    candidates = [annotation, *getattr(annotation, "__args__", ())]  # `X | None` too
    fields = [getattr(c, "model_fields", None) for c in candidates]
    # An `api` section whose shape we cannot see: use tokens, and let the config load say
    # clearly if ours is not the shape it wants.
    return all(f is None for f in fields) or any(f is not None and "tokens" in f for f in fields)


AUTH = _has_api_tokens()
INTAKE_TOKEN = secrets.token_urlsafe(32)
READ_TOKEN = secrets.token_urlsafe(32)

ALERT = "HighErrorRate"
# Short windows so the test runs in seconds: 1 s scrapes give ~10 samples per window.
ERROR_RATIO = (
    'sum(rate(http_requests_total{status=~"5.."}[10s])) / sum(rate(http_requests_total[10s]))'
)
RULES = [
    {
        "alert": ALERT,
        "expr": f"{ERROR_RATIO} > 0.05",
        "for": "2s",
        "labels": {"service": "web", "severity": "critical"},
        "annotations": {"summary": "5xx above 5% on web"},
    }
]
# Alertmanager repeats a firing group every repeat_interval (checked each group_interval);
# 2 s makes it repeat several times while the alert still fires after the rollback, so the
# deduplication is tested against real repeats, not only a single delivery.
REPEAT_INTERVAL = "2s"


def runbookd_config(state: Path, app_url: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "state_dir": str(state)}
    if AUTH:
        settings["api"] = {
            "tokens": [
                {"name": "alertmanager", "token": INTAKE_TOKEN, "scope": "intake"},
                {"name": "test", "token": READ_TOKEN, "scope": "read"},
            ]
        }
    return {
        "runbookd": settings,
        "rules": {
            "high_error_rate": {
                "when": {"alert": ALERT, "labels": {"service": "web"}},
                "do": ["rollback"],
            }
        },
        "remediations": {
            "rollback": {
                "type": "http",
                "url": f"{app_url}/admin/rollback",
                "body": {"incident": "{{ incident.id }}"},
            }
        },
    }


async def traffic(session: aiohttp.ClientSession, url: str) -> None:
    """Users of the application: a steady stream of /api/tasks requests."""
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                await response.read()
        await asyncio.sleep(0.005)


class Phases:
    """Bounded waits on real processes, each timed from the start of the scenario."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}

    async def until(
        self, what: str, condition: Callable[[], Awaitable[bool]], within: float
    ) -> None:
        deadline = time.monotonic() + within
        while not await condition():
            assert time.monotonic() < deadline, f"not within {within:g}s: {what} ({self})"
            await asyncio.sleep(0.1)
        self.mark(what)

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic() - self.start

    def __str__(self) -> str:
        return ", ".join(f"{what} at {t:.1f}s" for what, t in self.marks.items()) or "-"


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`coro` as a task for the duration of the block, cancelled after it."""
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def received(daemon: Daemon, status: str) -> float:
    value = daemon.registry.get_sample_value(
        "runbookd_alerts_received_total",
        {"source": "alertmanager", "status": status, "result": "matched"},
    )
    return value or 0.0


async def test_a_bad_deploy_is_rolled_back_once_through_prometheus_and_alertmanager(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    require_prometheus()
    require_alertmanager()
    phases = Phases()
    app = DemoApp()
    headers = {"Authorization": f"Bearer {READ_TOKEN}"} if AUTH else {}
    config = tmp_path / "runbookd.yaml"
    with tempfile.TemporaryDirectory(prefix="runbookd-prometheus-") as prometheus_dir:
        async with serve(app.app) as app_url, running(traffic(session, f"{app_url}/api/tasks")):
            config.write_text(yaml.safe_dump(runbookd_config(tmp_path / "state", app_url)))
            async with run_daemon(config) as daemon:
                api = f"http://127.0.0.1:{daemon.port}/api/v1"
                async with (
                    alertmanager_server(
                        f"{api}/alerts",
                        bearer_token=INTAKE_TOKEN if AUTH else None,
                        repeat_interval=REPEAT_INTERVAL,
                    ) as am,
                    prometheus_server(
                        Path(prometheus_dir),
                        [app_url.removeprefix("http://")],
                        rules=RULES,
                        alertmanagers=[am.address],
                        ready_timeout=30,
                    ) as prom,
                ):
                    phases.mark("prometheus and alertmanager ready")

                    async def firing() -> bool:
                        return "firing" in await alert_states(session, prom, ALERT)

                    async def inactive() -> bool:
                        return not await alert_states(session, prom, ALERT)

                    async def incident_open() -> bool:
                        return bool(daemon.engine.incidents)

                    async def rolled_back() -> bool:
                        return bool(app.rollbacks)

                    async def incident_resolved() -> bool:
                        return not daemon.engine.incidents and received(daemon, "resolved") > 0

                    deploy = f"{app_url}/admin/deploy"
                    async with session.post(deploy, json={"version": "v2-bad"}) as r:
                        assert r.status == 200
                    phases.mark("deployed v2-bad")
                    await phases.until("prometheus fires", firing, within=20)
                    await phases.until("incident opened", incident_open, within=10)
                    await phases.until("rolled back", rolled_back, within=5)
                    assert app.current == "v1"
                    await phases.until("prometheus resolves", inactive, within=20)
                    await phases.until("incident resolved", incident_resolved, within=10)
                    sent, failed = await webhook_notifications(session, am)
                    firing_deliveries = received(daemon, "firing")
                    print(f"\nphases: {phases}")
                    print(
                        f"webhook: {sent:g} sent, {failed:g} failed, {firing_deliveries:g} firing"
                    )
                # Both servers have stopped: nothing more can arrive. Read what runbookd kept.
                if AUTH:
                    # The token is what let Alertmanager in: without it, intake is refused.
                    async with session.post(f"{api}/alerts", json={}) as r:
                        assert r.status in (401, 403)
                async with session.get(f"{api}/incidents", headers=headers) as r:
                    assert r.status == 200
                    incidents = (await r.json())["incidents"]
                assert len(incidents) == 1, incidents
                one = f"{api}/incidents/{incidents[0]['id']}"
                async with session.get(one, headers=headers) as r:
                    incident = await r.json()

    assert failed == 0, "Alertmanager could not deliver a webhook (auth?)"
    assert firing_deliveries >= 1
    assert sent >= firing_deliveries + 1  # the firing deliveries and the resolution
    assert incident["status"] == "resolved"
    assert incident["rule"] == "high_error_rate"
    assert incident["trigger"]["labels"]["service"] == "web"
    # Repeats of the firing alert added nothing: one action, one result, then resolved.
    assert [e["kind"] for e in incident["timeline"]] == ["opened", "action", "result", "resolved"]
    assert app.rollbacks == [{"incident": incident["id"]}]
    assert app.versions == ["v1"]
