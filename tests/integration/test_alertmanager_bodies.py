"""What a real Alertmanager 0.25 posts (tests/fixtures/alertmanager, captured by its
capture.py), and real Grafana bodies, through `POST /api/v1/alerts` and through a generic
webhook mapping each alert of the list, on a daemon whose clock the test moves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.config.loader import load_config
from daemon.core.clock import ManualClock
from daemon.runtime.daemon import Daemon
from tests.paths import FIXTURES

API_TOKEN = "api-0123456789abcdef"
HOOK_TOKEN = "hook-0123456789abcdef"
CONFIG = f"""\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {{state}}
  api:
    tokens: [{{{{name: ops, token: {API_TOKEN}, scope: write}}}}]
webhooks:
  alertmanager:
    each: alerts
    fields:
      name: labels.alertname
      status: status
      fingerprint: fingerprint
      summary: annotations.summary
      labels.instance: labels.instance
    auth: {{{{token: {HOOK_TOKEN}}}}}
  grafana:
    each: alerts
    fields: {{{{name: labels.alertname, status: status, fingerprint: fingerprint}}}}
    auth: {{{{token: {HOOK_TOKEN}}}}}
rules:
  errors:
    when: {{{{alert: HighErrorRate}}}}
  disks:
    when: {{{{alert: DiskFull}}}}
  memory:
    when: {{{{alert: High memory usage}}}}
"""


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
async def api(tmp_path: Path, clock: ManualClock) -> AsyncIterator[str]:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    daemon = Daemon(load_config(path), config_path=path, clock=clock)
    await daemon.start()
    try:
        yield f"http://127.0.0.1:{daemon.port}/api/v1"
    finally:
        await daemon.stop()


async def send(
    session: aiohttp.ClientSession, url: str, body: bytes, token: str = API_TOKEN
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    async with session.post(url, data=body, headers=headers) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status == 200, answer
        return answer


async def incidents(session: aiohttp.ClientSession, api: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.get(f"{api}/incidents", headers=headers) as r:
        found: list[dict[str, Any]] = (await r.json())["incidents"]
    return sorted(found, key=lambda i: i["rule"])


async def timeline(session: aiohttp.ClientSession, api: str, incident_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.get(f"{api}/incidents/{incident_id}", headers=headers) as r:
        found = await r.json()
    return [entry["message"] for entry in found["timeline"]]


async def test_an_alertmanager_episode_is_one_incident_resolved_by_its_last_alert(
    api: str, session: aiohttp.ClientSession
) -> None:
    url = f"{api}/alerts"
    assert await send(session, url, raw("alertmanager/firing.json")) == {
        "received": 2,
        "matched": 2,
    }
    (opened,) = await incidents(session, api)
    assert (opened["rule"], opened["status"]) == ("errors", "open")
    await send(session, url, raw("alertmanager/mixed.json"))  # web-1 resolved, web-2 fires
    (still,) = await incidents(session, api)
    assert (still["id"], still["status"]) == (opened["id"], "open")
    await send(session, url, raw("alertmanager/resolved.json"))
    (done,) = await incidents(session, api)
    assert (done["id"], done["status"]) == (opened["id"], "resolved")


async def test_a_truncated_alertmanager_group_holds_its_incident_open(
    api: str, session: aiohttp.ClientSession
) -> None:
    url = f"{api}/alerts"
    doc = json.loads(raw("alertmanager/truncated.json"))  # 1 of 3 disks shown, 2 left out
    await send(session, url, json.dumps(doc).encode())
    for alert in doc["alerts"]:
        alert["status"] = "resolved"  # the one shown resolves; the two left out are unknown
    await send(session, url, json.dumps(doc).encode())
    (held,) = await incidents(session, api)
    assert (held["rule"], held["status"]) == ("disks", "open")
    said = await timeline(session, api, held["id"])
    assert any("truncatedAlerts" in m and "not resolved" in m for m in said)
    doc["truncatedAlerts"] = 0  # the whole group again: nothing left out, nothing firing
    await send(session, url, json.dumps(doc).encode())
    (done,) = await incidents(session, api)
    assert done["status"] == "resolved"


async def test_a_generic_webhook_maps_every_alert_of_real_bodies(
    api: str, session: aiohttp.ClientSession
) -> None:
    """The same notifications through `each: alerts`: a mixed body's firing alert is read
    even though a resolved one comes first, and Alertmanager's fingerprint joins them."""
    hook = f"{api}/webhooks/alertmanager"
    answer = await send(session, hook, raw("alertmanager/mixed.json"), HOOK_TOKEN)
    assert answer == {"received": 2, "matched": 2}
    (opened,) = await incidents(session, api)
    assert opened["trigger"]["labels"]["instance"] == "web-2:3000"
    await send(session, hook, raw("alertmanager/resolved.json"), HOOK_TOKEN)
    answer = await send(
        session, f"{api}/webhooks/grafana", raw("grafana/docs-firing.json"), HOOK_TOKEN
    )
    assert answer == {"received": 2, "matched": 1}  # "High memory usage" has a rule, CPU none
    errors, memory = await incidents(session, api)
    assert (errors["rule"], errors["status"]) == ("errors", "resolved")
    assert (memory["rule"], memory["status"]) == ("memory", "open")
