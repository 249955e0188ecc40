"""The public status page on a real daemon: opt-in, open without a token, degraded then
operational as its check fails and recovers, the runbook's Incident Update for the open
incident, its history, a JSON feed with ETags, and nothing internal on it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import aiohttp
import pytest

from daemon.config.loader import ConfigError, load_config
from daemon.core.models import Incident, Step, TimelineEntry
from daemon.core.updates import UpdateFacts, updates
from daemon.runtime.daemon import Daemon
from tests.integration.test_console import READ, TOKENS
from tests.utils import run_daemon, wait_for

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    tokens:
{tokens}
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
  spare:
    type: http
    url: {url}/health
    interval: 1h
rules:
  down:
    when: health.up < 1
    severity: warning
status_page:
  title: Example status
  update_every: 30m
  components:
    - {{name: The application, checks: [health]}}
    - {{name: The database, checks: [spare]}}
"""
# What the public page must never show: check and rule names, the condition, hosts, paths, codes.
INTERNAL = ("health", "down", "up &lt; 1", "up < 1", "127.0.0.1", "/health", "503")


def write_config(directory: Path, url: str, *, page: bool = True) -> Path:
    path = directory / "runbookd.yaml"
    text = CONFIG.format(state=directory / "state", url=url, tokens=TOKENS)
    if not page:
        text = text[: text.index("status_page:")]
    path.write_text(text)
    return path


def texts(value: object) -> list[str]:
    """Every text in a JSON document, keys too."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


async def status(session: aiohttp.ClientSession, daemon: Daemon) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{daemon.port}/status") as r:
        return r.status, await r.text()


async def test_the_status_page_goes_degraded_then_operational_and_tells_nothing_internal(
    tmp_path: Path, app_state: tuple[dict[str, object], str], session: aiohttp.ClientSession
) -> None:
    state, url = app_state
    async with run_daemon(write_config(tmp_path, url)) as daemon:
        await wait_for(lambda: daemon.observed.latest("health") is not None)
        code, html = await status(session, daemon)  # no token: it is public
        assert code == 200
        assert 'id="overall">\nAll systems operational' in html
        assert 'The database</span> <span class="badge state-operational">no data yet' in html

        state["up"] = False
        await wait_for(lambda: bool(daemon.engine.incidents))
        code, html = await status(session, daemon)
        assert "Some systems are degraded" in html
        assert 'The application</span> <span class="badge state-degraded">degraded' in html
        for field in ("Status", "Impact", "Started", "Last update", "What happened"):
            assert f"<dt>{field}</dt>" in html
        assert "<dt>Current status</dt><dd>We are looking into it.</dd>" in html
        assert "<dt>Next update</dt>" in html
        for internal in (*INTERNAL, url):
            assert internal not in html, internal

        feed_url = f"http://127.0.0.1:{daemon.port}/status.json"
        async with session.get(feed_url) as r:
            feed = await r.json()
            etag = r.headers["ETag"]
        assert feed["state"] == "degraded"
        (active,) = feed["active"]
        assert active["components"] == ["The application"]
        assert active["next_update"] == active["last_update"] + 1800
        assert "health" not in str(feed)
        async with session.get(feed_url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304

        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
        code, html = await status(session, daemon)
        assert "All systems operational" in html
        assert "The application: degraded. Resolved after" in html  # the history
        async with session.get(feed_url, headers={"If-None-Match": etag}) as r:
            assert r.status == 200
            assert (await r.json())["active"] == []


async def test_without_status_page_config_there_is_none(
    tmp_path: Path, app_state: tuple[dict[str, object], str], session: aiohttp.ClientSession
) -> None:
    async with run_daemon(write_config(tmp_path, app_state[1], page=False)) as daemon:
        async with session.get(f"http://127.0.0.1:{daemon.port}/status") as r:
            assert (r.status, r.content_type) == (404, "text/html")  # a page, for a browser
            assert "config has no <code>status_page:</code> section" in await r.text()
        async with session.get(
            f"http://127.0.0.1:{daemon.port}/status.json",
            headers={"Authorization": f"Bearer {READ}"},
        ) as r:
            assert r.status == 404


def test_a_component_naming_an_unknown_check_is_a_config_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    path.write_text(path.read_text().replace("checks: [spare]", "checks: [nope]"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "no check named 'nope'" in str(info.value)
    assert "status_page" in str(info.value)


def every_second(directory: Path, url: str) -> Path:
    """The test config, with an update due every second."""
    path = write_config(directory, url)
    path.write_text(path.read_text().replace("update_every: 30m", "update_every: 1s"))
    return path


async def updated_twice(daemon: Daemon, state: dict[str, object]) -> Incident:
    """The app down: its incident, once two updates have been posted."""
    state["up"] = False
    await wait_for(lambda: bool(daemon.engine.incidents))
    (incident,) = daemon.engine.incidents.values()
    await wait_for(lambda: len(updates(incident)) >= 2, within=10)
    return incident


async def test_an_open_incident_is_updated_every_update_every_newest_first(
    tmp_path: Path, app_state: tuple[dict[str, object], str], session: aiohttp.ClientSession
) -> None:
    state, url = app_state
    async with run_daemon(every_second(tmp_path, url)) as daemon:
        feed_url = f"http://127.0.0.1:{daemon.port}/status.json"
        incident = await updated_twice(daemon, state)
        async with session.get(feed_url) as r:
            (active,) = (await r.json())["active"]
        said = active["updates"]
        assert len(said) >= 3  # two updates at least, then the opening
        assert [s["at"] for s in said] == sorted((s["at"] for s in said), reverse=True)
        assert said[-1] == {
            "at": incident.opened_at,
            "status": "investigating",
            "current_status": "We are looking into it.",
        }
        assert active["last_update"] == said[0]["at"]
        assert active["next_update"] == said[0]["at"] + 1
        # About one a second: no storm, none missed.
        gaps = [a["at"] - b["at"] for a, b in itertools.pairwise(said)]
        assert all(0.9 <= gap < 3 for gap in gaps), gaps

        _, html = await status(session, daemon)
        assert "<h3>Updates</h3>" in html
        assert html.count("Investigating: We are looking into it.") >= 3
        for internal in (*INTERNAL, url):
            assert internal not in html, internal
        assert "health" not in str(active)

        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
        async with session.get(feed_url) as r:
            assert (await r.json())["active"] == []


async def test_a_resolved_incident_keeps_its_story_resolution_updates_then_opening(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, url = app_state
    async with run_daemon(every_second(tmp_path, url)) as daemon:
        feed_url = f"http://127.0.0.1:{daemon.port}/status.json"
        incident = await updated_twice(daemon, state)
        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
        stored = await daemon.store.get_incident(incident.id)
        assert stored is not None
        assert stored.resolved_at is not None
        public = [p.ts for p in updates(stored) if p.facts.public]
        assert len(public) >= 2
        # An update told a chat channel only, never the status page: not shown.
        quiet = UpdateFacts("identified", public=False, told=("slack_ops",))
        await daemon.store.append_timeline(
            incident.id,
            TimelineEntry(stored.resolved_at - 0.01, Step.UPDATE, "told slack_ops", quiet.data()),
        )

        # The history reads the updates of all its incidents at once, no timeline one by one.
        read_whole: list[str] = []
        get_incident = daemon.store.get_incident

        async def counted(incident_id: str) -> Incident | None:
            read_whole.append(incident_id)
            return await get_incident(incident_id)

        monkeypatch.setattr(daemon.store, "get_incident", counted)
        async with session.get(feed_url) as r:
            feed = await r.json()
        assert read_whole == []
        assert feed["active"] == []
        (past,) = feed["history"]
        said = past["updates"]
        assert said[0] == {
            "at": stored.resolved_at,
            "status": "resolved",
            "current_status": "This incident is resolved.",
        }
        assert [s["at"] for s in said[1:-1]] == sorted(public, reverse=True)
        assert {s["status"] for s in said[1:-1]} == {"investigating"}
        assert said[-1] == {
            "at": stored.opened_at,
            "status": "investigating",
            "current_status": "We are looking into it.",
        }
        assert past["status"] == "resolved"
        assert past["last_update"] == stored.resolved_at
        assert past["next_update"] is None
        assert past["components"] == ["The application"]

        _, html = await status(session, daemon)
        history = html.split("Past incidents")[1]
        assert "The application: degraded. Resolved after" in history
        lines = re.findall(r"<li><time>[^<]+</time> · ([^<]+)</li>", history)
        assert lines == [
            "Resolved: This incident is resolved.",
            *["Investigating: We are looking into it."] * len(public),
            "Investigating: We are looking into it.",
        ]
        words = " ".join(texts(feed))  # its times are numbers, whose digits may read "503"
        for internal in (*INTERNAL, url, "slack_ops", "told", stored.summary, incident.id):
            assert internal not in html, internal
            assert internal not in words, internal
