"""config/runbookd.example.yaml encodes the runbook; keep it valid and complete."""

from __future__ import annotations

import pytest

from daemon.config.check import check_config_main
from daemon.config.loader import load_config
from daemon.rules.expr import Condition
from tests.paths import ROOT

EXAMPLE = ROOT / "config" / "runbookd.example.yaml"


def test_check_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(EXAMPLE)) == 0
    summary = "ok (9 checks, 18 rules, 10 remediations, 5 jobs)"
    assert capsys.readouterr().out.strip().endswith(summary)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R0UT1NGKEYFROMENV000000000000000")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@db.internal:5432/app")
    config = load_config(EXAMPLE)
    key = config.remediations["page_oncall"].routing_key  # type: ignore[attr-defined]
    assert key.get_secret_value() == "R0UT1NGKEYFROMENV000000000000000"
    assert "s3cret" not in repr(config.checks["database"])


def test_every_procedure_of_the_runbook_is_there() -> None:
    config = load_config(EXAMPLE)
    when = {name: rule.when for name, rule in config.rules.items()}

    def condition(rule: str) -> Condition:
        found = when[rule]
        assert isinstance(found, Condition)
        return found

    # error rate above 5% rolls back
    assert (condition("high_error_rate").key, condition("high_error_rate").threshold) == (
        "traffic.error_ratio",
        0.05,
    )
    assert config.rules["high_error_rate"].do[0] == "rollback"
    # performance degraded by more than 50% rolls back
    slow = condition("slow")
    assert (slow.factor, slow.baseline_window) == (1.5, 3600.0)
    assert config.rules["slow"].do[0] == "rollback"
    # CPU or memory above 80% for a sustained window scales
    for rule, value in (("cpu_high", "cpu_percent"), ("memory_high", "memory_percent")):
        assert (condition(rule).value, condition(rule).threshold) == (value, 80.0)
        assert config.rules[rule].for_ >= 300
        assert config.rules[rule].do[0] == "scale_out"
    # disk, PostgreSQL, Redis, TLS expiry (weekly) and backups within 24 hours page or notify
    checks = {condition(r).check for r in config.rules if isinstance(when[r], Condition)}
    assert {"host", "database", "cache", "certificate", "backups"} <= checks
    assert config.checks["certificate"].interval == 7 * 86400
    assert config.checks["backups"].rpo == 86400  # type: ignore[attr-defined]
    assert config.remediations["rollback"].type == "compose_rollback"
    # deploys are announced, watched 5 minutes (15 for a hotfix) and rolled back if the error
    # rate rises more than 5 points, critical functionality or the database breaks, or
    # performance degrades by more than 50%
    deploys = config.deploys
    assert deploys is not None
    assert (deploys.watch_for.standard, deploys.watch_for.hotfix) == (300, 900)
    limits = deploys.rollback_if
    assert limits.error_ratio is not None
    assert limits.error_ratio.above_baseline_by == 0.05
    assert limits.p95 is not None
    assert limits.p95.factor == 1.5
    assert (limits.critical, limits.database) == (["health", "tasks_api"], "database")
    assert (deploys.rollback, deploys.announce) == ("rollback", ["notify_team"])
    assert config.remediations["scale_out"].type == "compose_scale"
