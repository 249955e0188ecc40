"""Alerts pushed to runbookd (Alertmanager v4, Grafana) drive the same engine and pipeline."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp

from daemon.store.sqlite.repository import SqliteStore
from tests.alertmanager_webhook import alert, webhook
from tests.utils import run_daemon, wait_for
from tests.world import Commits

AM_CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
rules:
  errors:
    when: {{alert: HighErrorRate, labels: {{service: web}}}}
    do: [hook]
remediations:
  hook:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


def am_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(AM_CONFIG.format(state=tmp_path / "state", url=url))
    return path


async def test_the_webhook_endpoint_end_to_end(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    async with run_daemon(am_config(tmp_path, url)) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        for _ in range(2):
            async with session.post(api, json=webhook(alert())) as r:
                assert (r.status, await r.json()) == (200, {"received": 1, "matched": 1})
        await wait_for(lambda: bool(state.get("hooks")))
        async with session.post(api, json=webhook(alert("resolved"))) as r:
            assert r.status == 200
        await wait_for(lambda: not daemon.engine.incidents)
        hooks = state["hooks"]
        assert isinstance(hooks, list)
        assert len(hooks) == 1
        for body, reason in [
            (webhook(alert()) | {"version": "3"}, "version: Input should be '4' or '1'"),
            (webhook({**alert(), "status": "on fire"}), "alerts.0.status: Input should be"),
            (webhook({**alert(), "labels": ["alertname"]}), "alerts.0.labels: Input should be"),
        ]:
            async with session.post(api, json=body) as r:
                assert r.status == 400
                assert (await r.json())["error"].startswith(reason)


async def test_one_alertmanager_request_is_one_commit_and_answered_after_it(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    async with run_daemon(am_config(tmp_path, url)) as daemon:
        store = daemon.store
        assert isinstance(store, SqliteStore)
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        async with session.post(api, json=webhook(alert(fingerprint="first"))) as r:
            assert r.status == 200
        await wait_for(lambda: bool(state.get("hooks")) and not daemon.pipeline.busy)

        fps = [f"fp{i}" for i in range(10)]
        body = webhook(
            *(alert(fingerprint=fp, instance=fp) for fp in fps),
            alert(fingerprint="api-1", service="api"),
            alert("resolved", fingerprint="api-2", service="api"),
        )
        for repeat in (False, True):  # the second time, Alertmanager repeats it
            expected = 0 if repeat else 1
            async with Commits(store) as commits, session.post(api, json=body) as r:
                assert (r.status, await r.json()) == (200, {"received": 12, "matched": 10})
                # Answered after the commit: a crash now loses nothing the answer confirmed.
                assert store.commits == commits.before + expected
            assert commits.count == expected

        (incident,) = daemon.engine.incidents.values()
        stored = await store.get_incident(incident.id)
        assert stored is not None
        (joined,) = [e for e in stored.timeline if e.kind == "alert"]
        assert [a["fingerprint"] for a in joined.data["alerts"]] == fps
        assert sorted(await store.values("alerts:errors")) == sorted([*fps, "first"])

        def received(status: str, result: str) -> float | None:
            labels = {"source": "alertmanager", "status": status, "result": result}
            return daemon.registry.get_sample_value("runbookd_alerts_received_total", labels)

        assert received("firing", "matched") == 21
        assert received("firing", "unmatched") == 2
        assert received("resolved", "unmatched") == 2
        assert received("resolved", "matched") is None
        hooks = state["hooks"]
        assert isinstance(hooks, list)
        assert len(hooks) == 1  # one incident, remediated once


async def test_a_failed_group_commit_fails_each_request_in_it_and_their_retries_are_recorded(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    """Concurrent requests share one transaction; when its commit fails, each of them is
    answered 500 (Alertmanager sends it again), none 200, and nothing of them stays in memory
    alone: the retries open the incident and are stored as if they were new."""
    _, url = app_state
    async with run_daemon(am_config(tmp_path, url)) as daemon:
        store = daemon.store
        assert isinstance(store, SqliteStore)
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        fps = [f"fp{i}" for i in range(5)]
        release = threading.Event()
        trips: list[int] = []

        real_trip = store._trip

        def failing_trip(writes: list[Any], reads: list[Any], conn: sqlite3.Connection) -> Any:
            # On the store's thread: the first trip that writes waits until the others are
            # queued behind it, so that they share the next one; each fails as a failed COMMIT
            # does. Reads (an incident id's start) go through.
            if not writes:
                return real_trip(writes, reads, conn)
            trips.append(len(writes))
            assert release.wait(10)
            raise sqlite3.OperationalError("disk I/O error")

        async def post(fp: str) -> tuple[int, dict[str, Any]]:
            async with session.post(api, json=webhook(alert(fingerprint=fp, host=fp))) as r:
                return r.status, await r.json()

        store._trip = failing_trip  # type: ignore[method-assign]
        try:
            sent = [asyncio.create_task(post(fp)) for fp in fps]
            queued = lambda: [unit for unit in store._queue if not unit.read]  # noqa: E731
            await wait_for(lambda: len(trips) == 1 and len(queued()) == len(fps) - 1)
            release.set()
            answers = await asyncio.gather(*sent)
        finally:
            del store._trip
        assert trips == [1, len(fps) - 1]
        assert answers == [(500, {"error": "internal error"})] * len(fps)
        assert daemon.engine.incidents == {}
        assert daemon.engine.alert_rules["errors"].firing == {}

        for fp in fps:  # Alertmanager's retries
            assert await post(fp) == (200, {"received": 1, "matched": 1})
        assert sorted(await store.values("alerts:errors")) == fps
        (incident,) = await store.list_incidents()
        assert daemon.engine.incidents["errors"].id == incident.id
