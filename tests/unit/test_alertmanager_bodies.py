"""What a real Alertmanager 0.25 posts (tests/fixtures/alertmanager, captured by its
capture.py), read by the daemon's intake on a clock the test moves: fingerprints are the
identity, and a truncated group is held, then resolved."""

from __future__ import annotations

import json

import pytest

from daemon.engine.alerts import Alert, AlertmanagerWebhook
from tests.memory_store import MemoryData, MemoryStore
from tests.paths import FIXTURES
from tests.world import World, make_world


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "alertmanager").glob("*.json")))
def test_alertmanagers_fingerprints_are_the_identity(name: str) -> None:
    doc = json.loads(raw(f"alertmanager/{name}"))
    alerts = AlertmanagerWebhook.model_validate(doc).to_alerts()
    assert [a.fingerprint for a in alerts] == [a["fingerprint"] for a in doc["alerts"]]
    assert [a.firing for a in alerts] == [a["status"] == "firing" for a in doc["alerts"]]
    assert {a.truncated for a in alerts} == {doc["truncatedAlerts"]}


# -- a truncated group that ends: Alertmanager's last word is still truncated ------------------

HOUR = 3600.0


def am_alerts(name: str) -> list[Alert]:
    return AlertmanagerWebhook.model_validate(json.loads(raw(f"alertmanager/{name}"))).to_alerts()


async def disks_held(data: MemoryData | None = None) -> tuple[World[MemoryStore], str]:
    """db-1, db-2, db-3 fire (one shown); all resolve, as Alertmanager reports it (captured):
    the incident is held, since the last notification still left one alert out."""
    w = make_world({"disks": {"when": {"alert": "DiskFull"}, "do": ["rollback"]}}, data=data)
    for name in ("truncated.json", "truncated-one-resolved.json", "truncated-all-resolved.json"):
        await w.engine.alerts(am_alerts(name))
        await w.clock.advance(0)
    (incident,) = w.opened
    assert (await w.stored(incident.id)).status.value == "open"
    return w, incident.id


async def test_a_truncated_group_never_heard_of_again_resolves_after_the_hold() -> None:
    w, incident_id = await disks_held()
    await w.clock.advance(5 * HOUR - 1)
    await w.engine.tick(w.clock.now())
    assert (await w.stored(incident_id)).status.value == "open"
    await w.clock.advance(1)
    await w.engine.tick(w.clock.now())
    incident = await w.stored(incident_id)
    assert incident.status.value == "resolved"
    said = [e.message for e in await w.timeline(incident)]
    assert said[-1].startswith("resolved: no notification of its truncated groups for 5h")
    assert w.engine.alert_rules["disks"].truncated == {}


async def test_a_sender_repeating_the_group_keeps_the_incident_held() -> None:
    """While the left-out alerts fire, Alertmanager repeats the group every repeat_interval
    (4h by default): each repeat starts the hold again, an unchanged repeat included."""
    w, incident_id = await disks_held()
    for _ in range(3):
        await w.clock.advance(4 * HOUR)
        await w.engine.alerts(am_alerts("truncated-all-resolved.json"))  # the same, repeated
        await w.engine.tick(w.clock.now())
    assert (await w.stored(incident_id)).status.value == "open"
    await w.clock.advance(5 * HOUR)
    await w.engine.tick(w.clock.now())
    assert (await w.stored(incident_id)).status.value == "resolved"


async def test_the_hold_counts_from_a_restart() -> None:
    data = MemoryData()
    before, incident_id = await disks_held(data)
    await before.clock.advance(4 * HOUR)
    after = make_world(
        {"disks": {"when": {"alert": "DiskFull"}, "do": ["rollback"]}},
        data=data,
        clock=before.clock,
    )
    await after.engine.restore()
    await after.clock.advance(4 * HOUR)  # 8h since heard, 4h since the restart
    await after.engine.tick(after.clock.now())
    assert data.incidents[incident_id].status.value == "open"
    await after.clock.advance(1 * HOUR)
    await after.engine.tick(after.clock.now())
    assert data.incidents[incident_id].status.value == "resolved"
    assert await after.store.values("truncated:disks") == {}
