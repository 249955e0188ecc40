"""The `system` check, measuring this machine with the real psutil."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pydantic
import pytest

from checks.base import CHECKS, CheckContext
from checks.system import SystemCheck, SystemCheckConfig, disk_key
from daemon.core.clock import ManualClock
from daemon.core.models import Status


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(**fields: Any) -> SystemCheck:
    return SystemCheck("host", SystemCheckConfig.model_validate({"type": "system", **fields}))


def burn_cpu(seconds: float = 0.05) -> None:
    """Real work, so the CPU counters move between two runs (they tick every 10 ms)."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(1000))


async def test_first_run_has_no_cpu_and_the_second_has(ctx: CheckContext) -> None:
    check = make()

    first = await check.run(ctx)
    burn_cpu()
    second = await check.run(ctx)

    assert first.status is Status.OK
    assert "cpu_percent" not in first.values  # nothing to compare with yet: no fake 0
    assert first.reason == "cpu_percent needs a previous run"
    assert first.needs_previous  # `runbookd once` runs it again
    assert (second.status, second.reason, second.needs_previous) == (Status.OK, "", False)
    assert 0.0 < second.values["cpu_percent"] <= 100.0


async def test_host_values_in_range(ctx: CheckContext) -> None:
    values = (await make().run(ctx)).values

    assert 0.0 < values["memory_percent"] < 100.0
    cores = os.cpu_count() or 1
    for minutes, load in zip((1, 5, 15), os.getloadavg(), strict=True):
        assert values[f"load_per_core_{minutes}"] == pytest.approx(load / cores, abs=0.5)
    if psutil.swap_memory().total:
        assert 0.0 <= values["swap_percent"] <= 100.0
    else:
        assert "swap_percent" not in values  # no swap: nothing to report, not 0%


async def test_disks(ctx: CheckContext, tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    result = await make(disks=["/", str(tmp_path), str(missing)]).run(ctx)

    assert result.status is Status.OK  # a missing path is a note, not a failure
    assert result.reason.endswith(f"disk {missing}: not found")
    stat = os.statvfs("/")
    assert 0.0 < result.values["disk_used_percent_root"] < 100.0
    free = stat.f_bavail * stat.f_frsize
    assert result.values["disk_free_bytes_root"] == pytest.approx(free, rel=0.01)
    assert f"disk_free_bytes_{disk_key(str(tmp_path))}" in result.values
    assert f"disk_used_percent_{disk_key(str(missing))}" not in result.values


async def test_a_filesystem_without_size_has_no_usage(ctx: CheckContext) -> None:
    # /proc reports no blocks at all: psutil says 0% used and 0 bytes free, which is no
    # measurement of any disk.
    result = await make(disks=["/", "/proc"]).run(ctx)

    assert result.status is Status.OK
    assert result.reason.endswith("disk /proc: reports no size")
    assert "disk_used_percent_proc" not in result.values
    assert "disk_free_bytes_proc" not in result.values
    assert "disk_used_percent_root" in result.values


def test_disk_value_names() -> None:
    assert disk_key("/") == "root"
    assert disk_key("/var/lib/postgresql") == "var_lib_postgresql"
    assert disk_key("/srv/Data-1/") == "srv_data_1"


async def test_processes_matched_by_name(ctx: CheckContext) -> None:
    check = make(processes={"py": "python", "none": "no-such-process-name-here"})

    first = await check.run(ctx)
    burn_cpu()
    second = await check.run(ctx)

    # This very test runs in python.
    assert first.values["process_count_py"] >= 1
    assert first.values["process_rss_bytes_py"] > psutil.Process().memory_info().rss / 2
    assert "process_cpu_percent_py" not in first.values  # first sight: no interval yet
    assert second.values["process_cpu_percent_py"] > 0.0  # we just burned some
    assert {k: v for k, v in second.values.items() if k.endswith("_none")} == {
        "process_count_none": 0.0,
        "process_rss_bytes_none": 0.0,
        "process_cpu_percent_none": 0.0,
    }


async def test_value_names_are_the_values_produced(ctx: CheckContext, tmp_path: Path) -> None:
    check = make(disks=["/", str(tmp_path)], processes={"py": "python"})
    names = check.config.value_names()

    await check.run(ctx)
    burn_cpu()
    values = (await check.run(ctx)).values

    assert set(values) <= names
    assert names - set(values) <= {"swap_percent"}  # only when this host has no swap


async def test_psutil_runs_off_the_event_loop(
    ctx: CheckContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocked statfs (a hung NFS mount) stalls a worker thread, never the loop; the next
    run then says so instead of queueing another thread behind it."""
    entered, release = threading.Event(), threading.Event()
    real_disk_usage = psutil.disk_usage

    def stuck_disk_usage(path: str) -> Any:
        entered.set()
        release.wait(10)
        return real_disk_usage(path)

    monkeypatch.setattr(psutil, "disk_usage", stuck_disk_usage)
    check = make()
    first = asyncio.create_task(check.run(ctx))
    try:
        # The loop is free while the first run is stuck: this await completes.
        assert await asyncio.to_thread(entered.wait, 10)
        second = await check.run(ctx)
        assert (second.status, second.reason) == (
            Status.UNKNOWN,
            "previous measurement still running (a hung mount?)",
        )
    finally:
        release.set()
    assert (await first).status is Status.OK
    assert (await check.run(ctx)).status is Status.OK


async def test_psutil_failure_is_unknown(
    ctx: CheckContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise psutil.AccessDenied(pid=None, msg="/proc is hidden")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    result = await make().run(ctx)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("psutil failed: ")
    assert "/proc is hidden" in result.reason


def test_registered_and_value_names() -> None:
    assert CHECKS.get("system") is SystemCheck
    config = SystemCheckConfig.model_validate(
        {"type": "system", "disks": ["/", "/var/lib/postgresql"], "processes": {"node": "node"}}
    )
    assert config.value_names() == {
        "cpu_percent",
        "memory_percent",
        "swap_percent",
        "load_per_core_1",
        "load_per_core_5",
        "load_per_core_15",
        "disk_used_percent_root",
        "disk_free_bytes_root",
        "disk_used_percent_var_lib_postgresql",
        "disk_free_bytes_var_lib_postgresql",
        "process_count_node",
        "process_cpu_percent_node",
        "process_rss_bytes_node",
    }
    assert SystemCheckConfig.model_validate({"type": "system"}).disks == ("/",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"disks": ["var/lib"]}, "not an absolute path"),
        ({"disks": ["/var/lib", "/var/lib/"]}, "give the same value names"),
        ({"processes": {"node js": "node"}}, "should match pattern"),
        ({"processes": {"node": ""}}, "at least 1 character"),
        ({"cpu": True}, "Extra inputs"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SystemCheckConfig.model_validate({"type": "system", **fields})
