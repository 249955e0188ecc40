"""The `deploys:` section: which deploys to watch, against what, for how long, and what to do
when one breaks what the runbook's "Rollback if" names."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, SecretStr, field_validator

from daemon.config.settings import long_enough
from daemon.core.units import Duration, PositiveDuration, Ratio, SecretsModel, StrictModel

_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_-]*$")


def _value_ref(text: str) -> str:
    if not _VALUE.match(text):
        raise ValueError(f"not CHECK.VALUE: {text!r} (e.g. traffic.error_ratio)")
    return text


# `CHECK.VALUE`, as a rule's condition names a value.
ValueRef = Annotated[str, AfterValidator(_value_ref)]


def split_ref(ref: str) -> tuple[str, str]:
    check, _, value = ref.partition(".")
    return check, value


class WatchFor(StrictModel):
    """How long a deploy of each kind is watched (the runbook: 5 minutes, 15 for a hotfix)."""

    standard: PositiveDuration = Field(300.0, description="A standard deploy.")
    hotfix: PositiveDuration = Field(900.0, description="A hotfix.")
    migration: PositiveDuration = Field(900.0, description="A deploy with a database migration.")

    def of(self, kind: str) -> float:
        return float(getattr(self, kind, self.standard))


class ErrorRatioLimit(StrictModel):
    """Roll back when the error ratio rises more than `above_baseline_by` (in points) over
    its value before the deploy."""

    value: ValueRef = Field(description="The error ratio, as `CHECK.VALUE`.")
    above_baseline_by: Ratio = Field(
        0.05,
        description="How far above the pre-deploy baseline counts as broken, in points of the "
        "ratio: 5% with a baseline of 0.4% rolls back above 5.4%.",
    )


class LatencyLimit(StrictModel):
    """Roll back when a latency rises above `factor` times its value before the deploy."""

    value: ValueRef = Field(description="The latency, as `CHECK.VALUE` (e.g. p95 seconds).")
    factor: float = Field(
        1.5, gt=1, le=100, description="1.5: performance degraded by more than 50%."
    )


class RollbackIf(StrictModel):
    """The runbook's "Rollback if": each set condition is watched after every deploy."""

    error_ratio: ErrorRatioLimit | None = Field(
        None, description="The error rate increases by more than 5 points (or as set)."
    )
    p95: LatencyLimit | None = Field(
        None, description="Performance degrades by more than 50% (or as set)."
    )
    critical: list[str] = Field(
        default_factory=list,
        description="Critical endpoint checks: any with `up` below 1 rolls back "
        "(critical functionality breaks).",
    )
    database: str | None = Field(
        None, description="The database check: `up` below 1 rolls back (database issues)."
    )


class VercelSource(SecretsModel):
    """Vercel's deployment webhooks at `POST /api/v1/vercel/events`, signed with the
    webhook's secret (`x-vercel-signature`: the hex HMAC-SHA1 of the body)."""

    webhook_secret: SecretStr = Field(
        description="The secret Vercel shows once when the webhook is created (an "
        "integration's Client Secret for its webhooks). At least 16 characters."
    )
    project_id: str | None = Field(
        None,
        min_length=1,
        description="Only this project's events start a watch; unset: any project's.",
    )
    max_age: PositiveDuration = Field(
        600.0,
        le=86400,
        description="A delivery whose `createdAt` is further than this from runbookd's clock "
        "is refused (a replay of an old delivery, or one too late to judge the deploy by).",
    )

    _secret_length = field_validator("webhook_secret")(long_enough)


class DeploysConfig(StrictModel):
    """`deploys:` watches every deploy of `environment` for `watch_for`, against the watched
    values as they were before it, and rolls back when the runbook's "Rollback if" holds for
    `for` over `min_samples` observations. Deploys come from CI (`POST /api/v1/deploys`,
    `runbookd deploy announce`), from Vercel's webhooks (`vercel:`) and from a change of a
    check's value (`version_from:`).

    A deploy is announced through `announce:` ("Starting deployment of v1.2.3 to production
    at ..."); a breach opens the incident `deploy:ENVIRONMENT`, whose plan runs `rollback`
    through the safety envelope (dry run, cooldown, budget, approval, target lock), must
    clear within `verify_within` and else pages `page:`. A clean watch posts "✅ Deployment
    of v1.2.3 completed" and records the version as last known good. Missing data never rolls
    back: the watch extends by up to `extend_up_to`, then opens the incident with `page:`
    only, saying what was missing."""

    example: ClassVar[str] = """
        checks:
          traffic:
            type: scrape
            url: http://app.internal:3000/metrics
            window: 2m
            quantiles: [0.95]
          health:
            type: http
            url: https://app.example.com/api/health
          database:
            type: postgres
            dsn: postgresql://monitor@db.internal:5432/app
        remediations:
          rollback:
            type: vercel_rollback
            token: ${VERCEL_TOKEN}
            project_id: prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB
          deployments_channel:
            type: slack
            webhook_url: ${SLACK_DEPLOYS_WEBHOOK_URL}
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        deploys:
          environment: production
          watch_for: {standard: 5m, hotfix: 15m}
          rollback_if:
            error_ratio: {value: traffic.error_ratio, above_baseline_by: 5%}
            p95: {value: traffic.p95_seconds, factor: 1.5}
            critical: [health]
            database: database
          for: 1m
          rollback: rollback
          announce: [deployments_channel]
          page: [page_oncall]
          vercel:
            webhook_secret: ${VERCEL_WEBHOOK_SECRET}
        """

    environment: str = Field(
        "production",
        min_length=1,
        max_length=64,
        description="The environment watched; deploys to others are recorded, not watched.",
    )
    watch_for: WatchFor = Field(
        default_factory=lambda: WatchFor.model_validate({}),
        description="How long each kind of deploy is watched.",
    )
    rollback_if: RollbackIf = Field(description="What rolls a deploy back.")
    baseline_window: PositiveDuration = Field(
        1800.0,
        description="The baseline is the median of each watched value over this window before "
        "the deploy; it needs a quarter of the window of history, else that value cannot be "
        "judged (missing data).",
    )
    for_: Duration = Field(
        60.0,
        alias="for",
        description="A condition must hold this long before it rolls back (0s: at once)...",
    )
    min_samples: int = Field(
        3, ge=1, le=1000, description="...over at least this many observations."
    )
    clear_for: Duration = Field(
        60.0,
        description="After a rollback the values must be back within the limits this long "
        "for the incident to resolve.",
    )
    rollback: str = Field(description="The remediation that rolls back (`remediations:`).")
    verify_within: PositiveDuration = Field(
        600.0,
        description="After the rollback the values must be back within their limits this "
        "soon, or `page` runs.",
    )
    announce: list[str] = Field(
        default_factory=list,
        description="Notifiers that post the announcements (a `slack` remediation: the "
        "deployments channel).",
    )
    page: list[str] = Field(
        default_factory=list,
        description="Notifiers paged when the rollback fails or does not help, and when a "
        "watch ends with data missing.",
    )
    extend_up_to: Duration = Field(
        600.0,
        description="A watch that lacks data (or has a condition pending) at its end goes on "
        "for at most this long, then pages with what was missing.",
    )
    version_from: ValueRef | None = Field(
        None,
        description="`CHECK.VALUE` whose change is a deploy (a build number the app reports). "
        "Observations are numbers: a version name (`v1.2.3`) comes from CI or Vercel instead.",
    )
    vercel: VercelSource | None = Field(None, description="Vercel's deployment webhooks.")

    model_config = StrictModel.model_config | {"populate_by_name": True}

    def checks(self) -> list[tuple[str, str]]:
        """(path under deploys, check name) of every check the section names."""
        found: list[tuple[str, str]] = []
        limits = self.rollback_if
        for key in ("error_ratio", "p95"):
            limit = getattr(limits, key)
            if limit is not None:
                found.append((f"rollback_if.{key}.value", split_ref(limit.value)[0]))
        found += [(f"rollback_if.critical.{i}", c) for i, c in enumerate(limits.critical)]
        if limits.database is not None:
            found.append(("rollback_if.database", limits.database))
        if self.version_from is not None:
            found.append(("version_from", split_ref(self.version_from)[0]))
        return found
