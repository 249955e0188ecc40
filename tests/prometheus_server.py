"""A real Prometheus on loopback for integration tests, scraping targets the test serves.

    async with prometheus_server(tmp_dir, ["127.0.0.1:8123"]) as prom:
        ...  # prom.url answers queries; every target has been scraped at least once

Prometheus sends its first scrape about 5 s after start (its discovery manager batches
updates that long), so start one per module, not per test. Tests skip when the binary is
missing (`require_prometheus`).

With `rules` (alerting rule dicts, evaluated every second) and `alertmanagers` (host:port),
it also yields only once the rules are loaded and every Alertmanager is active: Prometheus
drops alerts it has nowhere to send, and finds its Alertmanagers after the same ~5 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.services import missing
from tests.utils import free_port, stop_process

BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
JOB = "app"

# The one user of `basic_auth=True`. Prometheus wants a bcrypt hash and neither Python's
# stdlib nor our dependencies make one, so it is made once (cost 4, to stay fast) and kept:
#   python3 -c "import crypt; print(crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH,
#   rounds=16)))"
USERNAME = "runbookd"
PASSWORD = "correct-horse"
PASSWORD_BCRYPT = "$2b$04$sbNsgqKtKIuUsJL8WtZTOu/MR05Nrim8fxM1.vGKR0x1AONyUggS2"


def basic_authorization(username: str, password: str) -> str:
    """The Authorization header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def require_prometheus() -> None:
    if not Path(BINARY).is_file():
        missing(f"Prometheus is not installed ({BINARY}); `make test` installs it")


@dataclass(frozen=True, slots=True)
class PrometheusServer:
    url: str
    # The Authorization header value when started with basic_auth=True.
    authorization: str | None
    log: Path


def _write_config(
    directory: Path,
    targets: Sequence[str],
    path: str,
    basic_auth: bool,
    rules: Sequence[Mapping[str, Any]] = (),
    alertmanagers: Sequence[str] = (),
) -> None:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": path, "static_configs": [{"targets": list(targets)}]}
        ],
    }
    if rules:
        groups = {"groups": [{"name": "tests", "interval": "1s", "rules": list(rules)}]}
        (directory / "rules.yml").write_text(yaml.safe_dump(groups), encoding="utf-8")
        config["rule_files"] = [str(directory / "rules.yml")]
    if alertmanagers:
        static = [{"targets": list(alertmanagers)}]
        config["alerting"] = {"alertmanagers": [{"api_version": "v2", "static_configs": static}]}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    if basic_auth:
        web = {"basic_auth_users": {USERNAME: PASSWORD_BCRYPT}}
        (directory / "web.yml").write_text(yaml.safe_dump(web), encoding="utf-8")


def _argv(directory: Path, port: int, basic_auth: bool) -> list[str]:
    argv = [
        BINARY,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        "--storage.tsdb.retention.time=1h",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if basic_auth:
        argv.append(f"--web.config.file={directory / 'web.yml'}")
    return argv


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _alerting_ready(
    session: aiohttp.ClientSession,
    server: PrometheusServer,
    headers: dict[str, str] | None,
    rules: int,
    alertmanagers: Sequence[str],
) -> bool:
    """Whether `rules` alerting rules are loaded and every Alertmanager is active."""
    api = f"{server.url}/api/v1"
    if rules:
        async with session.get(f"{api}/rules", params={"type": "alert"}, headers=headers) as r:
            groups = (await r.json())["data"]["groups"]
        if sum(len(g["rules"]) for g in groups) != rules:
            return False
    if alertmanagers:
        async with session.get(f"{api}/alertmanagers", headers=headers) as r:
            active = [m["url"] for m in (await r.json())["data"]["activeAlertmanagers"]]
        if not all(any(f"//{a}/" in url for url in active) for a in alertmanagers):
            return False
    return True


async def _wait_ready(
    session: aiohttp.ClientSession,
    proc: asyncio.subprocess.Process,
    server: PrometheusServer,
    expected_targets: int,
    rules: int = 0,
    alertmanagers: Sequence[str] = (),
) -> None:
    """Until /-/ready says 200, `up` is 1 for every target, the rules are loaded and the
    Alertmanagers active; raises if Prometheus exits."""
    headers = {"Authorization": server.authorization} if server.authorization else None
    ready = False
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{_tail(server.log)}")
        with contextlib.suppress(aiohttp.ClientError):
            if not ready:
                async with session.get(f"{server.url}/-/ready", headers=headers) as resp:
                    ready = resp.status == 200
            if ready:
                query = {"query": f'up{{job="{JOB}"}} == 1'}
                url = f"{server.url}/api/v1/query"
                async with session.get(url, params=query, headers=headers) as resp:
                    doc = await resp.json()
                if len(doc["data"]["result"]) == expected_targets and await _alerting_ready(
                    session, server, headers, rules, alertmanagers
                ):
                    return
        await asyncio.sleep(0.1)  # polling a real process coming up, not letting time pass


@contextlib.asynccontextmanager
async def prometheus_server(
    directory: Path,
    targets: Sequence[str],
    *,
    metrics_path: str = "/metrics",
    basic_auth: bool = False,
    rules: Sequence[Mapping[str, Any]] = (),
    alertmanagers: Sequence[str] = (),
    ready_timeout: float = 20.0,
) -> AsyncIterator[PrometheusServer]:
    """Run Prometheus with its config and data in `directory`, scraping `targets` (host:port)
    every second, evaluating the alerting `rules` (dicts: alert, expr, for, labels,
    annotations) every second and sending to `alertmanagers` (host:port); yields once each
    target has been scraped successfully and the alerting is in place."""
    require_prometheus()
    _write_config(directory, targets, metrics_path, basic_auth, rules, alertmanagers)
    port = free_port()
    authorization = None
    if basic_auth:
        authorization = basic_authorization(USERNAME, PASSWORD)
    server = PrometheusServer(f"http://127.0.0.1:{port}", authorization, directory / "log")
    with server.log.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *_argv(directory, port, basic_auth),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            async with aiohttp.ClientSession() as session:
                try:
                    async with asyncio.timeout(ready_timeout):
                        await _wait_ready(
                            session, proc, server, len(targets), len(rules), alertmanagers
                        )
                except TimeoutError:
                    message = f"prometheus not ready in {ready_timeout:g}s:\n{_tail(server.log)}"
                    raise RuntimeError(message) from None
            yield server
        finally:
            await stop_process(proc)


async def alert_states(
    session: aiohttp.ClientSession, server: PrometheusServer, alertname: str
) -> list[str]:
    """The states ("pending", "firing") of the active alerts named `alertname`."""
    headers = {"Authorization": server.authorization} if server.authorization else None
    async with session.get(f"{server.url}/api/v1/alerts", headers=headers) as resp:
        doc = await resp.json()
    return [a["state"] for a in doc["data"]["alerts"] if a["labels"]["alertname"] == alertname]
