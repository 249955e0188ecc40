"""The `nagios` check, running real plugin scripts (tests/plugins) and Debian's own plugins."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from checks.base import CheckContext, CheckResult
from checks.nagios import (
    NagiosCheck,
    NagiosCheckConfig,
)
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.paths import PLUGINS
from tests.services import in_ci

DEBIAN = Path("/usr/lib/nagios/plugins")
MB = 1024.0 * 1024.0


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(argv: list[str], **fields: Any) -> NagiosCheck:
    config = NagiosCheckConfig.model_validate({"type": "nagios", "argv": argv, **fields})
    return NagiosCheck("plugin", config)


async def run(ctx: CheckContext, script: str, *args: str, **fields: Any) -> CheckResult:
    return await make([str(PLUGINS / script), *args], **fields).run(ctx)


# --- the check, with plugin scripts ------------------------------------------------------


async def test_ok_plugin(ctx: CheckContext) -> None:
    result = await run(ctx, "check_ok.sh")
    assert result.status is Status.OK
    assert result.reason == "OK - all good"
    assert result.values == {
        "time": pytest.approx(0.012),
        "size": 2 * MB,
        "load": 0.5,
        "plugin_exit_code": 0.0,
    }


@pytest.mark.parametrize(
    ("script", "status", "reason", "values"),
    [
        ("check_warning.sh", Status.WARN, "WARNING - queue is long", {"queue": 120.0}),
        ("check_critical.sh", Status.CRITICAL, "CRITICAL - replica lag 95s", {"lag": 95.0}),
        ("check_unknown.sh", Status.UNKNOWN, "UNKNOWN - cannot reach the database", {}),
    ],
)
async def test_exit_status_is_the_verdict(
    ctx: CheckContext, script: str, status: Status, reason: str, values: dict[str, float]
) -> None:
    result = await run(ctx, script)
    assert (result.status, result.reason) == (status, reason)
    assert result.values == {**values, "plugin_exit_code": float(status)}


async def test_exit_code_outside_the_api_is_unknown(ctx: CheckContext) -> None:
    result = await run(ctx, "check_exit7.sh")
    assert result.status is Status.UNKNOWN
    assert result.reason == "check_exit7.sh exited with status 7: something odd"
    assert result.values == {"odd": 1.0, "plugin_exit_code": 7.0}


async def test_timeout_is_unknown(ctx: CheckContext) -> None:
    # The plugin gets SIGTERM a little before the check's timeout: 0.3s - 10%.
    result = await run(ctx, "check_slow.sh", timeout="300ms")
    assert (result.status, result.reason) == (Status.UNKNOWN, "check_slow.sh timed out after 0.27s")
    assert result.values == {}


async def test_missing_and_not_executable(ctx: CheckContext, tmp_path: Path) -> None:
    missing = await make([str(tmp_path / "check_nothing")]).run(ctx)
    assert (missing.status, missing.reason) == (
        Status.UNKNOWN,
        f"executable not found: {tmp_path / 'check_nothing'}",
    )
    plain = tmp_path / "check_plain.sh"
    plain.write_text("#!/bin/sh\necho OK\n")
    plain.chmod(0o644)
    denied = await make([str(plain)]).run(ctx)
    assert (denied.status, denied.reason) == (Status.UNKNOWN, f"permission denied running {plain}")


async def test_malformed_perfdata_does_not_fail_the_check(ctx: CheckContext) -> None:
    result = await run(ctx, "check_malformed.sh")
    assert result.status is Status.OK
    assert result.reason == (
        "OK - some perfdata is broken; skipped malformed perfdata: bad=abc, ;;;, 'unclosed=2"
    )
    assert result.values == {"good": 1.0, "also_good": 2.5, "plugin_exit_code": 0.0}


async def test_long_output_perfdata_on_later_lines(ctx: CheckContext) -> None:
    result = await run(ctx, "check_long.sh")
    assert result.status is Status.OK
    assert result.reason == "DISK OK - free space: / 3326 MB (56%);"
    assert result.values == {
        "_": 2643 * MB,
        "_boot": 68 * MB,
        "_home": 69357 * MB,
        "_var_log": 818 * MB,
        "plugin_exit_code": 0.0,
    }


async def test_arguments_and_duplicate_labels(ctx: CheckContext) -> None:
    code = "print('OK - args ' + ' '.join(__import__('sys').argv[1:]) + ' | a=1 A=2 b=3')"
    result = await make([sys.executable, "-c", code, "$(id)", "; rm -rf /"]).run(ctx)
    assert result.status is Status.OK
    # The arguments reach the plugin verbatim: no shell ever sees them.
    assert result.reason == "OK - args $(id) ; rm -rf /; skipped malformed perfdata: A (duplicate)"
    assert result.values == {"a": 1.0, "b": 3.0, "plugin_exit_code": 0.0}


async def test_environment(ctx: CheckContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_API_TOKEN", "daemon-secret")
    result = await run(ctx, "check_env.sh", env={"GREETING": "hello"})
    assert result.reason == "OK - greeting=hello token=unset numeric=C"


async def test_stderr_only(ctx: CheckContext) -> None:
    result = await run(ctx, "check_stderr.sh")
    assert result.status is Status.UNKNOWN
    assert result.reason == "(no output on stdout) stderr: usage: check_stderr.sh -H host"


async def test_long_output_is_bounded_and_a_cut_item_dropped(ctx: CheckContext) -> None:
    # 10,000 items exceed the 8 KiB kept; the one cut in two must not become a wrong value.
    code = "print('OK - many | ' + ' '.join(f'v{i}=12345' for i in range(10000)))"
    result = await make([sys.executable, "-c", code]).run(ctx)
    assert result.status is Status.OK
    assert result.reason == "OK - many; output beyond 8 KiB ignored"
    perf = {k: v for k, v in result.values.items() if k != "plugin_exit_code"}
    assert 600 < len(perf) < 1000
    assert set(perf.values()) == {12345.0}


# --- Debian's monitoring-plugins, where installed ------------------------------------------

# Under CI=true they run whatever: `make test` installs the plugins, and a missing one fails.
needs_debian_plugins = pytest.mark.skipif(
    not (DEBIAN / "check_dummy").exists() and not in_ci(),
    reason="monitoring-plugins-basic not installed",
)


@needs_debian_plugins
@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("0", Status.OK, "OK: all fine"),
        ("1", Status.WARN, "WARNING: all fine"),
        ("2", Status.CRITICAL, "CRITICAL: all fine"),
        ("3", Status.UNKNOWN, "UNKNOWN: all fine"),
    ],
)
async def test_check_dummy(ctx: CheckContext, code: str, status: Status, reason: str) -> None:
    result = await make([str(DEBIAN / "check_dummy"), code, "all fine"]).run(ctx)
    assert (result.status, result.reason) == (status, reason)
    assert result.values == {"plugin_exit_code": float(status)}


@needs_debian_plugins
async def test_check_disk_perfdata_in_bytes(ctx: CheckContext) -> None:
    result = await make([str(DEBIAN / "check_disk"), "-w", "1%", "-c", "1", "-p", "/"]).run(ctx)
    assert result.status in (Status.OK, Status.WARN, Status.CRITICAL)
    assert result.reason.startswith("DISK ")
    stat = os.statvfs("/")
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    # The label "/" becomes the value "_"; MB or B, the value is bytes.
    assert result.values["_"] == pytest.approx(used, rel=0.01)


@needs_debian_plugins
async def test_check_load(ctx: CheckContext) -> None:
    argv = [str(DEBIAN / "check_load"), "-w", "1000,1000,1000", "-c", "2000,2000,2000"]
    result = await make(argv).run(ctx)
    assert result.status is Status.OK
    assert result.reason.startswith("LOAD OK - total load average: ")
    assert set(result.values) == {"load1", "load5", "load15", "plugin_exit_code"}
    assert result.values["load1"] == pytest.approx(os.getloadavg()[0], abs=1.0)
