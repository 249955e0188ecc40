"""Monitoring runbookd itself, the shipped files read as data: every alert has a unit test that
fires it, the Grafana dashboard imports and shows what it should, and the Alertmanager
receiver example posts to runbookd with a token from a file."""

from __future__ import annotations

import json

import yaml

from tests.meta_monitoring import DASHBOARD, RECEIVER, RULE_TESTS, dashboard_targets, rules


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - fired == set()
    assert {
        "RunbookdDown",
        "RunbookdChecksFailing",
        "RunbookdSchedulerBehind",
        "RunbookdRemediationsFailing",
        "RunbookdAutomationCircuitOpen",
        "RunbookdMonitoringBlind",
        "RunbookdConfigReloadFailed",
    } <= alerts


# --- the Grafana dashboard ----------------------------------------------------------------


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    (ds_input,) = dashboard["__inputs"]
    assert (ds_input["name"], ds_input["pluginId"]) == ("DS_PROMETHEUS", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    for title, target in dashboard_targets(dashboard):
        assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", title
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}", variable["name"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(t["expr"] for _, t in dashboard_targets(json.loads(DASHBOARD.read_text())))
    for family in (
        "runbookd_check_status",
        "runbookd_check_duration_seconds",
        "runbookd_check_last_duration_seconds",
        "runbookd_rule_state",
        "runbookd_incidents_open",
        "runbookd_remediations_total",
        "runbookd_schedule_lateness_seconds",
        "runbookd_check_runs_skipped_total",
        "runbookd_alerts_received_total",
        "runbookd_circuit_open",
    ):
        assert family in exprs


def test_receiver_example_sends_alerts_to_runbookd_with_a_token_from_a_file() -> None:
    config = yaml.safe_load(RECEIVER.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    (webhook,) = receivers["runbookd"]["webhook_configs"]
    assert webhook["url"].endswith("/api/v1/alerts")
    assert webhook["send_resolved"] is True
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    assert "credentials_file" in authorization
    assert "credentials" not in authorization  # the token stays out of the config text
    # runbookd's own alerts must reach people without going through runbookd.
    first = config["route"]["routes"][0]
    assert first["matchers"] == ['alertname=~"Runbookd.+"']
    assert first["receiver"] != "runbookd"
