"""The operator API against a real daemon on loopback: acknowledge, resolve, silences and
maintenance windows, rule states, running a check now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.core.models import Incident
from daemon.runtime.daemon import Daemon
from tests.paths import PLUGINS
from tests.utils import run_daemon, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
  plugin:
    type: nagios
    argv: [{plugins}/check_unknown.sh]
    interval: 100ms
  slow:
    type: nagios
    argv: [{plugins}/check_slow.sh]
    interval: 1h
    jitter: 0
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [fix]
    verify_within: 2s
    escalate: [page]
  blind:
    when: plugin.time > 1
  errors:
    when:
      alert: HighErrorRate
    do: [fix]
remediations:
  fix:
    type: http
    url: {url}/hook
    body: {{step: fix}}
  page:
    type: http
    url: {url}/hook
    body: {{step: page}}
"""

State = dict[str, object]


class Api:
    """The daemon's /api/v1, answering (status, JSON)."""

    def __init__(self, session: aiohttp.ClientSession, daemon: Daemon) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{daemon.port}/api/v1"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> Any:
        status, answer = await self.call("GET", path)
        assert status == 200, answer
        return answer


@pytest.fixture
async def daemon(tmp_path: Path, app_state: tuple[State, str]) -> AsyncIterator[Daemon]:
    path = tmp_path / "runbookd.yaml"
    config = CONFIG.format(state=tmp_path / "state", url=app_state[1], plugins=PLUGINS)
    path.write_text(config)
    async with run_daemon(path) as running:
        yield running


@pytest.fixture
def api(session: aiohttp.ClientSession, daemon: Daemon) -> Api:
    return Api(session, daemon)


def hooks(state: State) -> list[object]:
    found = state.get("hooks", [])
    assert isinstance(found, list)
    return found


async def open_incident(daemon: Daemon, state: State) -> Incident:
    await wait_for(lambda: daemon.engine.evaluators["down"].last_value == 1.0)
    state["up"] = False
    await wait_for(lambda: "down" in daemon.engine.incidents)
    return daemon.engine.incidents["down"]


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


# -- acknowledge -------------------------------------------------------------------------------


async def test_acknowledge_stops_escalation(
    daemon: Daemon, api: Api, app_state: tuple[State, str]
) -> None:
    state, _ = app_state
    incident = await open_incident(daemon, state)
    who = {"by": "ana", "reason": "on it"}
    ack = await api.call("POST", f"/incidents/{incident.id}/acknowledge", who)
    assert ack == (200, {"incident": incident.id, "acknowledged_by": "ana"})
    again = await api.call("POST", f"/incidents/{incident.id}/acknowledge", who)
    assert again == (409, {"error": f"incident {incident.id!r} is already acknowledged"})
    unknown = await api.call("POST", "/incidents/nope/acknowledge", who)
    assert unknown == (404, {"error": "no open incident 'nope'"})

    # The fix ran and did not help; verification times out and escalation holds back.
    await wait_for(lambda: any(e.kind == "escalate" for e in incident.timeline))
    timeline = (await api.get(f"/incidents/{incident.id}"))["timeline"]
    acked = next(e for e in timeline if e["kind"] == "acknowledged")
    assert acked["message"] == "acknowledged by ana: on it"
    assert acked["data"] == {"by": "ana", "reason": "on it"}
    escalate = next(e for e in timeline if e["kind"] == "escalate")
    assert escalate["message"] == (
        "still firing 2s after remediation; not escalating: acknowledged by ana: on it"
    )
    assert hooks(state) == [{"step": "fix"}]  # no page


# -- resolve by hand -----------------------------------------------------------------------------


async def test_manual_resolve_closes_and_the_rule_may_fire_again(
    daemon: Daemon, api: Api, app_state: tuple[State, str]
) -> None:
    state, _ = app_state
    first = await open_incident(daemon, state)
    who = {"by": "ana", "reason": "fixed by hand"}
    assert await api.call("POST", f"/incidents/{first.id}/resolve", who) == (
        200,
        {"incident": first.id, "resolved_by": "ana"},
    )
    resolved = await api.get(f"/incidents/{first.id}")
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None
    closed = next(e for e in resolved["timeline"] if e["kind"] == "resolved")
    assert closed["message"] == "resolved by ana: fixed by hand"
    again = await api.call("POST", f"/incidents/{first.id}/resolve", who)
    assert again == (404, {"error": f"no open incident {first.id!r}"})

    # Still down: the rule starts afresh and opens a second incident.
    await wait_for(lambda: "down" in daemon.engine.incidents)
    second = daemon.engine.incidents["down"]
    assert second.id != first.id
    listed = await api.get("/incidents?rule=down&status=open")
    assert [i["id"] for i in listed["incidents"]] == [second.id]


# -- silences and maintenance windows --------------------------------------------------------------


async def test_create_list_and_expire_silences(api: Api) -> None:
    base = {"created_by": "ana", "comment": "deploy"}
    status, by_duration = await api.call(
        "POST", "/silences", base | {"rule": "down", "duration": "2h"}
    )
    assert status == 201
    assert by_duration["ends_at"] - by_duration["starts_at"] == 7200
    assert by_duration["active"] is True
    assert (by_duration["rule"], by_duration["check"], by_duration["labels"]) == ("down", None, {})
    labels = {"labels": {"service": "web"}, "ends_at": in_hours(1)}
    status, by_end = await api.call("POST", "/silences", base | labels)
    assert status == 201
    assert by_end["labels"] == {"service": "web"}

    listed = (await api.get("/silences"))["silences"]
    assert {s["id"] for s in listed} == {by_duration["id"], by_end["id"]}
    status, expired = await api.call("DELETE", f"/silences/{by_duration['id']}")
    assert (status, expired["active"]) == (200, False)
    assert [s["id"] for s in (await api.get("/silences"))["silences"]] == [by_end["id"]]
    with_old = (await api.get("/silences?expired=true"))["silences"]
    assert {s["id"] for s in with_old} == {by_duration["id"], by_end["id"]}
    assert await api.call("DELETE", "/silences/sil-nope") == (
        404,
        {"error": "no silence 'sil-nope'"},
    )
    assert await api.call("GET", "/silences?expired=maybe") == (
        400,
        {"error": "expired: must be true or false"},
    )


OUT_OF_RANGE = "a time must lie between 2000-01-01 and 2100-01-01 (UTC)"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"duration": "1h"}, "body: a silence needs a matcher: rule, check or labels"),
        (
            {"rule": "down", "duration": "1h", "ends_at": in_hours(1)},
            "body: give ends_at or duration (a silence always ends)",
        ),
        ({"rule": "down"}, "body: give ends_at or duration (a silence always ends)"),
        (
            {"rule": "down", "ends_at": in_hours(-1)},
            "ends_at: must be in the future and after starts_at",
        ),
        ({"rule": "down", "duration": "91d"}, "ends_at: a silence lasts at most 90 days"),
        ({"rule": "down", "duration": "soon"}, "duration: not a duration: 'soon' "),
        # A typo would silence nothing, and say nothing: refused, naming what there is.
        ({"rule": "dwn", "duration": "1h"}, "rule: no rule 'dwn' (did you mean 'down'?)"),
        ({"rule": "zzz", "duration": "1h"}, "rule: no rule 'zzz' (available: blind, down"),
        ({"check": "helth", "duration": "1h"}, "check: no check 'helth' (did you mean 'health'?)"),
        ({"rule": "nope:blind", "duration": "1h"}, "rule: no rule 'nope:blind'"),
        # Once a silence never active nor pruned, that `silence list` could not print.
        ({"rule": "down", "duration": "1h", "starts_at": 1e19}, f"starts_at: {OUT_OF_RANGE}"),
        ({"rule": "down", "duration": "1h", "starts_at": -5}, f"starts_at: {OUT_OF_RANGE}"),
        ({"rule": "down", "ends_at": 1e19}, f"ends_at: {OUT_OF_RANGE}"),
        ({"rule": "down", "ends_at": "9999-12-31T23:59:59Z"}, f"ends_at: {OUT_OF_RANGE}"),
        (
            {"rule": "down", "duration": "1h", "starts_at": "0001-01-01T00:00:00Z"},
            f"starts_at: {OUT_OF_RANGE}",
        ),
        (
            {"rule": "down", "duration": "1h", "starts_at": True},
            "starts_at: a time is",
        ),
        (
            {"rule": "down", "duration": "1h", "starts_at": in_hours(24 * 91)},
            "starts_at: a silence starts at most 90 days ahead",
        ),
    ],
)
async def test_a_bad_silence_is_refused_with_a_reason(
    api: Api, body: dict[str, Any], reason: str
) -> None:
    status, answer = await api.call("POST", "/silences", {"created_by": "a", "comment": "c"} | body)
    assert status == 400
    assert answer["error"].startswith(reason)
    assert (await api.get("/silences"))["silences"] == []


async def test_a_silence_may_name_a_rules_own_blind_and_alert_cap_incidents(api: Api) -> None:
    for rule in ("down:blind", "down:alert_cap"):
        body = {"created_by": "a", "comment": "c", "rule": rule, "duration": "1h"}
        status, silence = await api.call("POST", "/silences", body)
        assert (status, silence["rule"]) == (201, rule)


async def test_a_silenced_incident_opens_but_nothing_runs(
    daemon: Daemon, api: Api, app_state: tuple[State, str]
) -> None:
    state, _ = app_state
    body = {"created_by": "ana", "comment": "deploy", "rule": "down", "duration": "1h"}
    status, silence = await api.call("POST", "/silences", body)
    assert status == 201
    incident = await open_incident(daemon, state)
    await wait_for(lambda: any(e.kind == "silenced" for e in incident.timeline))
    silenced = next(e for e in incident.timeline if e.kind == "silenced")
    assert silenced.message.startswith(f"silenced by {silence['id']} (ana: deploy) until ")
    assert silenced.message.endswith(": nothing runs")
    assert hooks(state) == []


async def test_a_maintenance_window_that_starts_later_does_not_silence_yet(
    daemon: Daemon, api: Api, app_state: tuple[State, str]
) -> None:
    state, _ = app_state
    window = {"rule": "down", "starts_at": in_hours(1), "duration": "2h"}
    status, silence = await api.call(
        "POST", "/silences", {"created_by": "a", "comment": "c"} | window
    )
    assert (status, silence["active"]) == (201, False)
    assert [s["id"] for s in (await api.get("/silences"))["silences"]] == [silence["id"]]
    incident = await open_incident(daemon, state)
    await wait_for(lambda: bool(hooks(state)))
    assert hooks(state) == [{"step": "fix"}]
    assert not any(e.kind == "silenced" for e in incident.timeline)


# -- rules and checks ------------------------------------------------------------------------------


async def test_rules_show_kinds_states_blindness_incidents_and_circuits(
    daemon: Daemon, api: Api, app_state: tuple[State, str]
) -> None:
    state, _ = app_state
    await wait_for(lambda: daemon.engine.evaluators["blind"].blind_reason is not None)
    incident = await open_incident(daemon, state)
    alert = {"status": "firing", "labels": {"alertname": "HighErrorRate"}}
    body = {"version": "4", "status": "firing", "alerts": [alert]}
    assert await api.call("POST", "/alerts", body) == (200, {"received": 1, "matched": 1})
    await daemon.pipeline.breaker.record("errors", helped=False, now=0.0)
    daemon.pipeline.breaker.after = 1
    await daemon.pipeline.breaker.record("errors", helped=False, now=0.0)

    rules = {r["name"]: r for r in (await api.get("/rules"))["rules"]}
    down, blind, errors = rules["down"], rules["blind"], rules["errors"]
    assert (down["kind"], down["when"], down["state"]) == ("check", "health.up < 1", "firing")
    assert (down["incident"], down["blind"], down["last_value"]) == (incident.id, False, 0.0)
    assert (blind["kind"], blind["state"], blind["blind"], blind["incident"]) == (
        "check",
        "inactive",
        True,
        None,
    )
    assert blind["blind_reason"]
    assert (errors["kind"], errors["state"], errors["firing_alerts"]) == ("alert", "firing", 1)
    assert errors["when"] == {"alert": "HighErrorRate", "labels": {}}
    assert errors["incident"] == daemon.engine.incidents["errors"].id
    assert (errors["circuit_open"], down["circuit_open"]) == (True, False)


async def test_run_a_check_now(daemon: Daemon, api: Api) -> None:
    job = daemon.scheduler.jobs["slow"]
    await wait_for(lambda: job.runs >= 1 and not job.running)  # its first run timed out
    assert await api.call("POST", "/checks/slow/run") == (202, {"check": "slow", "started": True})
    assert await api.call("POST", "/checks/slow/run") == (
        409,
        {"error": "check 'slow' is running already"},
    )
    assert await api.call("POST", "/checks/nope/run") == (404, {"error": "no check 'nope'"})
    await wait_for(lambda: job.runs >= 2)
