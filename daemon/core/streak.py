"""A repeating task's failures, told when they start and when they end: a loop that retries
every second must not log a traceback every second, nor fall silent about a failure that
lasts (the first one is logged with its traceback, the recovery once)."""

from __future__ import annotations

from typing import Any


class FailureStreak:
    def __init__(self, log: Any, what: str, retry: str) -> None:
        self._log = log
        self._what = what
        self._retry = retry  # how it goes on, e.g. "trying again every second"
        self.failing = False

    def failed(self) -> None:
        """Call from an `except` block (the first failure's traceback is logged)."""
        if not self.failing:
            self._log.exception(f"{self._what} failed: {self._retry}")
        self.failing = True

    def worked(self) -> None:
        if self.failing:
            self._log.info(f"{self._what} works again")
        self.failing = False
