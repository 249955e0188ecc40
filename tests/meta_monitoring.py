"""What the meta-monitoring tests (tests/*/test_meta_monitoring.py) read and drive: the shipped
Prometheus rules, Alertmanager receiver and Grafana dashboard, and a daemon whose /metrics they
check them against."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.runtime.metrics import Metrics
from tests.paths import ROOT
from tests.utils import run_daemon, serve, wait_for

RULES = ROOT / "config" / "prometheus" / "runbookd-rules.yml"


RULE_TESTS = ROOT / "config" / "prometheus" / "runbookd-rules.test.yml"


RECEIVER = ROOT / "config" / "alertmanager" / "receiver.example.yml"


DASHBOARD = ROOT / "config" / "grafana" / "runbookd-dashboard.json"


def exported_names(*, replicas: bool = True) -> dict[str, str]:
    """Every sample name daemon/runtime/metrics.py can expose -> its family name; with
    `replicas`, also those only a replica on PostgreSQL exposes (the lease's)."""
    names: dict[str, str] = {}
    metrics = Metrics(CollectorRegistry())
    if replicas:
        metrics.leader_metrics()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update({family.name + suffix: family.name for suffix in suffixes})
    return names


DAEMON_CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  check_processes: 1  # the check-worker families too
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
  slow:                  # answers after 300ms, so its 100ms runs overlap: skipped runs
    type: http
    url: {url}/slow
    interval: 100ms
    timeout: 1s
  traffic:               # a metrics page without the request counter: UNKNOWN, rule blind
    type: scrape
    url: {url}/metrics
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [notify, broken_hook]
  errors:
    when: traffic.error_ratio > 5%
    do: [notify]
  upstream_alert:
    when: {{alert: UpstreamDown}}
    do: [notify]
remediations:
  notify:
    type: http
    url: {url}/hook
    cooldown: 0s
  broken_hook:           # answers 500: a failed remediation
    type: http
    url: {url}/broken
    retry: {{attempts: 1}}
    cooldown: 0s
  nightly_hook:          # the job's own: not a target the rules act on
    type: http
    url: {url}/hook
jobs:
  nightly:               # run by hand below
    run: nightly_hook
    schedule: "0 2 * * *"
procedures:
  smoke:                 # run by hand below
    steps:
      - {{name: hook, run: nightly_hook}}
"""


ALERT = {
    "version": "4",
    "status": "firing",
    "receiver": "runbookd",
    "alerts": [{"status": "firing", "labels": {"alertname": "UpstreamDown", "service": "x"}}],
}


def app_under_watch(state: dict[str, bool]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if state["up"] else 503)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.json_response({})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="# nothing to see here\n")

    async def hook(request: web.Request) -> web.Response:
        return web.json_response({})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "on purpose"}, status=500)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/slow", slow)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/hook", hook)
    app.router.add_post("/broken", broken)
    return app


async def drive_a_daemon(tmp: Path) -> str:
    """Run a daemon until every metric family has samples; returns its /metrics text."""
    state = {"up": True}
    families = set(exported_names(replicas=False).values())
    async with serve(app_under_watch(state)) as url, aiohttp.ClientSession() as session:
        config = tmp / "runbookd.yaml"
        config.write_text(DAEMON_CONFIG.format(state=tmp / "state", url=url))
        async with run_daemon(config) as daemon:
            base = f"http://127.0.0.1:{daemon.port}"
            # Every check has run (not /readyz, which a scheduler race can hold at 503).
            await wait_for(lambda: all(job.runs for job in daemon.scheduler.jobs.values()))
            state["up"] = False  # an incident: both remediations run, one fails
            await wait_for(lambda: "down" in daemon.engine.incidents)
            state["up"] = True
            async with session.post(f"{base}/api/v1/alerts", json=ALERT) as r:
                assert r.status == 200, await r.text()
            async with session.post(f"{base}/api/v1/rules/down/reset") as r:
                assert r.status == 200, await r.text()  # the circuit gauge: closed
            async with session.post(f"{base}/api/v1/jobs/nightly/run") as r:
                assert r.status == 202, await r.text()
            runs = f"{base}/api/v1/procedures/smoke/runs"
            async with session.post(runs, json={"by": "meta"}) as r:
                assert r.status == 201, await r.text()

            def complete() -> bool:
                return families <= sampled_families(generate_latest(daemon.registry).decode())

            await wait_for(complete, within=20)
            async with session.get(f"{base}/metrics") as r:
                return await r.text()


def sampled_families(text: str) -> set[str]:
    """The families of daemon/runtime/metrics.py with at least one sample in an exposition."""
    names = exported_names(replicas=False)
    return {
        names[sample.name]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in names
    }


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target
