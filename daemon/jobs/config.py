"""One entry of the `jobs:` section: which action runs, when, and for how long at most."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
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
    run: str
    """The action to run: the name of an entry under `remediations:`."""
    schedule: Cron
    """When, in cron syntax with 5 fields, e.g. `0 2 * * *` for 2 AM every day."""
    timezone: TimeZone = "UTC"
    """The time zone the schedule is read in. A time skipped by a daylight saving change
    runs at the first time after it; a time that happens twice runs once."""
    timeout: PositiveDuration | None = None
    """How long a run may take; unset: the action's own `timeout`."""
    catch_up: Duration = 0.0
    """After downtime, a run missed less than this long ago runs once at start; older ones,
    and every one when 0, are recorded as missed (and count as failed)."""
    jitter: Duration = Field(0.0, le=3600)
    """Each run starts up to this long after its time, at an offset fixed by the job's name,
    so jobs on the same minute do not all start at once."""
    enabled: bool = True
    """False: never runs on schedule; `runbookd jobs run NAME` still starts it."""

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
