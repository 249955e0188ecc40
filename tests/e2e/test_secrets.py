"""No secret given to runbookd ever comes back out of it.

A real daemon process gets every kind of secret, given every way the config allows (a plain
value, `${ENV}`, `*_file`): a PagerDuty routing key, a Slack webhook URL, bearer tokens and an
API key header for http remediations, PostgreSQL and Redis URLs with passwords, S3 keys, API
tokens. It goes through incidents that use them against local receivers, one of which echoes
the request (and so the credential) back, the way careless servers do; a reload is refused
and `check-config` fails on bad values next to the secrets. Then everything runbookd emitted
is searched: its log lines, every API answer, /metrics, the files in its state directory, the
CLI's output. Not a secret, nor any 8 characters of one, may be found there.

If this test fails, a secret leaks: do not weaken it, fix the leak.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.leaks import API_TOKENS, Secrets, find_leaks
from tests.utils import free_port, serve, wait_for

# --- the world the daemon talks to ----------------------------------------------------------


@dataclass
class World:
    app: str
    deploy: str
    pagerduty: FakePagerDuty
    pagerduty_url: str
    slack: FakeSlack
    slack_url: str
    s3: str
    state: dict[str, bool] = field(default_factory=lambda: {"up": True})
    deploy_calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    s3_calls: list[dict[str, str]] = field(default_factory=list)

    def page_actions(self) -> list[str]:
        return [event["event_action"] for event in self.pagerduty.events]


def app_under_watch(state: dict[str, bool]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=200 if state["up"] else 503)

    app = web.Application()
    app.router.add_get("/health", health)
    return app


def echoing_deploy_api(calls: list[tuple[str, dict[str, str]]]) -> web.Application:
    """Answers with the request's headers, credentials included, as careless APIs do. The
    first rollback fails (503) and is retried; a purge is always refused (401)."""

    async def echo(request: web.Request) -> web.Response:
        calls.append((request.path, dict(request.headers)))
        body = {"echo": {"headers": dict(request.headers), "body": await request.text()}}
        if request.path == "/purge":
            return web.json_response(body, status=401)
        first = [path for path, _ in calls if path == request.path] == [request.path]
        return web.json_response(body, status=503 if first else 200)

    app = web.Application()
    app.router.add_post("/{action}", echo)
    return app


def s3_refusing_the_signature(calls: list[dict[str, str]]) -> web.Application:
    """S3's answer to a bad signature, which repeats the access key id, as S3 does."""

    async def refuse(request: web.Request) -> web.Response:
        calls.append(dict(request.headers))
        match = re.search(r"Credential=([^/]+)/", request.headers.get("Authorization", ""))
        key_id = match.group(1) if match else ""
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
            "<Message>The request signature we calculated does not match the signature you "
            "provided. Check your key and signing method.</Message>"
            f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId><RequestId>4442587FB7D0A2F9</RequestId>"
            "</Error>"
        )
        return web.Response(status=403, text=xml, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


@pytest.fixture
def secret_values() -> Secrets:
    return Secrets()


@pytest.fixture
async def world(secret_values: Secrets) -> AsyncIterator[World]:
    pagerduty, slack = FakePagerDuty(), FakeSlack(path=secret_values.slack_path())
    pagerduty.fail_next(500)  # a retried page: the retry path sees the key too
    deploy_calls: list[tuple[str, dict[str, str]]] = []
    s3_calls: list[dict[str, str]] = []
    state = {"up": True}
    async with (
        serve(app_under_watch(state)) as app_url,
        serve(echoing_deploy_api(deploy_calls)) as deploy_url,
        serve(pagerduty.app) as pagerduty_url,
        serve(slack.app) as slack_url,
        serve(s3_refusing_the_signature(s3_calls)) as s3_url,
    ):
        yield World(
            app_url,
            deploy_url,
            pagerduty,
            pagerduty_url,
            slack,
            slack_url,
            s3_url,
            state,
            deploy_calls,
            s3_calls,
        )


# --- the configs ------------------------------------------------------------------------------


def secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n")  # a trailing newline, as editors and `echo` leave it
    path.chmod(0o600)
    return path


def good_config(tmp: Path, world: World, s: Secrets) -> dict[str, Any]:
    """Each secret given one of the three ways: plain value, ${ENV}, *_file."""
    creds = tmp / "credentials"
    creds.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "state_dir": str(tmp / "state"),
        "log_level": "debug",  # the most the daemon will ever say
    }
    if API_TOKENS:
        settings["api"] = {
            "tokens": [
                {"name": "ops", "token": "${OPS_API_TOKEN}", "scope": "write"},
                {
                    "name": "dashboards",
                    "token_file": str(secret_file(creds, "api-read", s.api_read_token)),
                    "scope": "read",
                },
            ]
        }
    return {
        "runbookd": settings,
        "checks": {
            "health": {
                "type": "http",
                "url": f"{world.app}/health",
                "interval": "100ms",
                "timeout": "1s",
            },
            # Nothing listens there: the check reports why it cannot connect.
            "db": {
                "type": "postgres",
                "dsn": f"postgresql://monitor:{s.postgres_password}@127.0.0.1:{free_port()}/app",
                "interval": "200ms",
                "timeout": "1s",
            },
            "cache": {
                "type": "redis",
                "url_file": str(
                    secret_file(
                        creds, "redis-url", f"redis://:{s.redis_password}@127.0.0.1:{free_port()}/0"
                    )
                ),
                "interval": "200ms",
                "timeout": "1s",
            },
            "backups": {
                "type": "s3_backup",
                "bucket": "backups",
                "endpoint_url": world.s3,
                "access_key_id": "${BACKUP_S3_ACCESS_KEY_ID}",
                "secret_access_key_file": str(
                    secret_file(creds, "s3-secret", s.s3_secret_access_key)
                ),
                "interval": "300ms",
                "timeout": "2s",
            },
        },
        "rules": {
            # The last step fails: a failed step ends `do:` and escalates.
            "down": {
                "when": "health.up < 1",
                "do": ["rollback", "page", "chat", "diagnostics", "purge_cdn"],
                "escalate": ["page"],
            },
            "db_down": {"when": "db.up < 1", "do": ["failover"]},
        },
        "remediations": {
            "rollback": {
                "type": "http",
                "url": f"{world.deploy}/rollback",
                "token_file": str(secret_file(creds, "deploy-token", s.http_bearer_token)),
                "body": {"incident": "{{ incident.id }}"},
                "resolve_body": {"resolved": "{{ incident.id }}"},
                "retry": {"attempts": 2, "base_delay": "10ms"},
                "cooldown": "0s",
            },
            "page": {
                "type": "pagerduty",
                "events_url": f"{world.pagerduty_url}/v2/enqueue",
                "routing_key": "${PAGERDUTY_ROUTING_KEY}",
                "retry": {"attempts": 3, "base_delay": "10ms"},
                "cooldown": "0s",
            },
            "chat": {
                "type": "slack",
                "webhook_url": world.slack_url + s.slack_path(),
                "retry": {"attempts": 2, "base_delay": "10ms"},
                "cooldown": "0s",
            },
            # What a command prints is recorded (its environment: see the test below).
            "diagnostics": {"type": "command", "argv": ["echo", "caches warmed"]},
            # The CDN answers 401 and echoes the key it was sent.
            "purge_cdn": {
                "type": "http",
                "url": f"{world.deploy}/purge",
                "headers": {"X-Api-Key": "${CDN_API_KEY}"},
                "retry": {"attempts": 1},
            },
            # Destructive enough to wait for an operator, who rejects it through the API.
            "failover": {
                "type": "http",
                "url": f"{world.deploy}/failover",
                "token": s.http_bearer_token,
                "require_approval": True,
                "approval_timeout": "5m",
            },
        },
    }


def bad_config(config: dict[str, Any], s: Secrets) -> dict[str, Any]:
    """The good config with bad values next to (and in) the secrets."""
    bad = json.loads(json.dumps(config))
    remediations, checks = bad["remediations"], bad["checks"]
    remediations["page"]["routing_key"] = s.pagerduty_routing_key  # plain, next to...
    remediations["page"]["timeout"] = "banana"  # ...a bad value
    remediations["page"]["routing_keyy"] = s.pagerduty_routing_key  # a misspelt secret field
    # A secret that is itself the bad value: the message must not repeat it.
    remediations["chat"]["webhook_url"] = "hooks.slack.invalid" + s.slack_path()
    remediations["failover"]["token"] = [s.http_bearer_token]
    checks["db"]["dsn"] = f"mysql://monitor:{s.postgres_password}@127.0.0.1:3306/app"
    checks["backups"]["secret_access_key"] = s.s3_secret_access_key  # also given as a file
    return bad


YAML_ERROR = """
remediations:
  page:
    type: pagerduty
    routing_key: "{key}
    timeout: 5s
"""


# --- running the daemon and its CLI -----------------------------------------------------------


def environment(s: Secrets) -> dict[str, str]:
    # Named as an operator would (README: `routing_key: ${PAGERDUTY_ROUTING_KEY}`).
    env = os.environ | {
        "PAGERDUTY_ROUTING_KEY": s.pagerduty_routing_key,
        "BACKUP_S3_ACCESS_KEY_ID": s.s3_access_key_id,
        "CDN_API_KEY": s.cdn_api_key,
        "OPS_API_TOKEN": s.api_write_token,
        "PYTHONUNBUFFERED": "1",
    }
    # The daemon finds credentials through no other channel than its config.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


async def runbookd(env: dict[str, str], *args: str) -> tuple[int, bytes]:
    """A CLI command in a subprocess, awaited: the receivers run on this event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, output


async def wait_for_line(log: Path, needle: str, within: float = 15.0) -> dict[str, Any]:
    """The first JSON log line containing `needle` (bounded in time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if needle in line:
                parsed: dict[str, Any] = json.loads(line)
                return parsed
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged; log:\n{log.read_text(errors='replace')}")


class Api:
    """Calls the daemon's API and keeps every answer, to be searched afterwards."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base = session, base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.answers: dict[str, bytes] = {}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = kwargs.pop("headers", self.headers)
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            body = await response.read()
        self.answers[f"{method} {path} ({response.status}, #{len(self.answers) + 1})"] = body
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None


async def test_no_secret_comes_back_out(
    tmp_path: Path,
    world: World,
    secret_values: Secrets,
    session: aiohttp.ClientSession,
) -> None:
    s = secret_values
    log_file = tmp_path / "runbookd.log"
    env = environment(s)
    config = good_config(tmp_path, world, s)
    config_file = tmp_path / "runbookd.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    outputs: dict[str, bytes] = {}

    code, outputs["check-config (valid)"] = await runbookd(env, "check-config", str(config_file))
    assert code == 0, outputs["check-config (valid)"].decode()

    with log_file.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            "--config",
            str(config_file),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    try:
        api = await run_the_incident(proc, world, s, session, log_file, config_file)
        outputs.update(api.answers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, log_file.read_text()

    # The secrets did reach where they belong: the test is not vacuous.
    assert {e["routing_key"] for e in world.pagerduty.events} == {s.pagerduty_routing_key}
    assert world.page_actions()[0] == "trigger"
    assert world.page_actions()[-1] == "resolve"
    assert len(world.slack.messages) == 2
    sent = {path: headers for path, headers in world.deploy_calls}
    assert sent["/rollback"]["Authorization"] == f"Bearer {s.http_bearer_token}"
    assert sent["/purge"]["X-Api-Key"] == s.cdn_api_key
    assert world.s3_calls
    assert f"Credential={s.s3_access_key_id}/" in world.s3_calls[0]["Authorization"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_config(config, s), sort_keys=False))
    broken = tmp_path / "broken.yaml"
    broken.write_text(YAML_ERROR.format(key=s.pagerduty_routing_key))
    commands = {  # name: (argv, the exit code expected)
        "check-config (invalid)": (["check-config", str(bad)], 2),
        "check-config (YAML error)": (["check-config", str(broken)], 2),
        "once": (["once", "--config", str(config_file)], 1),  # db, cache, backups are not OK
    }
    # At once: each is a fresh interpreter that takes seconds to import everything.
    ran = await asyncio.gather(*(runbookd(env, *argv) for argv, _ in commands.values()))
    for (name, (_, expected)), (code, output) in zip(commands.items(), ran, strict=True):
        outputs[name] = output
        assert code == expected, f"{name}: {output.decode()}"

    outputs["daemon log"] = log_file.read_bytes()
    state = tmp_path / "state"
    for path in sorted(state.rglob("*")):
        if path.is_file():
            outputs[f"state file {path.relative_to(tmp_path)}"] = path.read_bytes()
    assert any("runbookd.db" in where for where in outputs)

    leaks = find_leaks(s.named(), outputs)
    assert not leaks, "secrets leak:\n" + "\n".join(map(str, leaks))


async def run_the_incident(
    proc: asyncio.subprocess.Process,
    world: World,
    s: Secrets,
    session: aiohttp.ClientSession,
    log: Path,
    config_file: Path,
) -> Api:
    """Start, incident, approvals and silences through the API, a refused reload, SIGTERM."""
    started = await wait_for_line(log, '"event": "started"')
    port = int(started["listen"].rsplit(":", 1)[1])
    api = Api(session, f"http://127.0.0.1:{port}", s.api_write_token if API_TOKENS else None)

    async def until(predicate: Callable[[], object], within: float = 15.0) -> None:
        assert proc.returncode is None, log.read_text()
        await wait_for(predicate, within)

    # Not waiting for /readyz: a race in the scheduler's first round can keep it at 503 (see
    # the report); the approval below shows the checks and rules are running.
    await api.call("GET", "/readyz")

    # The database "is down" from the start: its rule waits for an operator.
    deadline = time.monotonic() + 30
    while not (approvals := (await api.call("GET", "/api/v1/approvals"))[1]["approvals"]):
        assert time.monotonic() < deadline, f"no approval asked; log:\n{log.read_text()}"
        await asyncio.sleep(0.05)
    (waiting,) = approvals
    await api.call(
        "POST",
        f"/api/v1/incidents/{waiting['incident']}/reject",
        json={"by": "ana", "reason": "the replica is behind"},
    )
    await api.call(
        "POST",
        "/api/v1/silences",
        json={"created_by": "ana", "comment": "db migration", "rule": "db_down", "duration": "1h"},
    )

    world.state["up"] = False
    await until(lambda: any(path == "/purge" for path, _ in world.deploy_calls))
    world.state["up"] = True
    await until(lambda: "resolve" in world.page_actions() and len(world.slack.messages) == 2)

    status, listed = await api.call("GET", "/api/v1/incidents")
    assert status == 200
    for incident in listed["incidents"]:
        await api.call("GET", f"/api/v1/incidents/{incident['id']}")
    for path in (
        "/healthz",
        "/metrics",
        "/api/v1/incidents?status=open",
        "/api/v1/rules",
        "/api/v1/approvals",
        "/api/v1/silences?expired=true",
        "/api/v1/incidents/nope",
    ):
        await api.call("GET", path)
    if find_spec("daemon.api.routes") is not None:
        from daemon.api import routes

        await api.call("GET", routes.PATH)
    if API_TOKENS:
        # Refusals: no token, a wrong one, one of too small a scope.
        await api.call("GET", "/api/v1/rules", headers={})
        await api.call("GET", "/api/v1/rules", headers={"Authorization": "Bearer not-a-token"})
        read_only = {"Authorization": f"Bearer {s.api_read_token}"}
        await api.call("POST", "/api/v1/rules/down/reset", headers=read_only)

    # A reload with bad values next to the secrets is refused, and says why in the log.
    good = config_file.read_text()
    config_file.write_text(yaml.safe_dump(bad_config(yaml.safe_load(good), s), sort_keys=False))
    proc.send_signal(signal.SIGHUP)
    await wait_for_line(log, "reload refused")
    config_file.write_text(good)

    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)
    return api
