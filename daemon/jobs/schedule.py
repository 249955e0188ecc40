"""When a job is due: cron times in the job's time zone, as epoch seconds, with its jitter."""

from __future__ import annotations

import zlib
from datetime import datetime

from cronsim import CronSim

from daemon.jobs.config import JobConfig


class Schedule:
    CAP = 1000  # due times listed at most after downtime

    def __init__(self, name: str, config: JobConfig) -> None:
        self.expression = config.schedule
        self.zone = config.zone()
        # A stable offset: restarts keep the same spread.
        self.offset = (zlib.crc32(name.encode()) / 2**32) * config.jitter

    def times_after(self, ts: float) -> CronSim:
        """The schedule's times strictly after `ts` (an iterator of aware datetimes)."""
        # cronsim works in whole minutes: start from the minute of `ts`, which it skips.
        return CronSim(self.expression, datetime.fromtimestamp(ts, self.zone))

    def next_due(self, after: float) -> float:
        """The first time the job is due strictly after `after`: a time of the schedule plus
        the job's offset."""
        return next(self.times_after(after - self.offset)).timestamp() + self.offset

    def due_between(self, after: float, until: float, cap: int = CAP) -> list[float]:
        """The due times in (after, until], the first `cap` of them: a daemon down for a
        month does not list a month of minutes."""
        found: list[float] = []
        for when in self.times_after(after - self.offset):
            due = when.timestamp() + self.offset
            if due > until or len(found) >= cap:
                break
            if due > after:
                found.append(due)
        return found
