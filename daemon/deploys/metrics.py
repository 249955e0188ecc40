"""The metrics of deploys."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from daemon.deploys.models import OUTCOMES

# From the deploy to the rollback: a watch lasts 5 to 15 minutes, plus its extension.
ROLLBACK_BUCKETS = (15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)


class DeployMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deploys = Counter(
            "runbookd_deploys_total",
            "Deploys by how they ended: " + ", ".join(OUTCOMES) + ".",
            ["outcome"],
            registry=registry,
        )
        self.rollback_seconds = Histogram(
            "runbookd_deploy_rollback_seconds",
            "From a deploy to its rollback (the rollback's result).",
            buckets=ROLLBACK_BUCKETS,
            registry=registry,
        )
        self.watching = Gauge(
            "runbookd_deploy_watching", "1 while a deploy is being watched.", registry=registry
        )
        self.last_good = Gauge(
            "runbookd_deploy_last_good_timestamp_seconds",
            "When a watch last ended clean, the version becoming the last known good (0: none "
            "recorded).",
            registry=registry,
        )
        # Every outcome's series exists from the start at 0, so increase() sees the first.
        for outcome in OUTCOMES:
            self.deploys.labels(outcome)
