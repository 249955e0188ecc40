"""The OpenAPI document: it lists exactly the routes the app serves, and a real daemon answers
generated requests (schemathesis) without a server error and as the document says."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import settings

from daemon.api import openapi, routes
from daemon.api.app import build_app
from daemon.api.auth import GRANTS
from daemon.runtime.daemon import Daemon
from tests.paths import PLUGINS
from tests.utils import run_daemon

TOKEN = "fuzzer-token-0123456789abcdef"
WEBHOOK_TOKEN = "webhook-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
  api:
    tokens: {tokens}
    # Generated requests come fast; 429 is documented, but it would hide the routes.
    rate_limit:
      per_second: 100000
      burst: 100000
checks:
  plugin:
    type: nagios
    argv: [{plugin}]
    interval: 1m
    jitter: 0
rules:
  overloaded:
    when: plugin.load > 100
    do: [fix]
  fuzzed:
    when:
      alert: Fuzzed
    do: [fix]
remediations:
  fix:
    type: command
    argv: ["true"]
    require_approval: true
    approval_timeout: 1h
webhooks:
  grafana:
    fields:
      name: title
      status: state
    auth:
      token: {webhook_token}
deploys:
  rollback_if: {{}}
  rollback: fix
  vercel:
    webhook_secret: vercel-webhook-secret-0123456789
"""


def write_config(directory: Path, tokens: dict[str, str] | None = None) -> Path:
    """`tokens`: scope -> token, one API token per scope (default: one write token)."""
    tokens = tokens or {"write": TOKEN}
    listed = [{"name": scope, "token": token, "scope": scope} for scope, token in tokens.items()]
    path = directory / "runbookd.yaml"
    text = CONFIG.format(
        state=directory / "state",
        tokens=json.dumps(listed),  # JSON is YAML
        plugin=PLUGINS / "check_ok.sh",
        webhook_token=WEBHOOK_TOKEN,
    )
    path.write_text(text)
    return path


# -- the document against the router -----------------------------------------------------------


async def test_document_lists_exactly_the_routes_the_app_serves(tmp_path: Path) -> None:
    async with run_daemon(write_config(tmp_path)) as daemon:
        app = build_app(daemon)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        # The console's HTML pages are no API: every one is a row of the route table all the same.
        and not route.resource.canonical.startswith(("/ui", "/status"))
    }
    assert {op.template for op in routes.UI_OPERATIONS} <= {
        r.resource.canonical for r in app.router.routes() if r.resource
    }
    documented = {
        (method, path)
        for path, operations in openapi.document()["paths"].items()
        for method in operations
    }
    assert served - documented == set(), "routes missing from daemon/api/openapi.py"
    assert documented - served == set(), "documented routes the app does not serve"


def documented_scopes() -> dict[tuple[str, str], str | None]:
    """(method, path) -> the bearer role the document asks for (None: no API token). Not the
    webhooks: they take their own token or signature, never an API token (test_webhooks.py,
    test_deploys.py)."""
    found: dict[tuple[str, str], str | None] = {}
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            security = operation["security"]
            if {"webhookToken": []} in security or {"vercelSignature": []} in security:
                continue
            roles = [r["bearer"] for r in operation["security"] if "bearer" in r]
            optional = {} in operation["security"]
            found[method, path] = roles[0][0] if roles and not optional else None
    return found


async def test_the_document_asks_for_the_scopes_the_guard_enforces(tmp_path: Path) -> None:
    tokens = {scope: f"{scope}-token-0123456789abcdef" for scope in GRANTS}
    config = write_config(tmp_path, tokens)
    async with run_daemon(config) as daemon, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{daemon.port}"
        for (method, path), needed in documented_scopes().items():
            url = base + path.replace("{", "").replace("}", "")
            async with session.request(method, url, json={}) as r:
                assert (r.status == 401) == (needed is not None), (method, path, r.status)
            for scope, token in tokens.items():
                headers = {"Authorization": f"Bearer {token}"}
                async with session.request(method, url, json={}, headers=headers) as r:
                    allowed = needed is None or needed in GRANTS[scope]  # type: ignore[operator]
                    assert (r.status == 403) != allowed, (method, path, scope, r.status)
                    assert r.status != 401, (method, path, scope)


async def test_the_daemon_serves_the_document(tmp_path: Path) -> None:
    async with run_daemon(write_config(tmp_path)) as daemon, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{daemon.port}{routes.PATH}"
        async with session.get(url) as r:
            assert r.status == 401
        async with session.get(url, headers=AUTH) as r:
            assert r.content_type == "application/json"
            assert await r.json() == openapi.document()


# -- a real daemon, fuzzed -----------------------------------------------------------------------


@dataclass
class LiveDaemon:
    """A daemon on loopback in a thread with its own event loop: schemathesis calls it with
    blocking `requests`, which must not stall the loop that serves them."""

    config_file: Path
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    url: str = ""

    def __enter__(self) -> LiveDaemon:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._context: AbstractAsyncContextManager[Daemon] = run_daemon(self.config_file)
        daemon = self._call(self._context.__aenter__())
        self.url = f"http://127.0.0.1:{daemon.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._context.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers=AUTH, timeout=10)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.url + path, json=body, headers=AUTH, timeout=10)
        assert response.ok, response.text
        answer: dict[str, Any] = response.json()
        return answer


def seed(live: LiveDaemon) -> None:
    """Something in every list: an open incident waiting for approval, a silence."""
    deadline = time.monotonic() + 10
    while live.get("/readyz").status_code != 200:  # a 503 until it has started
        assert time.monotonic() < deadline, "daemon not ready"
        time.sleep(0.02)
    alert = {"status": "firing", "labels": {"alertname": "Fuzzed", "service": "web"}}
    body = {"version": "4", "status": "firing", "alerts": [alert]}
    assert live.post("/api/v1/alerts", body) == {"received": 1, "matched": 1}
    silence = {"created_by": "ana", "comment": "deploy", "rule": "overloaded", "duration": "1h"}
    live.post("/api/v1/silences", silence)
    while not live.get("/api/v1/approvals").json()["approvals"]:
        assert time.monotonic() < deadline, "no approval asked for"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(write_config(tmp_path_factory.mktemp("openapi"))) as daemon:
        seed(daemon)
        yield daemon


FUZZ_CONFIG = {
    "auth": {
        "openapi": {"bearer": {"bearer": TOKEN}, "webhookToken": {"bearer": WEBHOOK_TOKEN}},
    },
    # Every check runs on every operation except where the document cannot say it all:
    "operations": [
        {
            # Another method on an open route meets the guard's deny-by-default: 401, not 405.
            "include-operation-id": ["healthz", "readyz"],
            "checks": {"unsupported_method": {"enabled": False}},
        },
        {
            # Invalid alerts are refused; a huge invalid body is refused earlier, with 413.
            "include-operation-id": "alertmanagerWebhook",
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 413, 415, 429],
                },
            },
        },
        {
            # A valid silence ends in the future, within 90 days: no schema knows the clock.
            "include-operation-id": "createSilence",
            "checks": {"positive_data_acceptance": {"enabled": False}},
        },
    ],
}

# The document the daemon serves (test_the_daemon_serves_the_document).
schema = schemathesis.openapi.from_dict(
    openapi.document(), config=schemathesis.Config.from_dict(FUZZ_CONFIG)
)


@schema.parametrize()
# Bounded and the same on every run; loopback answers under load may take a while.
@settings(max_examples=25, derandomize=True, database=None, deadline=None)
def test_the_daemon_answers_as_documented(case: schemathesis.Case, live: LiveDaemon) -> None:
    case.call_and_validate(base_url=live.url, timeout=10)
