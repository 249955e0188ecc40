"""Notifiers (daemon/runtime/sdnotify.py) made for the systemd tests (tests/*/test_systemd.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from daemon.runtime.sdnotify import Notifier

MakeNotifier = Callable[[dict[str, str]], Notifier]


@asynccontextmanager
async def notifiers() -> AsyncIterator[MakeNotifier]:
    """Makes notifiers from a given environment, and closes them on the way out."""
    made: list[Notifier] = []

    def make(environ: dict[str, str]) -> Notifier:
        made.append(Notifier(environ))
        return made[-1]

    yield make
    for each in made:
        await each.close()
