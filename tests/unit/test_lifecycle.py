"""How the daemon reads its core tasks ending: the first end is the failure, later ones are
logged, and a cancellation is a failure unless it is shutting down."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from daemon.runtime.supervisor import Supervisor


async def dies(*args: object) -> None:
    raise RuntimeError("injected")


async def returns(*args: object) -> None:
    return None


async def ended(task: asyncio.Task[Any]) -> None:
    """Until the task is done and its done-callbacks have run."""
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)


async def test_the_first_end_is_the_failure_and_later_ones_are_logged() -> None:
    failures: list[str] = []
    supervisor = Supervisor(on_failure=failures.append)
    first = asyncio.create_task(returns(), name="first")
    supervisor.watch(first)
    await ended(first)
    assert failures == ["core task first returned"]
    with capture_logs() as logs:
        second = asyncio.create_task(dies(), name="second")
        supervisor.watch(second)
        await ended(second)
    assert failures == ["core task first returned"], "one failure, one stop"
    assert [(e["event"], e["task"]) for e in logs] == [("core task died", "second")]


async def test_a_cancellation_is_a_failure_unless_shutting_down() -> None:
    supervisor = Supervisor()
    for name in ("early", "late"):
        task = asyncio.create_task(asyncio.Event().wait(), name=name)
        supervisor.watch(task)
        task.cancel()
        await ended(task)
        supervisor.shutting_down()
    assert supervisor.failure == "core task early was cancelled"
    quiet = Supervisor()
    quiet.shutting_down()
    task = asyncio.create_task(asyncio.Event().wait(), name="at-shutdown")
    quiet.watch(task)
    task.cancel()
    await ended(task)
    assert quiet.failure is None
