"""The last observation of each check and its recent values, and a run of one on request: what
a procedure's preconditions and `wait_for` steps read (daemon/procedures/runner.py's `Checks`),
and what the console plots.

A check's plotted value is the one the first of its rules (by name) watches, the value on-call
cares about; a check no rule watches plots its runs' duration ("duration"). The recent values
are a ring of HISTORY floats per check, NaN where a run gave no value: missing data shows as a
gap, never as a zero. Memory is fixed per check (HISTORY x 8 bytes) however long it runs."""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping
from typing import Any

from daemon.core.models import Observation
from daemon.rules.expr import Condition
from daemon.runtime.scheduler import Scheduler

HISTORY = 30
DURATION = "duration"  # what a check no rule watches plots: its runs' duration, in seconds


class Recent:
    """The last HISTORY values of one check, oldest first once read."""

    __slots__ = ("_count", "_next", "_ring")

    def __init__(self) -> None:
        self._ring = array("d", [math.nan]) * HISTORY
        self._next = 0
        self._count = 0

    def add(self, value: float) -> None:
        self._ring[self._next] = value
        self._next = (self._next + 1) % HISTORY
        self._count = min(self._count + 1, HISTORY)

    def values(self) -> list[float | None]:
        start = (self._next - self._count) % HISTORY
        ordered = [self._ring[(start + i) % HISTORY] for i in range(self._count)]
        return [v if math.isfinite(v) else None for v in ordered]


def plotted_values(rules: Mapping[str, Any]) -> dict[str, str]:
    """Each watched check's plotted value: the one its first rule (by name) compares."""
    plotted: dict[str, str] = {}
    for _, rule in sorted(rules.items()):
        when = rule.when
        if isinstance(when, Condition):
            plotted.setdefault(when.check, when.value)
    return plotted


class Observed:
    def __init__(
        self, scheduler: Callable[[], Scheduler], rules: Callable[[], Mapping[str, Any]]
    ) -> None:
        self._scheduler = scheduler
        self._rules = rules
        self._rules_seen: Mapping[str, Any] | None = None
        self._plotted: dict[str, str] = {}
        self._last: dict[str, Observation] = {}
        self._recent: dict[str, Recent] = {}

    def note(self, obs: Observation) -> None:
        self._last[obs.check] = obs
        name = self._watched().get(obs.check)
        value = obs.duration if name is None else obs.values.get(name, math.nan)
        recent = self._recent.get(obs.check)
        if recent is None:
            recent = self._recent[obs.check] = Recent()
        recent.add(value)

    def plotted(self, check: str) -> str:
        return self._watched().get(check, DURATION)

    def _watched(self) -> dict[str, str]:
        rules = self._rules()
        if rules is not self._rules_seen:  # a reload: a plot whose value changed starts anew
            plotted = plotted_values(rules)
            for name in list(self._recent):
                if plotted.get(name) != self._plotted.get(name):
                    del self._recent[name]
            self._plotted, self._rules_seen = plotted, rules
        return self._plotted

    def latest(self, check: str) -> Observation | None:
        return self._last.get(check)

    def recent(self, check: str) -> list[float | None]:
        found = self._recent.get(check)
        return found.values() if found is not None else []

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop what is kept of checks no longer configured (a reload removed them)."""
        for name in [n for n in self._last if not keep(n)]:
            del self._last[name]
            self._recent.pop(name, None)

    def run_now(self, check: str) -> bool:
        scheduler = self._scheduler()
        return check in scheduler.jobs and scheduler.run_now(check)
