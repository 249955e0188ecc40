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

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.meta_monitoring import (
    DASHBOARD,
    dashboard_targets,
    drive_a_daemon,
    exported_names,
    rules,
    sampled_families,
)

# Labels Prometheus adds when it scrapes (target labels), and the histogram bucket bound.
SCRAPE_LABELS = frozenset({"job", "instance"})


# --- what runbookd exports -------------------------------------------------------------------


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
    assert set(exported_names(replicas=False).values()) - sampled_families(exposition) == set()


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


def test_rules_use_only_what_runbookd_exports(exposed_labels: dict[str, set[str]]) -> None:
    for rule in rules():
        assert promql_problems(rule["expr"], exposed_labels) == [], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


# --- the Grafana dashboard ----------------------------------------------------------------


def test_dashboard_queries_use_only_what_runbookd_exports(
    exposed_labels: dict[str, set[str]],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(t, q["expr"]) for t, q in dashboard_targets(dashboard)]
    queries += [(v["name"], v["definition"]) for v in dashboard["templating"]["list"]]
    for title, expr in queries:
        assert promql_problems(expr, exposed_labels) == [], title
