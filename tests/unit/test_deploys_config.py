"""The `deploys:` section: what it names must exist and be able to do its part, each problem
reported with its line; its defaults are the runbook's."""

from __future__ import annotations

import pytest

from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError
from daemon.deploys.config import DeploysConfig
from daemon.deploys.criteria import criteria, plans

WRONG = """\
checks:
  health: {type: http, url: "http://127.0.0.1:1/health"}
  version: {type: http, url: "http://127.0.0.1:1/api/version"}
remediations:
  rollback: {type: command, argv: ["true"]}
  page_oncall: {type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/abcdefabcdef"}
deploys:
  rollback_if:
    error_ratio: {value: traffic.error_ratio}
    p95: {value: health.p95_seconds}
    critical: [health, checkout]
    database: db
  rollback: page_oncall
  announce: [rollback, nope]
  page: [rollback]
  version_from: version.build
"""


def test_what_deploys_names_is_checked_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(WRONG, "c.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:9 deploys.rollback_if.error_ratio.value: no check named 'traffic' "
        "(available: health, version)",
        "c.yaml:10 deploys.rollback_if.p95.value: check 'health' has no value 'p95_seconds' "
        "(available: latency_seconds, status_code, up)",
        "c.yaml:11 deploys.rollback_if.critical.1: no check named 'checkout' "
        "(available: health, version)",
        "c.yaml:12 deploys.rollback_if.database: no check named 'db' (available: health, version)",
        "c.yaml:13 deploys.rollback: 'page_oncall' is a notifier: it cannot roll back",
        "c.yaml:14 deploys.announce.0: 'rollback' (command) cannot post announcements (slack can)",
        "c.yaml:14 deploys.announce.1: no remediation named 'nope' "
        "(available: page_oncall, rollback)",
        "c.yaml:15 deploys.page.0: 'rollback' is not a notifier: `page` only ever pages",
        "c.yaml:16 deploys.version_from: check 'version' has no value 'build' "
        "(available: latency_seconds, status_code, up)",
    ]


def test_a_version_read_from_the_json_body_is_a_value_deploys_may_follow() -> None:
    text = WRONG.replace(
        'version: {type: http, url: "http://127.0.0.1:1/api/version"}',
        'version: {type: http, url: "http://127.0.0.1:1/api/version", values: {build: b.n}}',
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "c.yaml")
    assert not [p for p in caught.value.problems if p.path == "deploys.version_from"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rollback_if": {"error_ratio": {"value": "traffic"}}}, "not CHECK.VALUE"),
        ({"rollback_if": {"p95": {"value": "a.b", "factor": 1}}}, "greater than 1"),
        ({"rollback_if": {"error_ratio": {"value": "a.b", "above_baseline_by": "120%"}}}, "ratio"),
        ({"watch_for": {"canary": "5m"}}, "Extra inputs"),
        ({"vercel": {"webhook_secret": "short"}}, "at least 16 characters"),
        ({"kind": "hotfix"}, "Extra inputs"),
    ],
)
def test_section_validation(fields: dict[str, object], message: str) -> None:
    data = {"rollback_if": {}, "rollback": "rollback"} | fields
    with pytest.raises(ValueError, match=message):
        DeploysConfig.model_validate(data)


def test_the_defaults_are_the_runbooks() -> None:
    config = DeploysConfig.model_validate(
        {
            "rollback_if": {
                "error_ratio": {"value": "traffic.error_ratio"},
                "p95": {"value": "traffic.p95_seconds"},
                "critical": ["health"],
                "database": "db",
            },
            "rollback": "rollback",
            "page": ["page"],
        }
    )
    assert (config.watch_for.standard, config.watch_for.hotfix) == (300, 900)
    found = {
        c.name: c
        for c in criteria(config, {"traffic.error_ratio": 0.01, "traffic.p95_seconds": 0.2})
    }
    assert found["error_ratio"].limit == pytest.approx(0.06)  # 5 points above the baseline
    assert found["p95"].limit == pytest.approx(0.3)  # 1.5 x the baseline
    assert found["critical:health"].condition == "health.up < 1"
    assert found["error_ratio"].condition == "traffic.error_ratio > 6% (baseline 1% + 5 points)"
    assert found["error_ratio"].describe(0.2) == "error ratio 20% above 6% (baseline 1% + 5 points)"
    assert found["database"].describe(0.0) == "database db failing (up 0)"
    plan = plans(config)["deploy:production"]
    assert (plan.do, plan.escalate, plan.verify_within) == (["rollback"], ["page"], 600)
    unverified = plans(config)["deploy:production:unverified"]
    assert (unverified.do, unverified.escalate, unverified.verify_within) == (["page"], [], None)
