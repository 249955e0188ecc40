"""Monitoring runbookd itself: the alerting rules, the Grafana dashboard, the example configs
for Prometheus and Alertmanager, and the metrics the daemon really exports.

Every metric name and label the rules and the dashboard use must be one runbookd exports,
and the exposition must pass `promtool check metrics`: a renamed metric breaks this test,
not the on-call's alerts. promtool and amtool come with Debian's prometheus packages
(tests/setup-services.sh); the tests that need them skip, saying why, without them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.runtime.metrics import Metrics
from tests.paths import ROOT
from tests.utils import run_daemon, serve, wait_for

RULES = ROOT / "config" / "prometheus" / "runbookd-rules.yml"
DASHBOARD = ROOT / "config" / "grafana" / "runbookd-dashboard.json"

# Labels Prometheus adds when it scrapes (target labels), and the histogram bucket bound.
SCRAPE_LABELS = frozenset({"job", "instance"})


# --- what runbookd exports -------------------------------------------------------------------


def exported_names() -> dict[str, str]:
    """Every sample name daemon/runtime/metrics.py can expose -> its family name."""
    names: dict[str, str] = {}
    for family in Metrics(CollectorRegistry()).registry.collect():
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
    families = set(exported_names().values())
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

            def complete() -> bool:
                return families <= sampled_families(generate_latest(daemon.registry).decode())

            await wait_for(complete, within=20)
            async with session.get(f"{base}/metrics") as r:
                return await r.text()


def sampled_families(text: str) -> set[str]:
    """The families of daemon/runtime/metrics.py with at least one sample in an exposition."""
    names = exported_names()
    return {
        names[sample.name]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in names
    }


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real daemon that ran checks, rules, remediations and took an alert."""
    return asyncio.run(drive_a_daemon(tmp_path_factory.mktemp("meta")))


@pytest.fixture(scope="module")
def exposed_labels(exposition: str) -> dict[str, set[str]]:
    """Sample name -> the label names it carries in the exposition, plus Prometheus's own."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set(SCRAPE_LABELS)).update(sample.labels)
    return labels


def test_every_metric_family_has_samples(exposition: str) -> None:
    """Otherwise the checks below would not see all of it."""
    assert set(exported_names().values()) - sampled_families(exposition) == set()


def test_the_exposition_has_no_created_series(exposition: str) -> None:
    """Nothing reads them, and they doubled every counter and histogram."""
    assert "_created" not in exposition


# --- PromQL: which metrics and labels an expression uses ----------------------------------

_SELECTOR = re.compile(r"\b(runbookd_[A-Za-z0-9_:]*|up)\b\s*(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_problems(expr: str, labels: dict[str, set[str]]) -> list[str]:
    """Metric names runbookd does not export, and label names those metrics do not carry."""
    names = exported_names()
    problems: list[str] = []
    used_labels: set[str] = set(SCRAPE_LABELS) | {"le"}
    for match in _SELECTOR.finditer(expr):
        name, matchers = match.group(1), match.group(2) or ""
        if name == "up":
            known = set(SCRAPE_LABELS)
        elif name not in names:
            problems.append(f"{name}: not a metric runbookd exports")
            continue
        else:
            known = labels.get(name, set())
        used_labels |= known
        for label in _MATCHER.findall(matchers):
            if known and label not in known:
                problems.append(f"{name}{{{label}}}: no such label (has {sorted(known)})")
    for grouping in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            if label not in used_labels:
                problems.append(f"by/on ({label}): not a label of the metrics used")
    return problems


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_use_only_what_runbookd_exports(exposed_labels: dict[str, set[str]]) -> None:
    for rule in rules():
        assert promql_problems(rule["expr"], exposed_labels) == [], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


# --- the Grafana dashboard ----------------------------------------------------------------


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def test_dashboard_queries_use_only_what_runbookd_exports(
    exposed_labels: dict[str, set[str]],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(t, q["expr"]) for t, q in dashboard_targets(dashboard)]
    queries += [(v["name"], v["definition"]) for v in dashboard["templating"]["list"]]
    for title, expr in queries:
        assert promql_problems(expr, exposed_labels) == [], title
