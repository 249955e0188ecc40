"""When starting or running fails: a start that cannot finish closes what it opened and exits
at once with one line; a core task that dies makes the daemon unhealthy, and it exits non-zero.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from structlog.testing import capture_logs

from checks.base import CHECKS
from daemon.api import openapi
from daemon.config.document import RunbookConfig
from daemon.config.loader import load_config
from daemon.core.models import Incident, TimelineEntry
from daemon.runtime.daemon import Daemon, ExitCode, StartFailed
from daemon.store.sqlite.repository import SqliteStore
from tests.lifecycle import WAIT, write_config
from tests.utils import wait_for


def threads() -> set[threading.Thread]:
    """Threads, but the event loop's executor (asyncio_N): asyncio.run shuts that down."""
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_failed_start_closes_what_it_opened_and_leaves_no_signal_handler(
    tmp_path: Path, app_state: tuple[dict[str, object], str], taken_port: int
) -> None:
    path = write_config(tmp_path, app_state[1], port=taken_port)
    daemon = Daemon(load_config(path), config_path=path)
    threads_before, tasks_before = threads(), other_tasks()
    with pytest.raises(StartFailed) as failed:
        await daemon.serve()
    assert str(failed.value) == f"cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    assert isinstance(failed.value.__cause__, OSError)
    # The store was open (incidents are restored before the API listens): closed again, its
    # thread gone. Nothing that ran keeps running.
    assert daemon.store._db is None  # type: ignore[attr-defined]
    assert threads() == threads_before
    assert daemon._session is not None
    assert daemon._session.closed
    assert other_tasks() == tasks_before
    assert daemon.supervisor.watched == 0
    # SIGTERM is the default again, not a handler of a loop that no longer listens.
    loop = asyncio.get_running_loop()
    assert not any(loop.remove_signal_handler(s) for s in (signal.SIGTERM, signal.SIGHUP))


async def test_a_failed_start_writes_nothing_on_open_incidents(
    tmp_path: Path, app_state: tuple[dict[str, object], str], taken_port: int
) -> None:
    """Found by a user trial: every failed start (systemd retries every 5 s) added "daemon
    restarted; incident still open" to each open incident, though nothing had restarted."""
    state = tmp_path / "state"
    store = SqliteStore(state / "runbookd.db")
    await store.open()
    incident = Incident("inc-1", "errors", "health", "critical", "down", 1.0)
    incident.timeline.append(TimelineEntry(1.0, "opened", "firing: down"))
    await store.create_incident(incident)
    await store.close()
    path = write_config(tmp_path, app_state[1], port=taken_port, state=state)
    for _ in range(3):
        with pytest.raises(StartFailed):
            await Daemon(load_config(path), config_path=path).serve()
    store = SqliteStore(state / "runbookd.db")
    await store.open()
    try:
        got = await store.get_incident("inc-1")
        assert got is not None
        assert [e.kind for e in got.timeline] == ["opened"]
    finally:
        await store.close()


async def test_a_check_that_cannot_be_built_is_a_bug_with_a_traceback(
    tmp_path: Path, app_state: tuple[dict[str, object], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, name: str, config: object) -> None:
        raise RuntimeError("the plugin broke")

    monkeypatch.setattr(CHECKS.get("http"), "__init__", broken)
    path = write_config(tmp_path, app_state[1])
    daemon = Daemon(load_config(path), config_path=path)
    with capture_logs() as logs, pytest.raises(StartFailed) as failed:
        await daemon.start()
    assert str(failed.value) == (
        "cannot build the checks and remediations: RuntimeError: the plugin broke"
    )
    (logged,) = logs
    assert logged["event"] == "start failed"
    assert logged["exc_info"] is True  # log.exception: the traceback is rendered
    assert not (tmp_path / "state").exists(), "built first: nothing was opened"


# --- a core task that dies --------------------------------------------------------------------


def interval_zero(config: RunbookConfig) -> RunbookConfig:
    """The fault behind interval 0 (the config refuses it): the scheduler's loop divides by
    the interval and dies of ZeroDivisionError."""
    health = config.checks["health"]
    config.checks["health"] = health.model_copy(update={"interval": 0.0})
    return config


@pytest.fixture
def broken_daemon(tmp_path: Path, app_state: tuple[dict[str, object], str]) -> Daemon:
    path = write_config(tmp_path, app_state[1])
    return Daemon(interval_zero(load_config(path)), config_path=path)


async def test_a_dead_scheduler_is_loud_and_the_daemon_exits_non_zero(
    broken_daemon: Daemon, serving: None
) -> None:
    with capture_logs() as logs:
        code = await asyncio.wait_for(broken_daemon.serve(), WAIT)
    assert code == ExitCode.CORE_TASK_DIED == 4
    failure = "core task scheduler raised ZeroDivisionError: float division by zero"
    assert broken_daemon.supervisor.failure == failure
    died = [entry for entry in logs if entry["event"] == "core task died"]
    assert len(died) == 1, logs
    assert died[0]["task"] == "scheduler"
    assert isinstance(died[0]["exc_info"], ZeroDivisionError)  # rendered as its traceback
    assert died[0]["log_level"] == "error"
    events = [entry["event"] for entry in logs]
    assert events.index("core task died") < events.index("stopping") < events.index("stopped")


async def test_between_the_death_and_the_exit_health_and_readiness_say_why(
    broken_daemon: Daemon, session: aiohttp.ClientSession
) -> None:
    await broken_daemon.start()
    try:
        base = f"http://127.0.0.1:{broken_daemon.port}"
        await wait_for(lambda: broken_daemon.supervisor.failure is not None)
        failure = "core task scheduler raised ZeroDivisionError: float division by zero"
        async with session.get(f"{base}/healthz") as r:
            body = await r.json()
            assert (r.status, body) == (503, {"status": "failed", "reason": failure})
        # The answer is the one the OpenAPI document describes.
        spec = openapi.document()
        answer = spec["paths"]["/healthz"]["get"]["responses"]["503"]["content"]
        schema = answer["application/json"]["schema"] | {"components": spec["components"]}
        jsonschema.validate(body, schema)
        async with session.get(f"{base}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["reason"] == f"failed: {failure}"
        assert broken_daemon.status_line() == f"failed, stopping: {failure}"
        assert broken_daemon._stopping.is_set(), "serve() would be stopping the daemon now"
    finally:
        await broken_daemon.stop()


async def test_a_stop_cancels_core_tasks_without_a_failure(
    tmp_path: Path, app_state: tuple[dict[str, object], str], serving: None
) -> None:
    path = write_config(tmp_path, app_state[1])
    daemon = Daemon(load_config(path), config_path=path)
    with capture_logs() as logs:
        serving_task = asyncio.create_task(daemon.serve())
        await wait_for(lambda: daemon.ready()[0])
        # The check loop, one worker, the ticker, the outbox, the incident updates, the jobs
        # (no systemd).
        assert daemon.supervisor.watched == 6
        daemon.request_stop()  # as SIGTERM does
        assert await asyncio.wait_for(serving_task, WAIT) == ExitCode.OK
    assert daemon.supervisor.failure is None
    assert daemon.supervisor.watched == 0
    assert not [e for e in logs if str(e["event"]).startswith("core task")]


async def test_the_engine_ticker_outlives_a_store_that_blinks(
    tmp_path: Path, app_state: tuple[dict[str, object], str], serving: None
) -> None:
    """A database restarting makes a few ticks fail: logged when it starts and when it ends,
    and the daemon goes on (a core task dying would stop it, exit 4)."""
    path = write_config(tmp_path, app_state[1])
    daemon = Daemon(load_config(path), config_path=path)
    with capture_logs() as logs:
        serving_task = asyncio.create_task(daemon.serve())
        await wait_for(lambda: daemon.ready()[0])
        tick, failures = daemon.engine.tick, [OSError("connection refused")]

        async def blinking(now: float) -> None:
            if failures:
                raise failures.pop()
            await tick(now)

        daemon.engine.tick = blinking  # type: ignore[method-assign]
        await wait_for(lambda: "engine tick works again" in [str(e["event"]) for e in logs])
        assert daemon.health() == (True, "ok")
        daemon.request_stop()
        assert await asyncio.wait_for(serving_task, WAIT) == ExitCode.OK
    events = [str(e["event"]) for e in logs]
    assert events.count("engine tick failed: trying again every second") == 1
    assert daemon.supervisor.failure is None
