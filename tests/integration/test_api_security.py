"""The API's defences on a real daemon on loopback: bearer tokens and scopes, open health
and metrics, body limits, rate limits, internal errors, and secrets that never leak."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.api.app import build_app
from tests.utils import rendered_logs, run_daemon, serve

WRITE = "w-0123456789abcdef-write"
READ = "r-0123456789abcdef-read"
INTAKE = "i-0123456789abcdef-intake"  # from a file, as systemd's LoadCredential= gives it
CI = "c-0123456789abcdef-ci"  # from the environment
SECRETS = (WRITE, READ, INTAKE, CI)
MIB = 1024 * 1024

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    protect_metrics: {protect}
    rate_limit: {rate}
    max_body: {max_body}
    tokens:
      - {{name: ops, token: {write}, scope: write}}
      - {{name: grafana, token: {read}, scope: read}}
      - {{name: alertmanager, token_file: {intake_file}, scope: intake}}
      - {{name: ci, token: "${{RUNBOOKD_TEST_API_TOKEN}}", scope: read}}
rules:
  errors:
    when: {{alert: HighErrorRate}}
"""

ALERTS = {
    "version": "4",
    "status": "firing",
    "alerts": [{"status": "firing", "labels": {"alertname": "HighErrorRate"}}],
}
SILENCE = {"created_by": "ana", "comment": "deploy", "rule": "errors", "duration": "1h"}


def write_config(
    directory: Path,
    *,
    protect: bool = False,
    rate: str = "{per_second: 50, burst: 200}",
    max_body: int = MIB,
) -> Path:
    intake_file = directory / "intake-token"
    intake_file.write_text(INTAKE + "\n")
    path = directory / "runbookd.yaml"
    text = CONFIG.format(
        state=directory / "state",
        protect=str(protect).lower(),
        rate=rate,
        max_body=max_body,
        write=WRITE,
        read=READ,
        intake_file=intake_file,
    )
    path.write_text(text)
    return path


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def ci_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_TEST_API_TOKEN", CI)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[str]:
    async with run_daemon(write_config(tmp_path)) as daemon:
        yield f"http://127.0.0.1:{daemon.port}"


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = kw.pop("headers", {}) | (auth(token) if token else {})
    async with session.request(method, url, headers=headers, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r


# -- authentication and scopes -------------------------------------------------------------------


async def test_no_token_or_a_wrong_one_is_401_with_a_challenge(
    api: str, session: aiohttp.ClientSession
) -> None:
    for headers, reason, challenge in [
        ({}, "missing bearer token (Authorization: Bearer TOKEN)", 'Bearer realm="runbookd"'),
        ({"Authorization": f"Basic {WRITE}"}, "missing bearer token", "Bearer"),
        (auth(WRITE + "x"), "invalid token", 'Bearer realm="runbookd", error="invalid_token"'),
        (auth(WRITE[:-1]), "invalid token", "Bearer"),
    ]:
        status, body, r = await call(session, "GET", f"{api}/api/v1/incidents", headers=headers)
        assert status == 401
        assert body["error"].startswith(reason)
        assert r.headers["WWW-Authenticate"].startswith(challenge)
    # Deny by default: even a route that does not exist says nothing without a token.
    status, _, _ = await call(session, "GET", f"{api}/api/v1/nothing")
    assert status == 401
    assert (await call(session, "GET", f"{api}/api/v1/nothing", READ))[0] == 404


@pytest.mark.parametrize(
    ("token", "method", "path", "body", "status"),
    [
        (READ, "GET", "/api/v1/incidents", None, 200),
        (READ, "POST", "/api/v1/silences", SILENCE, 403),
        (READ, "POST", "/api/v1/alerts", ALERTS, 403),
        (WRITE, "GET", "/api/v1/incidents", None, 200),
        (WRITE, "POST", "/api/v1/silences", SILENCE, 201),
        (WRITE, "POST", "/api/v1/alerts", ALERTS, 200),
        (INTAKE, "POST", "/api/v1/alerts", ALERTS, 200),
        (INTAKE, "GET", "/api/v1/incidents", None, 403),
        (INTAKE, "POST", "/api/v1/silences", SILENCE, 403),
        (INTAKE, "POST", "/api/v1/incidents/x/approve", {"by": "am"}, 403),
        (INTAKE, "DELETE", "/api/v1/silences/x", None, 403),
        (CI, "GET", "/api/v1/approvals", None, 200),
    ],
)
async def test_scopes(
    api: str,
    session: aiohttp.ClientSession,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
) -> None:
    answer, data, _ = await call(session, method, api + path, token, json=body)
    assert answer == status, data
    if status == 403:
        assert "this needs" in data["error"]


async def test_403_names_the_token_and_the_scope_it_lacks(
    api: str, session: aiohttp.ClientSession
) -> None:
    _, body, _ = await call(session, "POST", f"{api}/api/v1/silences", READ, json=SILENCE)
    assert body == {"error": "token 'grafana' has scope read; this needs write"}


async def test_the_record_names_the_token_that_acted_beside_the_name_typed(
    api: str, session: aiohttp.ClientSession
) -> None:
    """A name typed in a request is what a person says; the token is who held the key."""
    status, silence, _ = await call(session, "POST", f"{api}/api/v1/silences", WRITE, json=SILENCE)
    assert (status, silence["created_by"]) == (201, "ana (token ops)")
    mine = SILENCE | {"created_by": "ops"}
    status, silence, _ = await call(session, "POST", f"{api}/api/v1/silences", WRITE, json=mine)
    assert (status, silence["created_by"]) == (201, "ops")
    for body in (SILENCE | {"created_by": "ana\x00"}, SILENCE | {"created_by": "ana\n<i>"}):
        status, answer, _ = await call(session, "POST", f"{api}/api/v1/silences", WRITE, json=body)
        assert status == 400
        assert answer["error"] == (
            "created_by: must be one line of printable text (no control characters)"
        )
    refused = {"by": "ana\u202e\x1b[31m"}
    url = f"{api}/api/v1/incidents/x/acknowledge"
    status, answer, _ = await call(session, "POST", url, WRITE, json=refused)
    assert (status, answer["error"]) == (
        400,
        "by: must be one line of printable text (no control characters)",
    )


async def test_health_and_metrics_stay_open(api: str, session: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await call(session, "GET", api + path))[0] == 200


async def test_metrics_can_be_protected(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with run_daemon(write_config(tmp_path, protect=True)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}/metrics"
        assert (await call(session, "GET", url))[0] == 401
        assert (await call(session, "GET", url, INTAKE))[0] == 403
        assert (await call(session, "GET", url, READ))[0] == 200
        assert (await call(session, "GET", f"http://127.0.0.1:{daemon.port}/healthz"))[0] == 200


# -- bad input -----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413(api: str, session: aiohttp.ClientSession) -> None:
    url = f"{api}/api/v1/silences"
    json_type = {"Content-Type": "application/json"}
    big = io.BytesIO(b" " * (MIB + 1))  # 1 MiB + 1 byte, with a Content-Length
    status, body, _ = await call(session, "POST", url, WRITE, data=big, headers=json_type)
    assert (status, body) == (413, {"error": f"body larger than {MIB} bytes"})

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(MIB // 65536 + 1):
            yield b" " * 65536

    status, body, _ = await call(session, "POST", url, WRITE, data=chunks(), headers=json_type)
    assert (status, body) == (413, {"error": f"body larger than {MIB} bytes"})
    # Exactly at the limit is read (and then refused as not JSON).
    exact = io.BytesIO(b" " * MIB)
    status, _, _ = await call(session, "POST", url, WRITE, data=exact, headers=json_type)
    assert status == 400


async def test_a_compressed_body_is_bounded_inflated(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A small body arrives whole with its head and is taken from the buffer, not by read()'s
    loop: what counts against max_body is still what it inflates to."""
    limit = 16_384  # below the read buffer's high-water mark: the body is whole at once
    async with run_daemon(write_config(tmp_path, max_body=limit)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}/api/v1/alerts"
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        bomb = gzip.compress(b" " * (limit + 1))  # some 50 bytes on the wire
        status, body, _ = await call(session, "POST", url, INTAKE, data=bomb, headers=headers)
        assert (status, body) == (413, {"error": f"body larger than {limit} bytes"})
        doc = json.dumps(ALERTS).encode()
        status, body, _ = await call(
            session, "POST", url, INTAKE, data=gzip.compress(doc), headers=headers
        )
        assert (status, body) == (200, {"received": 1, "matched": 1})


async def test_malformed_bodies_are_4xx_not_crashes(
    api: str, session: aiohttp.ClientSession
) -> None:
    url = f"{api}/api/v1/silences"
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": b"by=ana"}, 415, "expected Content-Type: application/json"),
        ({"data": b"[" * 100_000, "headers": json_type}, 400, "body is not valid JSON"),
        ({"data": b"\xff\xfe", "headers": json_type}, 400, "body is not valid JSON"),
        ({"json": SILENCE | {"a\r\nX-Evil: 1": 1}}, 400, "a??X-Evil: 1: Extra inputs"),
        ({"json": [1, 2]}, 400, "body: Input should be"),
    ]
    for kwargs, status, reason in cases:
        answer, body, r = await call(session, "POST", url, WRITE, **kwargs)
        assert answer == status
        assert body["error"].startswith(reason)
        assert "X-Evil" not in r.headers


async def test_a_caller_over_its_rate_is_429_with_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    now = [1000.0]
    path = write_config(tmp_path, rate="{per_second: 0.5, burst: 3}")
    async with (
        run_daemon(path) as daemon,
        serve(build_app(daemon, monotonic=lambda: now[0])) as api,
    ):
        url = f"{api}/api/v1/incidents"
        assert [(await call(session, "GET", url, READ))[0] for _ in range(3)] == [200] * 3
        status, body, r = await call(session, "GET", url, READ)
        assert (status, r.headers["Retry-After"]) == (429, "2")
        assert body == {"error": "rate limit exceeded, retry in 2s"}
        # Buckets are per token; callers without a valid token share one per address.
        assert (await call(session, "GET", url, WRITE))[0] == 200
        guesses = [(await call(session, "GET", url, "guess"))[0] for _ in range(4)]
        assert guesses == [401, 401, 401, 429]
        now[0] += 2.0  # one request's worth refilled
        assert (await call(session, "GET", url, READ))[0] == 200
        assert (await call(session, "GET", url, READ))[0] == 429


async def test_a_handler_exception_is_500_json_and_the_daemon_keeps_serving(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire at /var/lib/runbookd/secret-path")

    with rendered_logs() as logs:
        async with run_daemon(write_config(tmp_path)) as daemon:
            api = f"http://127.0.0.1:{daemon.port}"
            monkeypatch.setattr(daemon.store, "list_incidents", broken)
            status, body, r = await call(session, "GET", f"{api}/api/v1/incidents", READ)
            assert (status, body) == (500, {"error": "internal error"})
            assert r.content_type == "application/json"
            assert (await call(session, "GET", f"{api}/healthz"))[0] == 200
            assert (await call(session, "GET", f"{api}/api/v1/approvals", READ))[0] == 200
            metrics = (await call(session, "GET", f"{api}/metrics"))[1]
    assert "disk on fire" not in str(body)
    text = logs.getvalue()
    assert '"event": "api request failed"' in text
    assert '"route": "/api/v1/incidents"' in text
    assert "Traceback" in text
    assert "RuntimeError: disk on fire" in text
    assert 'runbookd_api_requests_total{code_class="5xx",route="/api/v1/incidents"} 1.0' in metrics


async def test_request_metrics_use_route_templates_not_paths(
    api: str, session: aiohttp.ClientSession
) -> None:
    await call(session, "GET", f"{api}/api/v1/incidents/some-id-1234", READ)
    await call(session, "GET", f"{api}/no/such/path-5678", READ)
    await call(session, "GET", f"{api}/api/v1/incidents")
    _, metrics, _ = await call(session, "GET", f"{api}/metrics")
    assert 'code_class="4xx",route="/api/v1/incidents/{id}"} 1.0' in metrics
    assert 'code_class="4xx",route="unmatched"} 1.0' in metrics
    assert 'code_class="4xx",route="/api/v1/incidents"} 1.0' in metrics
    assert "some-id-1234" not in metrics
    assert "path-5678" not in metrics


async def test_tokens_never_appear_in_logs_metrics_or_answers(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    with rendered_logs() as logs:
        async with run_daemon(write_config(tmp_path)) as daemon:
            api = f"http://127.0.0.1:{daemon.port}"
            for token in (*SECRETS, WRITE + "x"):
                for method, path, body in [
                    ("GET", "/api/v1/incidents", None),
                    ("POST", "/api/v1/silences", SILENCE),
                    ("POST", "/api/v1/alerts", ALERTS),
                    ("POST", "/api/v1/incidents/x/approve", {"by": "ana"}),
                ]:
                    _, answer, r = await call(session, method, api + path, token, json=body)
                    seen += [str(answer), str(dict(r.headers))]
            monkeypatch.setattr(daemon.store, "list_incidents", None)  # a 500, logged
            seen.append(str((await call(session, "GET", f"{api}/api/v1/incidents", READ))[1]))
            seen.append((await call(session, "GET", f"{api}/metrics"))[1])
            seen.append(repr(daemon.config))
    seen.append(logs.getvalue())
    assert '"event": "started"' in logs.getvalue()
    assert "api request failed" in logs.getvalue()
    for secret in SECRETS:
        assert all(secret not in text for text in seen)
