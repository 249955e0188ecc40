"""The `system` check, measuring this machine with the real psutil."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from checks.base import CheckContext
from checks.system import SystemCheck, SystemCheckConfig
from daemon.core.clock import ManualClock


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(**fields: Any) -> SystemCheck:
    return SystemCheck("host", SystemCheckConfig.model_validate({"type": "system", **fields}))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process to match by its unusual argument."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "runbookd-sleeper-314159"]
    proc = subprocess.Popen(argv)
    yield proc
    proc.kill()
    proc.wait(5)


async def test_a_process_we_may_not_read_leaves_its_totals_out(
    ctx: CheckContext, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    # (The tests run as root, who may read every process: the refusal is simulated.)
    real_cpu_percent = psutil.Process.cpu_percent

    def cpu_percent(self: psutil.Process, interval: float | None = None) -> float:
        if self.pid == sleeper.pid:
            raise psutil.AccessDenied(pid=self.pid)
        return real_cpu_percent(self, interval)

    monkeypatch.setattr(psutil.Process, "cpu_percent", cpu_percent)
    check = make(processes={"sleeper": "runbookd-sleeper-314159"})
    await check.run(ctx)
    values = (await check.run(ctx)).values

    assert values["process_count_sleeper"] == 1.0  # it is there
    # Its memory and CPU are not known: no sum of 0 bytes, not now nor on later runs.
    assert "process_rss_bytes_sleeper" not in values
    assert "process_cpu_percent_sleeper" not in values
