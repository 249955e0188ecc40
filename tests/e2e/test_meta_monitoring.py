"""Monitoring runbookd itself, judged by Prometheus' and Alertmanager's own tools: promtool
checks the metrics the daemon exports, the alerting rules (and runs their unit tests), the
dashboard's queries and the example scrape config; amtool checks the example receiver."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.meta_monitoring import (
    DASHBOARD,
    RECEIVER,
    RULE_TESTS,
    RULES,
    dashboard_targets,
    drive_a_daemon,
)
from tests.paths import ROOT
from tests.services import missing

SCRAPE = ROOT / "config" / "prometheus" / "scrape.example.yml"
# What the dashboard's Grafana variables stand for, to hand its queries to promtool.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "6h",
    "$job": "runbookd",
    "$instance": ".*",
    "$check": ".*",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (Debian: apt-get install prometheus)")
    return path


def run_tool(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


# --- what runbookd exports -------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real daemon that ran checks, rules, remediations and took an alert."""
    return asyncio.run(drive_a_daemon(tmp_path_factory.mktemp("meta")))


def test_the_exposition_passes_promtool_check_metrics(exposition: str) -> None:
    result = run_tool([tool("promtool"), "check", "metrics"], stdin=exposition)
    problems = (result.stdout + result.stderr).strip()
    assert (result.returncode, problems) == (0, ""), f"promtool check metrics:\n{problems}"


# --- the alerting rules ---------------------------------------------------------------------


def test_rules_pass_promtool_check_rules() -> None:
    result = run_tool([tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    # Run from the tests' directory: rule_files are relative to it.
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Grafana dashboard ----------------------------------------------------------------


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses them as recording rules, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    records = []
    for index, (_, target) in enumerate(dashboard_targets(dashboard)):
        expr = target["expr"]
        for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
        records.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run_tool([tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- the example configs -------------------------------------------------------------------


def test_scrape_example_passes_promtool_check_config() -> None:
    result = run_tool([tool("promtool"), "check", "config", str(SCRAPE)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "runbookd"]
    assert job["metrics_path"] == "/metrics"
    assert config["rule_files"] == [RULES.name]


def test_receiver_example_passes_amtool_check_config() -> None:
    result = run_tool([tool("amtool"), "check-config", str(RECEIVER)])
    assert result.returncode == 0, result.stdout + result.stderr
