"""Real Grafana webhook bodies (tests/fixtures/grafana, sources in its README) through
`POST /api/v1/alerts`: parsed, signed, truncated groups, and alerts beyond the bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.engine.alerts import MAX_LABELS, MAX_TEXT, Alert, AlertmanagerWebhook
from tests import paths
from tests.memory_store import MemoryData
from tests.world import make_world

FIXTURES = paths.FIXTURES / "grafana"


def body(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


def parse(doc: dict[str, Any]) -> list[Alert]:
    return AlertmanagerWebhook.model_validate(doc).to_alerts()


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_grafana_body_is_accepted(name: str) -> None:
    alerts = parse(body(name))
    assert alerts
    assert all(a.source == "grafana" for a in alerts)


def test_grafana_bodies_map_to_alerts() -> None:
    mem, cpu = parse(body("docs-firing.json"))
    assert (mem.name, mem.firing, mem.fingerprint) == (
        "High memory usage",
        True,
        "c6eadffa33fcdf37",
    )
    assert cpu.labels["zone"] == "eu-1"
    resolved, firing = parse(body("docs-mixed.json"))
    assert (resolved.firing, firing.firing) == (False, True)
    assert resolved.ends_at is not None
    (one,) = parse(body("alerting-test-one-alert.json"))  # values null, zero startsAt
    assert (one.name, one.starts_at) == ("alert1", None)
    nodata, unnamed = parse(body("nodata.json"))
    assert nodata.name == "DatasourceNoData"
    # No alertname, none in its group: no name (no rule matches it), identity from its labels.
    assert unnamed.name == ""
    assert unnamed.fingerprint == parse(body("nodata.json"))[1].fingerprint != ""


def test_an_alert_without_alertname_takes_its_groups() -> None:
    doc = body("alerting-test-one-alert.json")
    del doc["alerts"][0]["labels"]["alertname"]
    (a,) = parse(doc)  # groupLabels.alertname is "", commonLabels has it
    assert a.name == "alert1"


async def test_a_grafana_episode_opens_and_resolves_one_incident() -> None:
    w = make_world({"mem": {"when": {"alert": "High memory usage"}, "do": ["rollback"]}})
    for name in ("docs-firing.json", "docs-firing.json", "docs-mixed.json"):
        await w.engine.alerts(parse(body(name)))
        await w.clock.advance(0)
    assert len(w.opened) == 1
    assert len(w.actions["rollback"].calls) == 1
    assert (await w.stored(w.opened[0].id)).status.value == "resolved"


# -- truncatedAlerts ----------------------------------------------------------------------------


async def test_an_incident_stays_open_while_its_group_is_truncated() -> None:
    w = make_world({"a1": {"when": {"alert": "alert1"}, "do": ["rollback"]}})
    truncated = body("alerting-test-truncated.json")  # 2 shown, 1 left out
    await w.engine.alerts(parse(truncated))
    await w.clock.advance(0)
    resolved = json.loads(json.dumps(truncated))
    for a in resolved["alerts"]:
        a["status"] = "resolved"
    await w.engine.alerts(parse(resolved))  # the two shown resolve; the third is unknown
    incident = await w.stored(w.opened[0].id)
    assert incident.status.value == "open"
    messages = [e.message for e in await w.timeline(incident)]
    assert any("truncatedAlerts" in m and "not resolved" in m for m in messages)
    resolved["truncatedAlerts"] = 0  # the group again, nothing left out, nothing firing
    await w.engine.alerts(parse(resolved))
    assert (await w.stored(incident.id)).status.value == "resolved"


async def test_a_group_no_longer_truncated_resolves_a_held_incident_by_itself() -> None:
    w = make_world({"a1": {"when": {"alert": "alert1"}, "do": ["rollback"]}})
    doc = body("alerting-test-truncated.json")
    await w.engine.alerts(parse(doc))
    await w.clock.advance(0)
    for a in doc["alerts"]:
        a["status"] = "resolved"
    await w.engine.alerts(parse(doc))
    incident = await w.stored(w.opened[0].id)
    assert incident.status.value == "open"
    doc["truncatedAlerts"] = 0
    doc["alerts"] = doc["alerts"][:1]  # a repeat of a resolution: only the count changed
    await w.engine.alerts(parse(doc))
    assert (await w.stored(incident.id)).status.value == "resolved"


async def test_a_truncated_group_holds_its_incident_across_a_restart() -> None:
    data = MemoryData()
    rules = {"a1": {"when": {"alert": "alert1"}, "do": ["rollback"]}}
    before = make_world(rules, data=data)
    doc = body("alerting-test-truncated.json")
    await before.engine.alerts(parse(doc))
    await before.clock.advance(0)
    after = make_world(rules, data=data, clock=before.clock)
    await after.engine.restore()
    resolved = json.loads(json.dumps(doc))
    for a in resolved["alerts"]:
        a["status"] = "resolved"
    del resolved["groupKey"]  # through another route: says nothing of the group
    await after.engine.alerts(parse(resolved))  # the shown ones resolve; one was left out
    incident = data.incidents[before.opened[0].id]
    assert incident.status.value == "open"
    resolved["groupKey"], resolved["truncatedAlerts"] = doc["groupKey"], 0
    await after.engine.alerts(parse(resolved))
    assert data.incidents[incident.id].status.value == "resolved"


# -- what Alertmanager accepts is accepted ------------------------------------------------------


async def test_an_alert_beyond_the_bounds_is_clipped_not_refused() -> None:
    doc = body("docs-firing.json")
    big = doc["alerts"][0]
    big["annotations"]["description"] = "x" * (MAX_TEXT + 100)
    big["labels"] |= {f"l{i:03}": "v" for i in range(MAX_LABELS + 5)}
    mem, cpu = parse(doc)
    assert len(mem.labels) == MAX_LABELS
    assert mem.labels["alertname"] == "High memory usage"
    assert len(mem.annotations["description"]) == MAX_TEXT
    assert "labels dropped" in mem.clipped
    assert "annotations cut" in mem.clipped
    assert cpu.clipped == ""
    w = make_world({"mem": {"when": {"alert": "High memory usage"}, "do": ["rollback"]}})
    await w.engine.alerts([mem, cpu])
    assert (await w.stored(w.opened[0].id)).trigger["clipped"] == mem.clipped


@pytest.mark.parametrize(("given", "read"), [(b"2", 2), (b"2.0", 2), (b"69049704.0", 69049704)])
def test_truncated_alerts_is_an_integer_as_json_writes_it(given: bytes, read: int) -> None:
    """JSON has one kind of number: 2.0 is the integer 2, as the OpenAPI document's
    `integer` says (found by the schema fuzzer); a fraction, a boolean or a text is not."""
    raw = b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": ' + given + b"}"
    assert AlertmanagerWebhook.model_validate_json(raw).truncatedAlerts == read


@pytest.mark.parametrize("given", [b"2.5", b"true", b'"2"', b"-1"])
def test_truncated_alerts_refuses_what_is_not_a_count(given: bytes) -> None:
    raw = b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": ' + given + b"}"
    with pytest.raises(ValueError, match="truncatedAlerts"):
        AlertmanagerWebhook.model_validate_json(raw)
