"""One entry of the `jobs:` section: which action runs, when, and for how long at most."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, Field

from daemon.core.units import Duration, PositiveDuration, StrictModel

# What a job's runs tell the rules, as `JOB.VALUE` (e.g. `when: nightly_backup.failed > 0`).
VALUE_NAMES = ("failed", "duration_seconds", "bytes")


def _cron(text: str) -> str:
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"a schedule has 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}: {text!r}"
        )
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"not a cron schedule: {text!r} ({exc})") from None
    return " ".join(fields)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"not a time zone: {name!r} (use an IANA name, e.g. Europe/Berlin)"
        ) from None
    return name


Cron = Annotated[str, AfterValidator(_cron)]
TimeZone = Annotated[str, AfterValidator(_zone)]


class JobConfig(StrictModel):
    """`jobs.NAME`: run one of the `remediations:` on a schedule, one run at a time. Every run
    is recorded (`runbookd jobs show NAME`, `GET /api/v1/jobs/NAME/runs`) and told to the
    rules as values of a check named like the job: `failed` (1 when the run failed, timed
    out, was interrupted, held, or missed while runbookd was down; 0 when it succeeded, was
    rejected by an operator or was a dry run), `duration_seconds` and `bytes` (when the action
    reports them). A job's action passes the dry run, the target lock and, for a destructive
    action or `require_approval`, an operator's approval; the budget and cooldowns bound
    rules' reactions and do not apply."""

    example: ClassVar[str] = """
        remediations:
          analyze:
            type: postgres_maintenance
            dsn: postgresql://maint@db.internal:5432/app
            operation: analyze
            tables: [User, Task]
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        jobs:
          weekly_analyze:
            run: analyze
            schedule: "0 3 * * 0"          # Sundays at 3 AM
            timezone: Europe/Berlin
            catch_up: 6h
        rules:
          maintenance_failed:
            when: weekly_analyze.failed > 0
            do: [page_oncall]
    """

    run: str = Field(description="The action to run: the name of an entry under `remediations:`.")
    schedule: Cron = Field(
        description="When, in cron syntax with 5 fields (minute hour day-of-month month "
        "day-of-week), e.g. `0 2 * * *` for 2 AM every day."
    )
    timezone: TimeZone = Field(
        "UTC",
        description="The IANA time zone the schedule is read in. A time that a daylight saving "
        "change skips runs at the first time after it; a time that happens twice runs once.",
    )
    timeout: PositiveDuration | None = Field(
        None,
        description="How long a run may take; unset: the action's own limit (its `timeout`, "
        "with its retries for an action that retries).",
    )
    catch_up: Duration = Field(
        0.0,
        description="After downtime, the newest missed time runs once at start if it was less "
        "than this long ago; the other missed times (all of them when 0) are recorded as one "
        "`missed` run, which counts as failed.",
    )
    jitter: Duration = Field(
        0.0,
        le=3600,
        description="Each run starts up to this long after its time, at an offset fixed by the "
        "job's name, so jobs on the same minute do not all start at once.",
    )
    enabled: bool = Field(
        True, description="false: never runs on schedule; `runbookd jobs run NAME` still runs it."
    )

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
