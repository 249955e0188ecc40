"""Metrics with every awkward thing runbookd's /metrics text must survive, for the tests of
that text (tests/*/test_metrics.py): label values with quotes, backslashes, newlines and UTF-8,
NaN and infinities, huge counts, a check that never ran."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from daemon.core.models import Observation, Status
from daemon.runtime.metrics import Metrics

# Label values a config or a check may well contain: quotes, backslashes, newlines, UTF-8.
AWKWARD = ('say "hi"', "C:\\temp\\", "two\nlines", "café ☕", "trailing\\")


def run(check: str, status: Status, values: dict[str, float], duration: float) -> Observation:
    return Observation(check, status, values, 0.0, duration)


def awkward_metrics() -> Metrics:
    m = Metrics(CollectorRegistry())
    for index, name in enumerate(AWKWARD):
        series = m.check_series(name, "http" if index % 2 else "tcp")
        series.observe(run(name, Status.OK, {"up": 1.0, 'odd "name"\\': 0.25}, 0.02))
        series.observe(run(name, Status.CRITICAL, {"up": 0.0, "latency_seconds": 1.5}, 0.3))
        series.skipped += index
    odd = m.check_series("odd", "script")
    odd.observe(run("odd", Status.UNKNOWN, {"inf": math.inf, "nan": math.nan, "int": 3}, 5.0))
    odd.observe(
        run(
            "odd",
            Status.WARN,
            {"big": 1e300, "bytes": 123456789.5, "neg": -math.inf, "on": True},
            0.005,
        )
    )
    m.check_series("never-ran", "http").skipped += 2
    odd.runs[Status.WARN] += 12_345_678  # long-running: Go writes large floats with exponents
    for lateness in (0.0, 0.001, 0.002, 7.0):
        m.lateness.observe(lateness)
    m.rule_state.labels("down").set(2)
    m.remediations.labels("restart", "command", "ok").inc()
    return m
