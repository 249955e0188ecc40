"""Real Grafana webhook bodies (tests/fixtures/grafana, sources in its README) through
`POST /api/v1/alerts`: parsed, signed, truncated groups, and alerts beyond the bounds."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.engine.alerts import MAX_LABELS, MAX_TEXT, Alert, AlertmanagerWebhook
from tests.memory_store import MemoryData
from tests.utils import run_daemon, wait_for
from tests.world import make_world

FIXTURES = Path(__file__).parent / "fixtures" / "grafana"
SECRET = "grafana-signing-secret-0123456789abcdef"


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
    assert w.store.data.incidents[w.opened[0].id].status.value == "resolved"


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
    incident = w.store.data.incidents[w.opened[0].id]
    assert incident.status.value == "open"
    messages = [e.message for e in await w.timeline(incident)]
    assert any("truncatedAlerts" in m and "not resolved" in m for m in messages)
    resolved["truncatedAlerts"] = 0  # the group again, nothing left out, nothing firing
    await w.engine.alerts(parse(resolved))
    assert w.store.data.incidents[incident.id].status.value == "resolved"


async def test_a_group_no_longer_truncated_resolves_a_held_incident_by_itself() -> None:
    w = make_world({"a1": {"when": {"alert": "alert1"}, "do": ["rollback"]}})
    doc = body("alerting-test-truncated.json")
    await w.engine.alerts(parse(doc))
    await w.clock.advance(0)
    for a in doc["alerts"]:
        a["status"] = "resolved"
    await w.engine.alerts(parse(doc))
    incident = w.store.data.incidents[w.opened[0].id]
    assert incident.status.value == "open"
    doc["truncatedAlerts"] = 0
    doc["alerts"] = doc["alerts"][:1]  # a repeat of a resolution: only the count changed
    await w.engine.alerts(parse(doc))
    assert w.store.data.incidents[incident.id].status.value == "resolved"


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
    assert w.store.data.incidents[w.opened[0].id].trigger["clipped"] == mem.clipped


# -- over HTTP, signed --------------------------------------------------------------------------

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    grafana: {{hmac_secret_file: {secret_file}}}
rules:
  mem:
    when: {{alert: High memory usage}}
    do: [hook]
remediations:
  hook:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


def signed(raw: bytes, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """What Grafana does (grafana/alerting http/hmac.go), written out rather than borrowed."""
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), f"{stamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Grafana-Alerting-Signature": mac,
        "X-Grafana-Alerting-Signature-Timestamp": stamp,
    }


async def test_grafana_signed_bodies_end_to_end(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    state, url = app_state
    path = tmp_path / "runbookd.yaml"
    secret_file = tmp_path / "grafana-secret"
    secret_file.write_text(SECRET + "\n")  # as a secret manager writes it: the newline is not part
    path.write_text(CONFIG.format(state=tmp_path / "state", url=url, secret_file=secret_file))
    async with run_daemon(path) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        raw = (FIXTURES / "docs-firing.json").read_bytes()
        headers = signed(raw)
        async with session.post(api, data=raw, headers=headers) as r:
            assert (r.status, await r.json()) == (200, {"received": 2, "matched": 1})
        async with session.post(api, data=raw, headers=headers) as r:  # the same request again
            assert r.status == 409
        await wait_for(lambda: bool(state.get("hooks")))
        refused = [
            ({"Content-Type": "application/json"}, "missing X-Grafana-Alerting-Signature header"),
            (
                signed(raw, secret="not-the-secret-0123456789abcdefgh"),
                "X-Grafana-Alerting-Signature: bad",
            ),
            (
                signed(raw, ts=int(time.time()) - 3600),
                "X-Grafana-Alerting-Signature-Timestamp: more than 300s from our clock",
            ),
            (
                signed(raw) | {"X-Grafana-Alerting-Signature-Timestamp": "soon"},
                "X-Grafana-Alerting-Signature-Timestamp: not",
            ),
        ]
        for bad, reason in refused:
            async with session.post(api, data=raw, headers=bad) as r:
                assert r.status == 401
                assert (await r.json())["error"].startswith(reason)
        raw = (FIXTURES / "docs-resolved.json").read_bytes()
        async with session.post(api, data=raw, headers=signed(raw)) as r:
            assert r.status == 200
        await wait_for(lambda: not daemon.engine.incidents)


HOSTILE_GRAFANA_HEADERS = {
    "signature not hex": {"X-Grafana-Alerting-Signature": "z" * 64},
    "signature one short": {"X-Grafana-Alerting-Signature": "0" * 63},
    "signature 6 KiB long": {"X-Grafana-Alerting-Signature": "a" * 6144},
    "signature with a prefix": {"X-Grafana-Alerting-Signature": "sha256=" + "0" * 64},
    "timestamp negative": {"X-Grafana-Alerting-Signature-Timestamp": "-5"},
    "timestamp huge": {"X-Grafana-Alerting-Signature-Timestamp": "9" * 40},
    "timestamp float overflow": {"X-Grafana-Alerting-Signature-Timestamp": "1e400"},
    "timestamp in other digits": {"X-Grafana-Alerting-Signature-Timestamp": "\u0661\u0662\u0663"},
    "timestamp empty": {"X-Grafana-Alerting-Signature-Timestamp": ""},
}


async def test_hostile_grafana_signature_headers_are_401_and_open_nothing(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    """Each bad header alone, on an otherwise well-signed request: a 401 with a JSON reason,
    no incident, and the daemon still takes the good request after them."""
    _, url = app_state
    secret_file = tmp_path / "grafana-secret"
    secret_file.write_text(SECRET)
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=url, secret_file=secret_file))
    raw = (FIXTURES / "docs-firing.json").read_bytes()
    async with run_daemon(path) as daemon:
        api = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        for case, bad in HOSTILE_GRAFANA_HEADERS.items():
            headers = signed(raw)
            for name, value in bad.items():
                # aiohttp sends str headers as latin-1 only: other digits go as UTF-8 bytes.
                headers[name] = value.encode().decode("latin-1")
            async with session.post(api, data=raw, headers=headers) as r:
                answer = await r.json()
                assert r.status == 401, (case, answer)
                assert answer["error"].startswith("X-Grafana-Alerting-Signature"), case
        assert not daemon.engine.incidents
        async with session.post(api, data=raw, headers=signed(raw)) as r:
            assert r.status == 200
        assert len(daemon.engine.incidents) == 1
