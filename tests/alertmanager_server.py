"""A real Alertmanager on loopback for integration tests, posting to a webhook the test names.

    async with alertmanager_server(webhook_url, bearer_token=token) as am:
        ...  # Prometheus sends to am.address; Alertmanager posts each notification to
        # webhook_url with `Authorization: Bearer <token>`, resolutions included

It runs in a fresh temporary directory (config, storage, log) removed once the process has
stopped, with clustering off (`--cluster.listen-address=`): no gossip port, no waiting for
peers before the first notification. Tests skip when the binary is missing
(`require_alertmanager`). tests/prometheus_server.py starts a Prometheus that alerts to it
(`rules=`, `alertmanagers=[am.address]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.services import missing
from tests.utils import free_port, stop_process

BINARY = (
    shutil.which("prometheus-alertmanager")  # Debian's name
    or shutil.which("alertmanager")
    or "/usr/bin/prometheus-alertmanager"
)
RECEIVER = "webhook"


def require_alertmanager() -> None:
    if not Path(BINARY).is_file():
        missing(f"Alertmanager is not installed ({BINARY}); `make test` installs it")


@dataclass(frozen=True, slots=True)
class AlertmanagerServer:
    url: str
    # host:port, as Prometheus's alerting config wants it.
    address: str
    log: Path


def alertmanager_config(
    webhook_url: str | Sequence[str],
    *,
    bearer_token: str | None,
    group_wait: str,
    group_interval: str,
    repeat_interval: str,
    max_alerts: int = 0,
) -> dict[str, Any]:
    """Every alert, grouped by name, to one webhook receiver; resolutions are sent too.
    Several URLs (replicas of one runbookd) make one webhook_config each: Alertmanager sends
    every notification to each, and retries each on its own.
    `max_alerts` > 0 caps the alerts of one notification (the rest are `truncatedAlerts`)."""
    urls = [webhook_url] if isinstance(webhook_url, str) else list(webhook_url)
    webhooks: list[dict[str, Any]] = []
    for url in urls:
        webhook: dict[str, Any] = {"url": url, "send_resolved": True}
        if max_alerts:
            webhook["max_alerts"] = max_alerts
        if bearer_token is not None:
            credentials = {"type": "Bearer", "credentials": bearer_token}
            webhook["http_config"] = {"authorization": credentials}
        webhooks.append(webhook)
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": RECEIVER, "webhook_configs": webhooks}],
    }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _wait_ready(proc: asyncio.subprocess.Process, server: AlertmanagerServer) -> None:
    """Until /-/ready says 200; raises if Alertmanager exits."""
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(
                    f"alertmanager exited with {proc.returncode}:\n{_tail(server.log)}"
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{server.url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)  # polling a real process coming up, not letting time pass


@contextlib.asynccontextmanager
async def alertmanager_server(
    webhook_url: str | Sequence[str],
    *,
    bearer_token: str | None = None,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1m",
    max_alerts: int = 0,
    ready_timeout: float = 20.0,
) -> AsyncIterator[AlertmanagerServer]:
    """Run Alertmanager sending every alert to `webhook_url`, or to each of several (with
    `bearer_token`, if given);
    yields once it answers /-/ready, stops it (by its PID) and removes its directory after."""
    require_alertmanager()
    config = alertmanager_config(
        webhook_url,
        bearer_token=bearer_token,
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
        max_alerts=max_alerts,
    )
    with tempfile.TemporaryDirectory(prefix="runbookd-alertmanager-") as tmp:
        directory = Path(tmp)
        config_file = directory / "alertmanager.yml"
        config_file.touch(mode=0o600)  # it holds the bearer token
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        address = f"127.0.0.1:{port}"
        server = AlertmanagerServer(f"http://{address}", address, directory / "log")
        argv = [
            BINARY,
            f"--config.file={config_file}",
            f"--storage.path={directory / 'data'}",
            f"--web.listen-address={address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with server.log.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            try:
                async with asyncio.timeout(ready_timeout):
                    await _wait_ready(proc, server)
            except TimeoutError:
                message = f"alertmanager not ready in {ready_timeout:g}s:\n{_tail(server.log)}"
                raise RuntimeError(message) from None
            yield server
        finally:
            await stop_process(proc)


async def metric_sum(
    session: aiohttp.ClientSession, url: str, sample: str, labels: Mapping[str, str]
) -> float:
    """The sum of the samples named `sample` (e.g. `..._total`) whose labels include `labels`,
    on the /metrics page of the server at `url`."""
    async with session.get(f"{url}/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


async def webhook_notifications(
    session: aiohttp.ClientSession, server: AlertmanagerServer
) -> tuple[float, float]:
    """How many webhook notifications Alertmanager has sent, and how many of them failed."""
    webhook = {"integration": "webhook"}
    sent = await metric_sum(session, server.url, "alertmanager_notifications_total", webhook)
    failed = await metric_sum(
        session, server.url, "alertmanager_notifications_failed_total", webhook
    )
    return sent, failed


async def post_alerts(
    session: aiohttp.ClientSession, server: AlertmanagerServer, alerts: list[dict[str, Any]]
) -> None:
    """Send alerts as Prometheus does, to Alertmanager's v2 API."""
    async with session.post(f"{server.url}/api/v2/alerts", json=alerts) as resp:
        resp.raise_for_status()
