"""Two `runbookd run` processes on one PostgreSQL database: the first leads; `kill -9` it and
the second takes over once the lease expires, then acts on what arrives. Measures the time
from the kill to the new leader's readiness as leader."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_alerts import alert, webhook
from tests.paths import ROOT
from tests.pg import module_database
from tests.utils import free_port, read_until

TTL = 2.0
CONFIG = """
runbookd:
  listen: 127.0.0.1:{port}
  state_dir: {state}
  store: {{type: postgres, dsn_file: {dsn_file}, lease_ttl: {ttl}s}}
rules:
  errors:
    when: {{alert: HighErrorRate, labels: {{service: web}}}}
    do: [note]
remediations:
  note:
    type: command
    argv: [sh, -c, 'echo "$RUNBOOKD_INCIDENT_ID" >> {runs}']
"""


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with module_database() as found:
        yield found


@contextmanager
def replica(config: Path) -> Iterator[subprocess.Popen[str]]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as proc:
        try:
            read_until(proc, '"event": "started"')
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=15)


def write(directory: Path, dsn: str, port: int, runs: Path) -> Path:
    directory.mkdir()
    (directory / "dsn").write_text(dsn + "\n")
    path = directory / "runbookd.yaml"
    path.write_text(
        CONFIG.format(
            port=port, state=directory / "state", dsn_file=directory / "dsn", ttl=TTL, runs=runs
        )
    )
    return path


async def role(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
        body = await r.json()
        return str(body["role"])


async def test_kill_9_of_the_leader_hands_over_within_the_lease(tmp_path: Path, dsn: str) -> None:
    runs = tmp_path / "runs.log"
    a_port, b_port = free_port(), free_port()
    a = write(tmp_path / "a", dsn, a_port, runs)
    b = write(tmp_path / "b", dsn, b_port, runs)
    async with aiohttp.ClientSession() as session:
        with replica(a) as leader, replica(b):
            assert (await role(session, a_port), await role(session, b_port)) == (
                "leader",
                "standby",
            )
            leader.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            leader.wait(timeout=10)
            deadline = killed + TTL + 5
            while await role(session, b_port) != "leader":
                assert time.monotonic() < deadline, "no takeover within the lease and 5 s"
                await asyncio.sleep(0.05)  # real processes on the system clock: poll, bounded
            took = time.monotonic() - killed
            assert took <= TTL + 2, f"took over after {took:.2f}s"
            url = f"http://127.0.0.1:{b_port}/api/v1/alerts"
            async with session.post(url, json=webhook(alert())) as r:
                assert r.status == 200
            deadline = time.monotonic() + 10
            while not (runs.exists() and runs.read_text().strip()):
                assert time.monotonic() < deadline, "the new leader did not act"
                await asyncio.sleep(0.05)
    assert len(runs.read_text().split()) == 1  # one action, by the new leader
    print(f"failover: {took:.2f}s from kill -9 to the standby leading (lease {TTL:g}s)")
