"""Two `runbookd run` processes on one PostgreSQL database: the first leads; `kill -9` it and
the second takes over once the lease expires, then acts on what arrives. Measures the time
from the kill to the new leader's readiness as leader."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_alerts import alert, webhook
from tests.pg import module_database
from tests.replicas import TTL, replicas, role, roles, write_replica

REST = """
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


async def test_kill_9_of_the_leader_hands_over_within_the_lease(tmp_path: Path, dsn: str) -> None:
    runs = tmp_path / "runs.log"
    files = [write_replica(tmp_path / n, dsn, REST, name=n, runs=runs) for n in "ab"]
    async with aiohttp.ClientSession() as session:
        with replicas(files) as (leader, standby):
            assert await roles(session, [leader, standby]) == ["leader", "standby"]
            leader.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            leader.proc.wait(timeout=10)
            deadline = killed + TTL + 5
            while await role(session, standby) != "leader":
                assert time.monotonic() < deadline, "no takeover within the lease and 5 s"
                await asyncio.sleep(0.05)  # real processes on the system clock: poll, bounded
            took = time.monotonic() - killed
            assert took <= TTL + 2, f"took over after {took:.2f}s"
            url = f"{standby.url}/api/v1/alerts"
            async with session.post(url, json=webhook(alert())) as r:
                assert r.status == 200
            deadline = time.monotonic() + 10
            while not (runs.exists() and runs.read_text().strip()):
                assert time.monotonic() < deadline, "the new leader did not act"
                await asyncio.sleep(0.05)
    assert len(runs.read_text().split()) == 1  # one action, by the new leader
    print(f"failover: {took:.2f}s from kill -9 to the standby leading (lease {TTL:g}s)")
