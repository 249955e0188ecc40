"""The metrics of procedure runs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from daemon.procedures.models import RunStatus


class ProcedureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        ended = ", ".join(s.value for s in RunStatus if s is not RunStatus.RUNNING)
        self.runs = Counter(
            "runbookd_procedure_runs_total",
            f"Procedure runs ended, by status: {ended}.",
            ["procedure", "status"],
            registry=registry,
        )
        self.running = Gauge(
            "runbookd_procedure_running",
            "Runs of the procedure going on in this replica.",
            ["procedure"],
            registry=registry,
        )
