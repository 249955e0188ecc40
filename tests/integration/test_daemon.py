"""The whole daemon on loopback: a real SQLite store, real HTTP, the real API."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path

import aiohttp
import pytest

from daemon.cli.demo.run import run_demo
from daemon.config.loader import load_config
from daemon.core.clock import ManualClock
from daemon.runtime.daemon import Daemon
from daemon.runtime.scheduler import phase
from tests.health_config import write_config
from tests.utils import run_daemon, wait_for


@pytest.fixture(params=[0, 1], ids=["in-process", "check-worker"])
def config_file(
    tmp_path: Path, app_state: tuple[dict[str, object], str], request: pytest.FixtureRequest
) -> Path:
    """Every daemon test on this config twice: the `health` check run in the daemon's process,
    and in a check-worker process (runbookd.check_processes: 1)."""
    path = write_config(tmp_path, app_state[1])
    text = path.read_text()
    line = f"  check_processes: {request.param}\n"
    path.write_text(text.replace("  state_dir:", line + "  state_dir:", 1))
    return path


async def test_api_health_readiness_metrics_and_errors(
    config_file: Path, session: aiohttp.ClientSession
) -> None:
    async with run_daemon(config_file) as daemon:
        base = f"http://127.0.0.1:{daemon.port}"
        async with session.get(f"{base}/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with session.get(f"{base}/readyz") as r:  # started is ready
            assert r.status == 200
            assert (await r.json())["checks"] == 1
        await wait_for(lambda: daemon.scheduler.first_round.is_set())
        async with session.get(f"{base}/readyz") as r:
            assert await r.json() == {
                "status": "ready",
                "reason": "ok",
                "role": "single",
                "checks": 1,
                "checks_run": 1,
            }
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
        assert 'runbookd_build_info{version="0.1.0"} 1.0' in text
        assert 'runbookd_check_value{check="health",value="up"} 1.0' in text
        assert 'runbookd_rule_state{rule="down"} 0.0' in text
        for path, status, reason in [
            ("/api/v1/incidents/nope", 404, "no incident 'nope'"),
            ("/api/v1/incidents?status=bogus", 400, "status: must be one of open, resolved"),
            ("/api/v1/incidents?limit=x", 400, "limit: not an integer"),
            ("/api/v1/incidents?limit=0", 400, "limit: must be between 1 and 1000"),
            ("/nothing-here", 404, "Not Found"),
        ]:
            async with session.get(base + path) as r:
                assert r.status == status
                assert r.content_type == "application/json"
                assert (await r.json())["error"] == reason


TWO_CHECKS = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  first: {{type: http, url: "{url}/health", interval: 1m, jitter: 1}}
  second: {{type: http, url: "{url}/health", interval: 1m, jitter: 1}}
"""


async def test_ready_once_started_and_the_first_round_counted(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    clock: ManualClock,
    session: aiohttp.ClientSession,
) -> None:
    """Readiness waits for no check: with phases spread over the interval, the first round
    takes a whole one. /readyz and the status line say how far it is."""
    path = tmp_path / "runbookd.yaml"
    path.write_text(TWO_CHECKS.format(state=tmp_path / "state", url=app_state[1]))
    daemon = Daemon(load_config(path), config_path=path, clock=clock)
    assert daemon.ready() == (False, "starting")
    assert daemon.first_round() == (0, 2)
    await daemon.start()
    try:
        readyz = f"http://127.0.0.1:{daemon.port}/readyz"
        first, second = (phase(name, daemon.config.checks[name]) for name in ("first", "second"))
        assert 0 < first < second < 60  # neither has run: no time has passed

        async with session.get(readyz) as r:
            assert r.status == 200
            assert await r.json() == {
                "status": "ready",
                "reason": "first round: 0/2 checks have run",
                "role": "single",
                "checks": 2,
                "checks_run": 0,
            }
        assert daemon.status_line() == (
            "watching 2 checks, 0 rules; 0 incidents open; first round: 0/2 checks have run"
        )

        between = (first + second) / 2
        await clock.advance(between)
        await wait_for(lambda: daemon.first_round() == (1, 2))  # the HTTP call is real
        assert daemon.ready() == (True, "first round: 1/2 checks have run")

        await clock.advance(second - between + 1)
        await wait_for(lambda: daemon.first_round() == (2, 2))
        async with session.get(readyz) as r:
            assert await r.json() == {
                "status": "ready",
                "reason": "ok",
                "role": "single",
                "checks": 2,
                "checks_run": 2,
            }
        assert daemon.status_line() == "watching 2 checks, 0 rules; 0 incidents open"

        daemon.request_stop()  # draining: a load balancer should look elsewhere
        async with session.get(readyz) as r:
            assert r.status == 503
            assert (await r.json())["reason"] == "stopping"
    finally:
        await daemon.stop()


async def test_serving_turns_the_gc_back_on(config_file: Path) -> None:
    """`runbookd run` starts with the cyclic GC off; once started, it must run again, with
    what startup built frozen out of its full collections."""
    gc.disable()
    try:
        daemon = Daemon(load_config(config_file), config_path=config_file)
        serving = asyncio.create_task(daemon.serve())
        await wait_for(lambda: daemon.ready()[0])
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        daemon.request_stop()
        await serving
    finally:
        gc.unfreeze()
        gc.enable()


async def test_outage_opens_acts_and_resolves_through_the_api(
    config_file: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, _ = app_state
    async with run_daemon(config_file) as daemon:
        base = f"http://127.0.0.1:{daemon.port}/api/v1/incidents"
        await wait_for(lambda: daemon.ready()[0])
        state["up"] = False
        await wait_for(lambda: bool(state.get("hooks")))
        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
        async with session.get(base) as r:
            (listed,) = (await r.json())["incidents"]
        assert listed["status"] == "resolved"
        assert state["hooks"] == [{"incident": listed["id"]}]
        async with session.get(f"{base}/{listed['id']}") as r:
            incident = await r.json()
        assert [e["kind"] for e in incident["timeline"]] == [
            "opened",
            "action",
            "result",
            "resolved",
        ]
        assert incident["trigger"]["threshold"] == 1
        assert incident["trigger"]["value"] == 0


async def test_restart_remembers_open_incidents(
    config_file: Path, app_state: tuple[dict[str, object], str]
) -> None:
    state, _ = app_state
    state["up"] = False
    async with run_daemon(config_file) as daemon:
        await wait_for(lambda: bool(daemon.engine.incidents))
        (incident_id,) = [i.id for i in daemon.engine.incidents.values()]
    async with run_daemon(config_file) as daemon:
        assert [i.id for i in daemon.engine.incidents.values()] == [incident_id]
        await wait_for(lambda: daemon.ready()[0])
        assert len(await daemon.store.list_incidents()) == 1  # no second incident
        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
    hooks = state["hooks"]
    assert isinstance(hooks, list)
    assert len(hooks) == 1


async def test_reload_swaps_a_valid_config_and_keeps_the_old_on_error(
    config_file: Path, app_state: tuple[dict[str, object], str]
) -> None:
    async with run_daemon(config_file) as daemon:
        good = config_file.read_text().replace("interval: 100ms", "interval: 200ms")
        config_file.write_text(good)
        assert await daemon.reload()
        assert daemon.config.checks["health"].interval == 0.2
        config_file.write_text(good.replace("type: http\n    url", "type: nope\n    url"))
        assert not await daemon.reload()
        assert daemon.config.checks["health"].interval == 0.2
        value = daemon.registry.get_sample_value("runbookd_config_last_reload_successful")
        assert value == 0


async def test_demo_scenario_end_to_end() -> None:
    lines: list[str] = []
    browsed: list[str] = []

    async def browse(console: str) -> None:
        """After the story, as someone who opens the URL it printed: the console is up and
        shows the resolved incident."""
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as client:
            async with client.post(f"{console}login", data={}) as r:  # no tokens: loopback
                assert (r.status, r.url.path) == (200, "/ui/")
                overview = await r.text()
            found = re.search(r'href="(/ui/incidents/[^"]+)"', overview)
            assert found, overview
            async with client.get(console.removesuffix("/ui/") + found[1]) as r:
                browsed.append(await r.text())

    assert await run_demo(out=lines.append, stay=browse) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "console: http://127.0.0.1:" in text
    assert "the console stays up at http://127.0.0.1:" in text
    assert "high_error_rate" in browsed[0]
    assert "rolled back" in browsed[0] or "rollback" in browsed[0]
    for step in (
        "✓ incident opened",
        "✓ rolled back to v1",
        "✓ on-call paged",
        "✓ incident resolved",
        "✓ page resolved",
        "✓ recovery verified",
        "demo complete",
    ):
        assert step in text


APPROVAL_CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [notify]
remediations:
  notify:
    type: http
    url: {url}/hook
    body: {{approved: true}}
    require_approval: true
    approval_timeout: 1m
"""


async def test_operator_approves_a_waiting_step_through_the_api(
    tmp_path: Path, app_state: tuple[dict[str, object], str], session: aiohttp.ClientSession
) -> None:
    state, url = app_state
    path = tmp_path / "runbookd.yaml"
    path.write_text(APPROVAL_CONFIG.format(state=tmp_path / "state", url=url))
    async with run_daemon(path) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1"
        state["up"] = False
        await wait_for(lambda: bool(daemon.pipeline.approvals.pending))
        async with session.get(f"{api}/approvals") as r:
            (pending,) = (await r.json())["approvals"]
        assert pending["remediation"] == "notify"
        incident_id = pending["incident"]
        bad = [
            (
                {"data": b"{", "headers": {"Content-Type": "application/json"}},
                400,
                "body is not valid JSON",
            ),
            ({"json": {"reason": "x"}}, 400, "by: Field required"),
            ({"json": {"by": "ana", "extra": 1}}, 400, "extra: Extra inputs are not permitted"),
            ({"data": b"by=ana"}, 415, "expected Content-Type: application/json"),
        ]
        for kwargs, status, reason in bad:
            async with session.post(f"{api}/incidents/{incident_id}/approve", **kwargs) as r:
                assert (r.status, (await r.json())["error"]) == (status, reason)
        async with session.post(f"{api}/incidents/nope/approve", json={"by": "ana"}) as r:
            assert r.status == 404
        assert "hooks" not in state
        body = {"by": "ana", "reason": "checked the dashboard"}
        async with session.post(f"{api}/incidents/{incident_id}/approve", json=body) as r:
            assert r.status == 200
            assert await r.json() == {"incident": incident_id, "approved": True, "by": "ana"}
        await wait_for(lambda: bool(state.get("hooks")))
        async with session.get(f"{api}/incidents/{incident_id}") as r:
            timeline = (await r.json())["timeline"]
        approved = next(e for e in timeline if e["kind"] == "approved")
        assert approved["message"] == "notify approved by ana: checked the dashboard"


async def test_operator_resets_a_rules_circuit(
    config_file: Path, session: aiohttp.ClientSession
) -> None:
    async with run_daemon(config_file) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/rules"
        await daemon.pipeline.breaker.record("down", helped=False, now=0.0)
        daemon.pipeline.breaker.after = 1
        await daemon.pipeline.breaker.record("down", helped=False, now=0.0)
        assert await daemon.pipeline.breaker.is_open("down")
        async with session.post(f"{api}/down/reset") as r:
            assert await r.json() == {"rule": "down", "was_open": True}
        assert not await daemon.pipeline.breaker.is_open("down")
        async with session.post(f"{api}/nope/reset") as r:
            assert (r.status, (await r.json())["error"]) == (404, "no rule 'nope'")


async def test_reload_through_the_api_keeps_open_incidents(
    config_file: Path, app_state: tuple[dict[str, object], str], session: aiohttp.ClientSession
) -> None:
    state, _ = app_state
    state["up"] = False
    async with run_daemon(config_file) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/-/reload"
        await wait_for(lambda: bool(daemon.engine.incidents))
        (incident,) = daemon.engine.incidents.values()
        before = daemon.config_hash
        hash_metric = daemon.registry.get_sample_value("runbookd_config_hash")
        assert hash_metric == int(before[:12], 16)
        config_file.write_text(config_file.read_text().replace("timeout: 1s", "timeout: 2s"))
        async with session.post(api) as r:
            assert r.status == 200
            body = await r.json()
        assert body["reloaded"] is True
        assert body["config_hash"] == daemon.config_hash != before
        assert daemon.engine.incidents["down"] is incident  # the rule kept its state
        config_file.write_text("rules: {broken: {when: nope}}\n")
        async with session.post(api) as r:
            assert r.status == 409
            reason = (await r.json())["error"]
        assert reason.startswith("config not reloaded, the running one stays: ")
        assert f"{config_file}:1 rules.broken.when: not a condition" in reason
        assert daemon.registry.get_sample_value("runbookd_config_last_reload_successful") == 0
        assert daemon.config.checks["health"].timeout == 2.0
