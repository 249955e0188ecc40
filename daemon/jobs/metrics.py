"""The metrics of scheduled jobs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = (
    "succeeded",
    "failed",
    "timeout",
    "interrupted",
    "missed",
    "skipped",
    "held",
    "rejected",
    "dry_run",
)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "runbookd_job_runs_total",
            "Job runs by outcome: " + ", ".join(OUTCOMES) + ".",
            ["job", "outcome"],
            registry=registry,
        )
        self.last_success = Gauge(
            "runbookd_job_last_success_timestamp_seconds",
            "When the job last ended successfully (unset: not since runbookd keeps history).",
            ["job"],
            registry=registry,
        )
        self.last_duration = Gauge(
            "runbookd_job_last_run_seconds",
            "How long the job's last run took.",
            ["job"],
            registry=registry,
        )
        self.running = Gauge(
            "runbookd_job_running", "1 while a run of the job goes on.", ["job"], registry=registry
        )
