"""Alerts pushed to runbookd (Alertmanager v4, Grafana) drive the same engine and pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.alerts import Alert, AlertmanagerWebhook
from daemon.config import ConfigError, load_config_text
from tests.memory_store import MemoryData
from tests.utils import run_daemon, wait_for
from tests.world import FakeAction, FakePager, make_world

RULE = {"when": {"alert": "HighErrorRate", "labels": {"service": "web"}}, "do": ["rollback"]}


def alert(status: str = "firing", fingerprint: str = "fp1", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": "web", **labels},
        "annotations": {"summary": "5xx above 5% on web"},
        "startsAt": "2026-11-28T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
        "fingerprint": fingerprint,
    }


def webhook(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "runbookd",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": "web"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        **extra,
    }


def parse(body: dict[str, Any]) -> list[Alert]:
    return AlertmanagerWebhook.model_validate(body).to_alerts()


async def test_a_firing_alert_opens_one_incident_and_remediates_once() -> None:
    w = make_world({"errors": RULE})
    for _ in range(3):  # Alertmanager's retries and repeat_interval resend the same alert
        (a,) = parse(webhook(alert()))
        assert await w.engine.alert(a) == ["errors"]
        await w.clock.advance(0)
    assert len(w.opened) == 1
    assert len(w.actions["rollback"].calls) == 1
    trigger = w.store.data.incidents[w.opened[0].id].trigger
    assert trigger["fingerprint"] == "fp1"
    assert trigger["labels"]["service"] == "web"


async def test_a_second_alert_joins_and_the_last_resolution_resolves() -> None:
    w = make_world({"errors": RULE})
    for body in (alert(fingerprint="a"), alert(fingerprint="b", instance="2")):
        await w.engine.alert(parse(webhook(body))[0])
        await w.clock.advance(0)
    await w.engine.alert(parse(webhook(alert("resolved", fingerprint="a")))[0])
    assert w.store.data.incidents[w.opened[0].id].status.value == "open"
    await w.engine.alert(parse(webhook(alert("resolved", fingerprint="b")))[0])
    await w.clock.advance(0)
    assert w.store.data.incidents[w.opened[0].id].status.value == "resolved"
    # opened by a, joined by b, resolved when b (the last) resolves; the rollback is told
    assert w.kinds() == ["opened", "action", "result", "alert", "resolved", "result"]


async def test_alerts_that_do_not_match_are_ignored() -> None:
    w = make_world({"errors": RULE})
    assert await w.engine.alert(parse(webhook(alert(service="api")))[0]) == []
    assert w.opened == []


async def test_firing_alerts_survive_a_restart() -> None:
    data = MemoryData()
    before = make_world({"errors": RULE}, data=data)
    await before.engine.alert(parse(webhook(alert()))[0])
    after = make_world({"errors": RULE}, {"rollback": FakeAction("rollback")}, data=data)
    await after.engine.restore()
    await after.engine.alert(parse(webhook(alert()))[0])  # a repeat after the restart
    assert after.opened == []
    assert after.actions["rollback"].calls == []
    await after.engine.alert(parse(webhook(alert("resolved")))[0])
    assert data.incidents[before.opened[0].id].status.value == "resolved"


async def test_an_alert_rule_pages_and_escalates_like_any_other() -> None:
    pager = FakePager("page")
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    await w.engine.alert(parse(webhook(alert()))[0])
    await w.clock.advance(0)
    await w.engine.alert(parse(webhook(alert("resolved")))[0])
    await w.clock.advance(0)
    assert pager.calls == pager.resolved == [w.opened[0].id]


def test_grafana_superset_is_accepted() -> None:
    body = webhook(
        alert()
        | {
            "values": {"A": 7.3},
            "valueString": "[ var='A' value=7.3 ]",
            "dashboardURL": "",
            "panelURL": "",
            "silenceURL": "",
        },
        orgId=1,
        title="[FIRING:1] HighErrorRate",
        state="alerting",
        message="...",
    )
    (a,) = parse(body)
    assert (a.name, a.firing, a.fingerprint) == ("HighErrorRate", True, "fp1")


def test_missing_fingerprint_is_derived_from_the_labels() -> None:
    one = alert(fingerprint="")
    (a,) = parse(webhook(one))
    (b,) = parse(webhook(one))
    assert a.fingerprint == b.fingerprint != ""


@pytest.mark.parametrize(
    ("field", "rule"),
    [("for", {"for": "5m"}), ("clear_for", {"clear_for": "1m"})],
)
def test_alert_rules_refuse_check_only_fields(field: str, rule: dict[str, str]) -> None:
    text = f"""
rules:
  errors:
    when: {{alert: HighErrorRate}}
    {next(iter(rule))}: {next(iter(rule.values()))}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    assert f"{field}: only for rules on check values, not on alerts" in str(err.value)


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


async def test_the_webhook_endpoint_end_to_end(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    path = tmp_path / "runbookd.yaml"
    path.write_text(AM_CONFIG.format(state=tmp_path / "state", url=url))
    async with run_daemon(path) as daemon:
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
            (webhook(alert()) | {"version": "3"}, "version: Input should be '4'"),
            (webhook({**alert(), "status": "on fire"}), "alerts.0.status: Input should be"),
            (webhook({**alert(), "labels": {"service": "web"}}), "alerts.0.labels: Value error"),
        ]:
            async with session.post(api, json=body) as r:
                assert r.status == 400
                assert (await r.json())["error"].startswith(reason)
