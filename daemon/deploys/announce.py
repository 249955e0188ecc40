"""Posting announcements through the notifiers `deploys.announce` names, each recorded on the
deploy's timeline with what it came to.

An announcement tells people; it is not an action on the application, so the safety
envelope's limits for actions do not hold it, but a dry run does (it is recorded, not
posted). Each call is bounded by its remediation's deadline; one that fails is recorded and
not queued for later (an announcement late by hours would mislead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import structlog

from daemon.core.clock import Clock
from daemon.deploys.models import DeployStep
from daemon.deploys.timeline import DeployRecorder
from daemon.store.protocol import Deploy
from remediations.base import (
    Announcement,
    Announcer,
    Remediation,
    RemediationConfig,
    RemediationContext,
    can_announce,
)

log = structlog.get_logger("runbookd.deploys")

# The remediation of that name, with its config; None if the config has none.
Lookup = Callable[[str], tuple[Remediation, RemediationConfig] | None]


class Announcements:
    def __init__(
        self,
        recorder: DeployRecorder,
        *,
        clock: Clock,
        lookup: Lookup,
        ctx_for: Callable[[str], RemediationContext],
        dry_run: Callable[[], bool],
    ) -> None:
        self.recorder = recorder
        self.clock = clock
        self.lookup = lookup
        self.ctx_for = ctx_for
        self.dry_run = dry_run
        self.tasks: set[asyncio.Task[None]] = set()

    def post(self, deploy: Deploy, names: list[str], message: Announcement) -> None:
        """Post in the background (a slow channel never holds a rollback decision up)."""
        if names:
            self._spawn(self._post_all(deploy, list(names), message))

    async def settled(self) -> None:
        """Wait for the announcements under way (tests, and a stop)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="deploy announcement")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post_all(self, deploy: Deploy, names: list[str], message: Announcement) -> None:
        for name in names:  # in order: the channel reads them as they were meant
            try:
                await self._post(deploy, name, message)
            except Exception:  # recording it failed (the store): logged, the rest go on
                log.exception("announcement not recorded", deploy=deploy.id, remediation=name)

    async def _post(self, deploy: Deploy, name: str, message: Announcement) -> None:
        found = self.lookup(name)
        base = {"remediation": name, "text": message.text}
        if found is None or not can_announce(found[0]):
            why = f"{name}: no longer configured, or it cannot announce"
            await self.recorder.record(deploy, DeployStep.ANNOUNCED, why, **base, ok=False)
            return
        remediation, config = found
        if self.dry_run():
            why = f"dry run: would post through {name}: {message.text}"
            await self.recorder.record(deploy, DeployStep.ANNOUNCED, why, **base, ok=None)
            return
        announcer = cast(Announcer, remediation)  # `can_announce` said it has the hook
        try:
            async with self.clock.timeout(config.deadline()):
                result = await announcer.announce(self.ctx_for(name), message)
            ok, detail = bool(result.ok), str(result.detail)
        except TimeoutError:
            ok, detail = False, f"timed out after {config.deadline():g}s"
        except Exception as exc:  # the notifier broke its contract: say so, go on
            log.exception("announcement raised", remediation=name)
            ok, detail = False, f"internal error: {exc!r}"
        said = f"posted through {name}" if ok else f"not posted through {name}: {detail}"
        await self.recorder.record(deploy, DeployStep.ANNOUNCED, said, **base, ok=ok)
