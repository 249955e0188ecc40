"""Hostile alert intake on a real daemon on loopback: a flood of distinct alerts from a caller
holding an intake token is refused at the caps (429, counted, one incident) and leaves bounded
state, after a restart too; an unauthenticated caller never gets the daemon to read a body it
could refuse from the headers alone, nor learns which webhook names exist."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.api.auth import BEARER_REFUSED, NO_CREDENTIALS
from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon

INTAKE = "i-0123456789abcdef-intake"
WRITE = "w-0123456789abcdef-write"
HOOK_TOKEN = "hook-0123456789abcdef"
SECRET = "hmac-0123456789abcdef"
MIB = 1024 * 1024
PER_RULE, TOTAL = 50, 80

CONFIG = f"""\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {{state}}
  alerts: {{{{max_firing_per_rule: {PER_RULE}, max_firing: {TOTAL}}}}}
  api:
    tokens:
      - {{{{name: alertmanager, token: {INTAKE}, scope: intake}}}}
      - {{{{name: ops, token: {WRITE}, scope: write}}}}
webhooks:
  uptime:
    fields: {{{{name: monitor.name, status: monitor.down}}}}
    auth: {{{{token: {HOOK_TOKEN}}}}}
  deploys:
    fields: {{{{name: alert.title, status: alert.state}}}}
    auth: {{{{hmac_secret: {SECRET}}}}}
rules:
  errors:
    when: {{{{alert: HighErrorRate}}}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


def storm(first: int, count: int, status: str = "firing") -> dict[str, Any]:
    """One Alertmanager request of `count` distinct alerts."""
    alerts = [
        {
            "status": status,
            "labels": {"alertname": "HighErrorRate", "instance": f"web-{i}"},
            "startsAt": "2026-11-28T03:00:00Z",
            "fingerprint": f"fp{i:05d}",
        }
        for i in range(first, first + count)
    ]
    return {"version": "4", "status": status, "alerts": alerts}


async def push(
    session: aiohttp.ClientSession, daemon: Daemon, body: dict[str, Any]
) -> tuple[int, Any, str | None]:
    url = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
    headers = {"Authorization": f"Bearer {INTAKE}"}
    async with session.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def incident_rules(session: aiohttp.ClientSession, daemon: Daemon) -> list[str]:
    url = f"http://127.0.0.1:{daemon.port}/api/v1/incidents?status=open"
    async with session.get(url, headers={"Authorization": f"Bearer {WRITE}"}) as r:
        assert r.status == 200
        return sorted(i["rule"] for i in (await r.json())["incidents"] if i["status"] == "open")


def over_cap(daemon: Daemon) -> float | None:
    return daemon.registry.get_sample_value("runbookd_alerts_over_cap_total", {"rule": "errors"})


async def test_an_alert_storm_is_refused_at_the_cap_and_leaves_bounded_state(
    config_file: Path, session: aiohttp.ClientSession
) -> None:
    async with run_daemon(config_file) as daemon:
        answers = [await push(session, daemon, storm(i * 40, 40)) for i in range(10)]
        assert answers[0] == (200, {"received": 40, "matched": 40}, None)
        refused = (
            "new firing alerts refused: their rule or runbookd has as many alerts firing as its "
            "cap (runbookd.alerts); the rest of the request was applied; send it again later"
        )
        assert answers[1] == (
            429,
            {"error": f"30 {refused}", "received": 40, "matched": 40, "refused": 30},
            "60",
        )
        assert (
            answers[2:]
            == [
                (
                    429,
                    {"error": f"40 {refused}", "received": 40, "matched": 40, "refused": 40},
                    "60",
                )
            ]
            * 8
        )
        assert over_cap(daemon) == 400 - PER_RULE
        # Bounded: rows in the store, fingerprints in memory.
        assert len(await daemon.store.values("alerts:errors")) == PER_RULE
        assert len(daemon.engine.alert_rules["errors"].firing) == PER_RULE
        # One incident for the rule, one for its cap, however many requests were refused.
        assert await incident_rules(session, daemon) == ["errors", "errors:alert_cap"]
        # Alertmanager resends the group it was refused: the first 10 are no news now.
        assert (await push(session, daemon, storm(40, 40)))[1]["refused"] == 30

    async with run_daemon(config_file) as daemon:  # bounded after a restart too
        assert len(daemon.engine.alert_rules["errors"].firing) == PER_RULE
        assert len(await daemon.store.values("alerts:errors")) == PER_RULE
        assert await incident_rules(session, daemon) == ["errors", "errors:alert_cap"]
        # Resolutions are never refused; under 90% of the cap, new alerts are taken again.
        assert (await push(session, daemon, storm(0, 5, "resolved")))[0] == 200
        assert await incident_rules(session, daemon) == ["errors"]
        assert (await push(session, daemon, storm(1000, 5)))[0] == 200


# -- authentication before the body ------------------------------------------------------------


async def raw_post(port: int, path: str, headers: dict[str, str]) -> tuple[int, Any, float]:
    """POST headers announcing a body of max_body bytes, and send none of it: (status, JSON
    body, seconds until the answer). A server that waits for the body never answers."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {MIB}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
        return int(head.split(b" ")[1]), json.loads(body), time.monotonic() - start
    finally:
        writer.close()


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        ("/api/v1/webhooks/uptime", JSON | {"Authorization": "Bearer wrong-0123456789"}, None),
        ("/api/v1/webhooks/uptime", JSON, NO_CREDENTIALS),
        ("/api/v1/webhooks/deploys", JSON | {"Authorization": f"Bearer {HOOK_TOKEN}"}, None),
        ("/api/v1/webhooks/nope", JSON | {"Authorization": f"Bearer {HOOK_TOKEN}"}, None),
        ("/api/v1/webhooks/nope", JSON, NO_CREDENTIALS),
        ("/api/v1/alerts", JSON | {"Authorization": "Bearer wrong-0123456789"}, "invalid token"),
        ("/api/v1/alerts", JSON, "missing bearer token (Authorization: Bearer TOKEN)"),
    ],
)
async def test_a_caller_refused_by_its_headers_is_refused_before_its_body_is_read(
    config_file: Path, path: str, headers: dict[str, str], reason: str | None
) -> None:
    async with run_daemon(config_file) as daemon:
        assert daemon.port is not None
        status, answer, took = await raw_post(daemon.port, path, headers)
        assert (status, answer) == (401, {"error": reason or BEARER_REFUSED})
        assert took < 2.0
        # The daemon is well afterwards.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{daemon.port}/healthz") as r,
        ):
            assert r.status == 200
