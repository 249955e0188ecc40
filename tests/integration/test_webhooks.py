"""Generic JSON webhooks: signed (HMAC-SHA256 over `timestamp.raw body`) or with a bearer token,
mapped to alerts by configured paths, on a real daemon whose clock the tests move."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from daemon.api.auth import NO_CREDENTIALS
from daemon.config.loader import load_config
from daemon.core.clock import ManualClock
from daemon.runtime.daemon import TICK_SECONDS, Daemon
from daemon.store.sqlite.repository import SqliteStore
from tests.utils import wait_for
from tests.world import Commits

SECRET = "hmac-0123456789abcdef"
HOOK_TOKEN = "hook-0123456789abcdef"
API_TOKEN = "api-0123456789abcdef"

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    tokens: [{{name: ops, token: {api_token}, scope: write}}]
webhooks:
  deploys:
    fields:
      name: alert.title
      status: alert.state
      fingerprint: alert.id
      summary: alert.message
      labels.service: alert.tags.service
    auth:
      hmac_secret_file: {secret_file}
  uptime:
    fields: {{name: monitor.name, status: monitor.down}}
    auth: {{token: "${{RUNBOOKD_TEST_HOOK_TOKEN}}"}}
  batch:
    each: alerts
    fields: {{name: labels.alertname, status: status, labels.instance: labels.instance}}
    auth: {{token: "${{RUNBOOKD_TEST_HOOK_TOKEN}}"}}
  first:
    fields: {{name: alerts.0.labels.alertname, status: alerts.0.status}}
    auth: {{token: "${{RUNBOOKD_TEST_HOOK_TOKEN}}"}}
rules:
  deploy_failed:
    when: {{alert: DeployFailed, labels: {{service: web}}}}
  site_down:
    when: {{alert: homepage}}
"""


def deploy(state: str = "alerting", **alert: Any) -> dict[str, Any]:
    fields = {
        "id": "d-42",
        "title": "DeployFailed",
        "state": state,
        "message": "deploy 42 failed its smoke test",
        "tags": {"service": "web"},
    }
    return {"alert": fields | alert, "sender": "ci"}


def signed(body: bytes, timestamp: float, secret: str = SECRET) -> dict[str, str]:
    """What a sender does, written out here rather than borrowed from the daemon."""
    ts = str(int(timestamp))
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Runbookd-Timestamp": ts,
        "X-Runbookd-Signature": f"sha256={mac}",
    }


@asynccontextmanager
async def running(directory: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    secret_file = directory / "hmac-secret"
    secret_file.write_text(SECRET + "\n")
    path = directory / "runbookd.yaml"
    text = CONFIG.format(state=directory / "state", api_token=API_TOKEN, secret_file=secret_file)
    path.write_text(text)
    daemon = Daemon(load_config(path), config_path=path, clock=clock)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture(autouse=True)
def hook_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_TEST_HOOK_TOKEN", HOOK_TOKEN)


@pytest.fixture
async def daemon(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    async with running(tmp_path, clock) as daemon:
        yield daemon


@pytest.fixture
def api(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.port}"


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with session.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(), r


async def incidents(session: aiohttp.ClientSession, api: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.get(f"{api}/api/v1/incidents", headers=headers) as r:
        found: list[dict[str, Any]] = (await r.json())["incidents"]
        return found


async def test_a_signed_alert_opens_an_incident_and_a_signed_resolution_resolves_it(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    body = json.dumps(deploy()).encode()
    status, answer, _ = await post(session, url, body, signed(body, clock.now()))
    assert (status, answer) == (200, {"received": 1, "matched": 1})
    (incident,) = await incidents(session, api)
    assert incident["rule"] == "deploy_failed"
    assert incident["status"] == "open"
    trigger = incident["trigger"]
    assert trigger["source"] == "webhook:deploys"
    assert trigger["fingerprint"] == "d-42"
    assert trigger["labels"] == {"alertname": "DeployFailed", "service": "web"}
    assert trigger["annotations"] == {"summary": "deploy 42 failed its smoke test"}

    body = json.dumps(deploy("ok")).encode()
    assert (await post(session, url, body, signed(body, clock.now())))[0] == 200
    (incident,) = await incidents(session, api)
    assert incident["status"] == "resolved"


REPLAYED = "X-Runbookd-Signature: this signed request was accepted already (a replay?)"
# Whether the signature or the timestamp was wrong depends on the webhook's config: one answer.
BAD_SIGNATURE = (
    "X-Runbookd-Signature: bad signature, or X-Runbookd-Timestamp too far from our clock"
)


async def test_a_replay_within_tolerance_is_refused(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now())
    assert (await post(session, url, body, headers))[0] == 200
    await clock.advance(4 * 60)
    status, answer, _ = await post(session, url, body, headers)
    assert (status, answer) == (409, {"error": REPLAYED})
    # The sender itself signs each delivery afresh: the same body, a new timestamp, accepted
    # (and deduplicated by its fingerprint).
    status, answer, _ = await post(session, url, body, signed(body, clock.now()))
    assert (status, answer) == (200, {"received": 1, "matched": 1})
    assert len(await incidents(session, api)) == 1


async def test_a_replayed_firing_does_not_reopen_a_resolved_incident(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    firing = json.dumps(deploy()).encode()
    captured = signed(firing, clock.now())
    assert (await post(session, url, firing, captured))[0] == 200
    await clock.advance(60)
    resolved = json.dumps(deploy("ok")).encode()
    assert (await post(session, url, resolved, signed(resolved, clock.now())))[0] == 200
    await clock.advance(60)
    status, answer, _ = await post(session, url, firing, captured)  # replayed by someone
    assert (status, answer) == (409, {"error": REPLAYED})
    (incident,) = await incidents(session, api)
    assert incident["status"] == "resolved"


async def test_a_signed_request_not_accepted_may_be_sent_again(
    daemon: Daemon,
    api: str,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    body = json.dumps(deploy(title="")).encode()  # refused: no alert name
    headers = signed(body, clock.now())
    for _ in range(2):
        assert (await post(session, url, body, headers))[0] == 400

    async def store_gone(alerts: object) -> int:
        raise RuntimeError("the store went away")

    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now())
    with monkeypatch.context() as patch:
        patch.setattr(daemon, "intake", store_gone)
        assert (await post(session, url, body, headers))[0] == 500
    assert (await post(session, url, body, headers))[0] == 200  # the sender's retry
    assert (await post(session, url, body, headers))[0] == 409


async def test_the_signature_covers_the_raw_bytes(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now())
    for sent, sent_headers in [
        (json.dumps(deploy(), indent=1).encode(), headers),  # the same JSON, other bytes
        (json.dumps(deploy(title="Other")).encode(), headers),  # tampered
        (body, signed(body, clock.now(), secret="not-" + SECRET)),
        (body, headers | {"X-Runbookd-Signature": headers["X-Runbookd-Signature"][:-1]}),
        (body, headers | {"X-Runbookd-Signature": "sha1=" + "0" * 40}),
        (body, headers | {"X-Runbookd-Signature": "sha256=ü" + "0" * 63}),
    ]:
        status, answer, r = await post(session, url, sent, sent_headers)
        assert (status, answer) == (401, {"error": BAD_SIGNATURE})
        assert r.headers["WWW-Authenticate"] == 'Signature realm="runbookd"'
    assert await incidents(session, api) == []


@pytest.mark.parametrize("missing", ["X-Runbookd-Timestamp", "X-Runbookd-Signature"])
async def test_missing_signature_headers_are_401(
    api: str, session: aiohttp.ClientSession, clock: ManualClock, missing: str
) -> None:
    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now())
    del headers[missing]
    status, answer, _ = await post(session, f"{api}/api/v1/webhooks/deploys", body, headers)
    assert status == 401
    assert answer == {"error": "missing X-Runbookd-Timestamp or X-Runbookd-Signature header"}


@pytest.mark.parametrize("skew", [-6 * 60, 6 * 60, -5 * 60 - 1])
async def test_a_timestamp_outside_the_tolerance_is_a_replay(
    api: str, session: aiohttp.ClientSession, clock: ManualClock, skew: int
) -> None:
    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now() + skew)
    with capture_logs() as logs:
        status, answer, _ = await post(session, f"{api}/api/v1/webhooks/deploys", body, headers)
    assert (status, answer) == (401, {"error": BAD_SIGNATURE})
    # The operator's log says which, for a webhook that exists.
    (refused,) = [e for e in logs if e["event"] == "webhook request refused"]
    assert refused["reason"] == "X-Runbookd-Timestamp: more than 300s from our clock (a replay?)"


async def test_a_request_captured_and_sent_later_is_refused(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    body = json.dumps(deploy()).encode()
    headers = signed(body, clock.now())
    await clock.advance(5 * 60)
    assert (await post(session, url, body, headers))[0] == 200  # the edge is inclusive
    await clock.advance(1)
    assert (await post(session, url, body, headers))[0] == 401
    headers["X-Runbookd-Timestamp"] = "1.8e9"
    status, answer, _ = await post(session, url, body, headers)
    assert (status, answer) == (401, {"error": "X-Runbookd-Timestamp: not unix seconds"})


async def test_a_bearer_webhook(api: str, session: aiohttp.ClientSession) -> None:
    url = f"{api}/api/v1/webhooks/uptime"
    body = json.dumps({"monitor": {"name": "homepage", "down": True}}).encode()
    json_type = {"Content-Type": "application/json"}
    status, answer, r = await post(session, url, body, json_type)
    assert (status, answer) == (401, {"error": NO_CREDENTIALS})
    assert r.headers["WWW-Authenticate"] == 'Signature realm="runbookd", Bearer realm="runbookd"'
    for headers in [
        json_type | {"Authorization": f"Bearer {HOOK_TOKEN}x"},
        json_type | {"Authorization": f"Bearer {API_TOKEN}"},  # an API token is not this one
    ]:
        status, answer, r = await post(session, url, body, headers)
        assert (status, answer) == (401, {"error": "missing or invalid bearer token"})
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="runbookd"'
    headers = json_type | {"Authorization": f"Bearer {HOOK_TOKEN}"}
    status, answer, _ = await post(session, url, body, headers)
    assert (status, answer) == (200, {"received": 1, "matched": 1})
    (incident,) = await incidents(session, api)
    assert (incident["rule"], incident["trigger"]["source"]) == ("site_down", "webhook:uptime")


def mixed(*statuses: str) -> bytes:
    """A notification of several alerts (Alertmanager's shape), sent to a generic webhook."""
    alerts = [
        {"status": status, "labels": {"alertname": "homepage", "instance": str(i)}}
        for i, status in enumerate(statuses)
    ]
    return json.dumps({"alerts": alerts}).encode()


async def test_a_webhook_maps_each_alert_of_a_list(
    api: str, session: aiohttp.ClientSession
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {HOOK_TOKEN}"}
    url = f"{api}/api/v1/webhooks/batch"
    body = mixed("resolved", "resolved", "firing")  # the firing one third
    status, answer, _ = await post(session, url, body, headers)
    assert (status, answer) == (200, {"received": 3, "matched": 3})
    (incident,) = await incidents(session, api)
    assert incident["trigger"]["labels"]["instance"] == "2"
    bad = json.dumps({"alerts": [{"status": "firing", "labels": {}}]}).encode()
    status, answer, _ = await post(session, url, bad, headers)
    assert (status, answer) == (400, {"error": "alerts.0.labels.alertname: not found in the body"})


async def test_a_webhook_refuses_a_list_it_would_read_one_item_of(
    api: str, session: aiohttp.ClientSession
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {HOOK_TOKEN}"}
    url = f"{api}/api/v1/webhooks/first"
    status, answer, _ = await post(session, url, mixed("resolved", "resolved", "firing"), headers)
    assert status == 400
    assert answer["error"].startswith("alerts.0.labels.alertname: reads one item of a list of 3")
    assert await incidents(session, api) == []
    status, answer, _ = await post(session, url, mixed("firing"), headers)  # one item: read
    assert (status, answer) == (200, {"received": 1, "matched": 1})


async def test_a_webhook_alert_is_one_commit_and_its_repeat_none(
    daemon: Daemon, api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    store = daemon.store
    assert isinstance(store, SqliteStore)
    # The start-up prune is a commit of its own: over once the ticker sleeps.
    await wait_for(lambda: TICK_SECONDS in clock.slept)
    url = f"{api}/api/v1/webhooks/uptime"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {HOOK_TOKEN}"}
    for down, expected in [(True, 1), (True, 0), (False, 1), (False, 0)]:
        body = json.dumps({"monitor": {"name": "homepage", "down": down}}).encode()
        async with Commits(store) as commits:
            status, answer, _ = await post(session, url, body, headers)
        assert (status, answer) == (200, {"received": 1, "matched": 1})
        assert commits.count == expected
    (incident,) = await incidents(session, api)
    assert incident["status"] == "resolved"
    for state in ("firing", "resolved"):
        labels = {"source": "webhook:uptime", "status": state, "result": "matched"}
        assert daemon.registry.get_sample_value("runbookd_alerts_received_total", labels) == 2


async def test_bad_bodies_are_400_naming_the_path(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{api}/api/v1/webhooks/deploys"
    for doc, reason in [
        ({"alert": {"title": "DeployFailed"}}, "alert.state: not found in the body"),
        (deploy(tags={}), "alert.tags.service: not found in the body"),
        (deploy(tags="web"), "alert.tags.service: not found in the body"),
        (deploy(title={"x": 1}), "alert.title: expected a string or number, not an object"),
        (deploy(title=""), "alert.title: the alert name is empty"),
        ([1, 2], "alert.title: not found in the body"),
    ]:
        body = json.dumps(doc).encode()
        status, answer, _ = await post(session, url, body, signed(body, clock.now()))
        assert status == 400
        assert answer["error"].startswith(reason)
    for body, headers, status, reason in [
        (b"{", signed(b"{", clock.now()), 400, "body is not valid JSON"),
        (b"{}", signed(b"{}", clock.now()) | {"Content-Type": "text/plain"}, 415, "expected"),
    ]:
        answer_status, answer, _ = await post(session, url, body, headers)
        assert (answer_status, answer["error"].split(" ")[0]) == (status, reason.split(" ")[0])
    assert await incidents(session, api) == []


async def test_an_unknown_webhook_answers_as_a_known_one_does(
    api: str, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Its name cannot be found out by trying: an unauthenticated request to a webhook that
    does not exist gets the very answer one to each existing webhook (of either scheme) gets."""
    body = json.dumps(deploy()).encode()
    json_type = {"Content-Type": "application/json"}
    for headers in [
        json_type,
        json_type | {"Authorization": f"Bearer {HOOK_TOKEN}x"},
        signed(body, clock.now()) | {"X-Runbookd-Signature": "sha256=" + "0" * 64},
        signed(body, clock.now() - 3600),
        signed(body, clock.now()) | {"X-Runbookd-Timestamp": "soon"},
        {"X-Runbookd-Timestamp": str(int(clock.now()))},
    ]:
        answers = set()
        for name in ("deploys", "uptime", "nope", "x" * 64):
            status, answer, r = await post(session, f"{api}/api/v1/webhooks/{name}", body, headers)
            answers.add((status, json.dumps(answer), r.headers["WWW-Authenticate"]))
        assert len(answers) == 1, answers
        ((status, _, _),) = answers
        assert status == 401
