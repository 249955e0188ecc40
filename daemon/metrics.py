"""Every metric runbookd exports, defined once against an injected registry.

Labels are bounded by the config (check, rule, remediation names and types, a fixed set of
outcomes and value names) or by the code (the API's route templates): never URLs, error
strings or alert labels.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from daemon import __version__
from daemon.models import Observation, Status

# Outcomes of a remediation step (the `outcome` label): executed, or why not.
OUTCOMES = (
    "ok",
    "failed",
    "error",
    "timeout",
    "interrupted",
    "dry_run",
    "cooldown",
    "budget",
    "run_limit",
    "target_busy",
    "approval_timeout",
    "rejected",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.check_duration = Histogram(
            "runbookd_check_duration_seconds",
            "How long each check run took.",
            ["check"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.check_status = Gauge(
            "runbookd_check_status",
            "Last status of each check: 0 ok, 1 warn, 2 critical, 3 unknown.",
            ["check"],
            registry=registry,
        )
        self.check_value = Gauge(
            "runbookd_check_value",
            "Last values measured by each check.",
            ["check", "value"],
            registry=registry,
        )
        self.check_runs = Counter(
            "runbookd_check_runs_total",
            "Check runs by final status.",
            ["check", "status"],
            registry=registry,
        )
        self.skipped_runs = Counter(
            "runbookd_check_runs_skipped_total",
            "Runs not started because the previous run of the same check was still going.",
            ["check"],
            registry=registry,
        )
        self.lateness = Histogram(
            "runbookd_schedule_lateness_seconds",
            "How late check runs started relative to their due time.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=registry,
        )
        self.rule_state = Gauge(
            "runbookd_rule_state",
            "Rule state: 0 inactive, 1 pending, 2 firing, 3 resolved.",
            ["rule"],
            registry=registry,
        )
        self.rule_blind = Gauge(
            "runbookd_rule_blind",
            "1 while a rule has no usable data (unknown or stale) and holds its state.",
            ["rule"],
            registry=registry,
        )
        self.incidents_open = Gauge(
            "runbookd_incidents_open", "Incidents currently open.", registry=registry
        )
        self.incidents_opened = Counter(
            "runbookd_incidents_opened_total",
            "Incidents opened, by rule.",
            ["rule"],
            registry=registry,
        )
        self.remediations = Counter(
            "runbookd_remediations_total",
            "Remediation steps by outcome: " + ", ".join(OUTCOMES) + ".",
            ["remediation", "type", "outcome"],
            registry=registry,
        )
        self.remediation_duration = Histogram(
            "runbookd_remediation_duration_seconds",
            "How long executed remediations took.",
            ["remediation", "type"],
            buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.alerts = Counter(
            "runbookd_alerts_received_total",
            "Alerts received by source, status and whether a rule matched.",
            ["source", "status", "result"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "runbookd_circuit_open",
            "1 while a rule's automation is stopped by the circuit breaker.",
            ["rule"],
            registry=registry,
        )
        self.reload_success = Gauge(
            "runbookd_config_last_reload_successful",
            "1 if the last config (re)load succeeded.",
            registry=registry,
        )
        self.reload_time = Gauge(
            "runbookd_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded.",
            registry=registry,
        )
        self.config_hash = Gauge(
            "runbookd_config_hash",
            "The first 48 bits of the running config's hash: it changes when the config does.",
            registry=registry,
        )
        self.api_requests = Counter(
            "runbookd_api_requests_total",
            "HTTP requests answered, by route template (never the raw path) and status class.",
            ["route", "code_class"],
            registry=registry,
        )
        self.build = Info("runbookd_build", "Build information.", registry=registry)
        self.build.info({"version": __version__})

    def check_series(self, check: str) -> CheckSeries:
        return CheckSeries(self, check)


class CheckSeries:
    """One check's metric children, looked up once: `labels()` costs microseconds a call, and
    the scheduler records every run of thousands of checks."""

    __slots__ = ("_metrics", "_runs", "_values", "check", "duration", "skipped", "status")

    def __init__(self, metrics: Metrics, check: str) -> None:
        self._metrics = metrics
        self.check = check
        self.duration = metrics.check_duration.labels(check)
        self.status = metrics.check_status.labels(check)
        self.skipped = metrics.skipped_runs.labels(check)
        self._runs = {s: metrics.check_runs.labels(check, s.name.lower()) for s in Status}
        self._values: dict[str, Any] = {}

    def observe(self, obs: Observation) -> None:
        self.duration.observe(obs.duration)
        self.status.set(int(obs.status))
        self._runs[obs.status].inc()
        values = self._values
        for name, value in obs.values.items():
            child = values.get(name)
            if child is None:
                child = values[name] = self._metrics.check_value.labels(self.check, name)
            child.set(value)

    def forget(self) -> None:
        """Drop every series of a check a reload removed."""
        m, check = self._metrics, self.check
        for metric in (m.check_duration, m.check_status, m.skipped_runs):
            _remove(metric, check)
        for status in Status:
            _remove(m.check_runs, check, status.name.lower())
        for name in self._values:
            _remove(m.check_value, check, name)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
