"""systemd_restart and pm2_restart against tests/bin/systemctl and tests/bin/pm2: stand-ins
that check their argv, log each call and keep units and processes in a state file.

The stand-ins start with `#!/usr/bin/env python3`: the interpreter running the tests goes on
PATH right after tests/bin, so they run under the same Python as the tests. PATH is
inherited; where the stand-ins keep their log and state comes in through the config's `env:`,
as PM2_HOME does in a real deployment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemon.clients.processes import INHERITED_ENV
from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from tests.fakes import make_incident
from tests.fakes.service import pm2, systemd
from tests.fakes.standin import StandIn
from tests.paths import BIN


@pytest.fixture
def clock() -> ManualClock:
    # Waits between checks move the clock at once; the tests read clock.slept.
    return ManualClock(autojump=True)


def process(name: str = "api", pm_id: int = 0, **fields: Any) -> dict[str, Any]:
    return {"name": name, "pm_id": pm_id, **fields}


# --- systemd_restart -------------------------------------------------------------------------


async def test_systemd_restart_then_active(ctx: RemediationContext, standin: StandIn) -> None:
    standin.units(web={"states": ["active"]})

    result = await systemd(standin).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail == "restarted web.service; it is active"
    assert standin.argvs() == [
        ["systemctl", "restart", "web.service"],
        ["systemctl", "is-active", "web.service"],
    ]
    assert result.data["argv"] == ["systemctl", "restart", "web.service"]
    assert result.data["exit_code"] == 0
    assert result.data["check_argv"] == ["systemctl", "is-active", "web.service"]
    assert (result.data["state"], result.data["checks"]) == ("active", 1)
    assert standin.state()["systemd"]["system"]["web.service"]["restarts"] == 1


async def test_systemd_waits_while_activating(
    ctx: RemediationContext, standin: StandIn, clock: ManualClock
) -> None:
    standin.units(web={"on_restart": ["activating", "activating", "active"]})

    result = await systemd(standin, verify_interval="3s").execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["checks"] == 3
    assert clock.slept == [3.0, 3.0]


async def test_systemd_restart_ok_but_unit_failed(
    ctx: RemediationContext, standin: StandIn, clock: ManualClock
) -> None:
    standin.units(web={"on_restart": ["failed"]})

    result = await systemd(standin).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "restarted web.service, but it is failed (checked 5 times)"
    assert result.data["exit_code"] == 0  # the restart itself succeeded
    assert result.data["state"] == "failed"
    assert clock.slept == [2.0] * 4
    assert standin.argvs().count(["systemctl", "is-active", "web.service"]) == 5


async def test_systemd_restart_job_fails(ctx: RemediationContext, standin: StandIn) -> None:
    standin.units(web={"restart_fails": True})

    result = await systemd(standin).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == (
        "systemctl restart exited with status 1: Job for web.service failed because the "
        "control process exited with error code."
    )
    assert "journalctl -xeu web.service" in result.data["stderr"]
    assert standin.argvs() == [["systemctl", "restart", "web.service"]]


async def test_systemd_unknown_unit(ctx: RemediationContext, standin: StandIn) -> None:
    standin.units(web={})

    result = await systemd(standin, unit="nope").execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == (
        "systemctl restart exited with status 5: "
        "Failed to restart nope.service: Unit nope.service not found."
    )


async def test_systemd_user_manager(
    ctx: RemediationContext, standin: StandIn, tmp_path: Path
) -> None:
    # The user's bus is not the daemon's business: the config says where it is.
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    standin.units("user", web={})

    result = await systemd(standin, user=True, env=env).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert standin.argvs() == [
        ["systemctl", "--user", "restart", "web.service"],
        ["systemctl", "--user", "is-active", "web.service"],
    ]
    assert result.data["user"] is True


async def test_systemd_user_manager_without_a_session_bus(
    ctx: RemediationContext, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon running as a system service has no user bus: systemctl says so on stderr.
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    standin.units("user", web={})

    result = await systemd(standin, user=True).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail.startswith(
        "systemctl --user restart exited with status 1: Failed to connect to bus: "
    )
    assert "XDG_RUNTIME_DIR not defined" in result.data["stderr"]


async def test_systemd_missing_executable(ctx: RemediationContext, standin: StandIn) -> None:
    result = await systemd(standin, systemctl="systemctl-not-installed").execute(
        ctx, make_incident()
    )

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "executable not found: systemctl-not-installed"


async def test_systemd_hanging_restart_is_recoverable(
    ctx: RemediationContext, standin: StandIn
) -> None:
    standin.write({"systemd": {"system": {"web.service": {}}, "hang": ["restart"]}})

    result = await systemd(standin, timeout="500ms").execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail == "systemctl restart timed out after 0.5s"
    assert result.data["timed_out"] is True


async def test_systemd_hanging_check_counts_as_not_up(
    ctx: RemediationContext, standin: StandIn
) -> None:
    standin.write({"systemd": {"system": {"web.service": {}}, "hang": ["is-active"]}})

    result = await systemd(standin, timeout="300ms", verify_attempts=1).execute(
        ctx, make_incident()
    )

    assert not result.ok
    assert result.detail == (
        "restarted web.service, but it is unknown "
        "(systemctl is-active timed out after 0.3s) (checked once)"
    )


# --- pm2_restart -----------------------------------------------------------------------------


async def test_pm2_restart_then_online(ctx: RemediationContext, standin: StandIn) -> None:
    standin.processes(process(), process("worker", 1))

    result = await pm2(standin).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail == "restarted api; it is online"
    assert standin.argvs() == [["pm2", "restart", "api"], ["pm2", "jlist"]]
    assert result.data["argv"] == ["pm2", "restart", "api"]
    assert result.data["process"] == "api"
    processes = standin.state()["pm2"]["processes"]
    assert [p.get("restarts", 0) for p in processes] == [1, 0]


async def test_pm2_update_env_and_numeric_id(ctx: RemediationContext, standin: StandIn) -> None:
    standin.processes(process(), process("worker", 1, on_restart=["launching", "online"]))

    result = await pm2(standin, name=1, update_env=True).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert standin.argvs()[0] == ["pm2", "restart", "1", "--update-env"]
    assert result.data["checks"] == 2
    assert standin.state()["pm2"]["processes"][1]["env_updated"] is True


async def test_pm2_errored_after_restart(
    ctx: RemediationContext, standin: StandIn, clock: ManualClock
) -> None:
    standin.processes(process(on_restart=["launching", "errored"]))

    result = await pm2(standin, verify_attempts=3).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "restarted api, but it is errored (checked 3 times)"
    assert clock.slept == [2.0, 2.0]


async def test_pm2_cluster_needs_every_instance_online(
    ctx: RemediationContext, standin: StandIn
) -> None:
    standin.processes(process(), process(pm_id=1, on_restart=["errored"]))

    result = await pm2(standin, verify_attempts=1).execute(ctx, make_incident())

    assert not result.ok
    assert result.data["state"] == "errored, online"


async def test_pm2_unknown_process(ctx: RemediationContext, standin: StandIn) -> None:
    standin.processes(process("worker", 1))

    result = await pm2(standin).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == (
        "pm2 restart exited with status 1: [PM2][ERROR] Process or Namespace api not found"
    )


async def test_pm2_missing_executable(ctx: RemediationContext, standin: StandIn) -> None:
    result = await pm2(standin, pm2="pm2-not-installed").execute(ctx, make_incident())

    assert result.detail == "executable not found: pm2-not-installed"


async def test_pm2_hanging_restart_is_recoverable(
    ctx: RemediationContext, standin: StandIn
) -> None:
    standin.processes(process(), hang=["restart"])

    result = await pm2(standin, timeout="500ms").execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail == "pm2 restart timed out after 0.5s"


@pytest.mark.parametrize("tool", ["systemctl", "pm2"])
async def test_tools_get_their_env_and_never_the_daemons_environment(
    ctx: RemediationContext, standin: StandIn, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "the daemon's own")
    env = {"PM2_HOME": "/home/deploy/.pm2"}
    standin.write({"systemd": {"system": {"web.service": {}}}, "pm2": {"processes": [process()]}})
    remediation = systemd(standin, env=env) if tool == "systemctl" else pm2(standin, env=env)

    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    for call in standin.calls():  # the restart and the check
        seen = set(call["env"])
        assert "SECRET_TOKEN" not in seen
        assert {"PM2_HOME", "STANDIN_STATE", "PATH"} <= seen
        # Nothing but the minimal inherited set and what `env:` names.
        named = set(standin.env) | set(env)
        assert {name for name in seen if not name.startswith("LC_")} - named <= INHERITED_ENV


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("systemctl", ["frob", "web"], "Unknown command verb 'frob'."),
        ("systemctl", ["--now", "restart", "web"], "unrecognized option '--now'"),
        ("systemctl", ["restart"], "Too few arguments."),
        ("pm2", ["frob"], "Command not found"),
        ("pm2", ["restart"], "missing required argument"),
        ("pm2", ["restart", "api", "--update_env"], "unknown option '--update_env'"),
    ],
)
def test_standins_reject_bad_syntax(
    standin: StandIn, tool: str, args: list[str], message: str
) -> None:
    done = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, check=False)

    assert done.returncode == 2
    assert message in done.stderr
