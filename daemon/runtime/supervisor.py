"""Core tasks, watched: the daemon cannot do its job without any of them.

A core task (the scheduler's loop and workers, the engine's ticker, the outbox's retry loop,
the sd_notify announcer and watchdog) runs for as long as the daemon does. If one ends while
the daemon runs, by an exception, by returning or by being cancelled, checks stop running or
pages stop going out while everything else looks fine. So its end is never quiet: it is logged
once with its traceback, recorded as the daemon's failure, and `on_failure` runs (the daemon
then reports unhealthy, stops feeding the watchdog, stops and exits non-zero, for systemd or
the container runtime to restart it). Once shutdown has begun, core tasks end on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("runbookd.supervisor")


class Supervisor:
    """Watches core tasks; the first unexpected end is the daemon's failure."""

    def __init__(self, on_failure: Callable[[str], object] | None = None) -> None:
        self.on_failure = on_failure
        # Why the daemon failed ("core task scheduler raised ZeroDivisionError: ..."), or None.
        self.failure: str | None = None
        self._shutting_down = False
        self._watched: set[asyncio.Task[Any]] = set()

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Treat the end of `task` as a failure, unless shutdown has begun by then."""
        self._watched.add(task)
        task.add_done_callback(self._ended)

    def shutting_down(self) -> None:
        """From now on core tasks are cancelled, or return, on purpose."""
        self._shutting_down = True

    @property
    def watched(self) -> int:
        """Core tasks running now."""
        return len(self._watched)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._watched.discard(task)
        name = task.get_name()
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            # Logged even during shutdown: an exception is a bug wherever it happens.
            log.error(
                "core task died", task=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
        if self._shutting_down or self.failure is not None:
            return
        if exc is not None:
            reason = f"core task {name} raised {type(exc).__name__}: {exc}"
        else:
            how = "was cancelled" if task.cancelled() else "returned"
            reason = f"core task {name} {how}"
            log.error("core task ended", task=name, reason=reason)
        self.failure = reason
        if self.on_failure is not None:
            self.on_failure(reason)
