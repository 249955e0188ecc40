"""The last observation of each check, and a run of one on request: what a procedure's
preconditions and `wait_for` steps read (daemon/procedures/runner.py's `Checks`)."""

from __future__ import annotations

from collections.abc import Callable

from daemon.core.models import Observation
from daemon.runtime.scheduler import Scheduler


class Observed:
    def __init__(self, scheduler: Callable[[], Scheduler]) -> None:
        self._scheduler = scheduler
        self._last: dict[str, Observation] = {}

    def note(self, obs: Observation) -> None:
        self._last[obs.check] = obs

    def latest(self, check: str) -> Observation | None:
        return self._last.get(check)

    def run_now(self, check: str) -> bool:
        scheduler = self._scheduler()
        return check in scheduler.jobs and scheduler.run_now(check)
