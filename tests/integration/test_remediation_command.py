"""The `command` remediation, running real scripts (the remediation itself never uses a shell)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.command import OUTPUT_LIMIT, CommandConfig, CommandRemediation
from tests.fakes import make_incident


@pytest.fixture
def ctx(session: aiohttp.ClientSession) -> RemediationContext:
    return RemediationContext(session=session, clock=ManualClock(autojump=True))


def make(argv: list[str], **config: Any) -> CommandRemediation:
    model = CommandConfig.model_validate({"type": "command", "argv": argv, **config})
    return CommandRemediation("restart", model)


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def running(pid: int) -> bool:
    """False once `pid` is absent or a zombie nobody has reaped yet (procfs never blocks)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while running(pid):
        if loop.time() > deadline:
            return False
        # Waiting on another process's death (SIGKILL is asynchronous), not on our clock.
        await asyncio.sleep(0.01)
    return True


async def test_success_captures_output(ctx: RemediationContext, tmp_path: Path) -> None:
    argv = [script(tmp_path, "ok.sh", "#!/bin/sh\necho restarted web\necho warming up >&2\n")]

    result = await make(argv).execute(ctx, make_incident())

    assert result.ok
    assert not result.recoverable
    assert result.detail == f"{argv[0]} exited with status 0"
    data = dict(result.data)
    assert isinstance(data.pop("duration_seconds"), float)
    assert data == {
        "argv": argv,
        "exit_code": 0,
        "timed_out": False,
        "stdout": "restarted web\n",
        "stdout_truncated": False,
        "stderr": "warming up\n",
        "stderr_truncated": False,
    }


async def test_argv_is_passed_verbatim_and_incident_only_through_env(
    ctx: RemediationContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's own settings stay with the daemon.
    monkeypatch.setenv("RUNBOOKD_API_TOKEN", "daemon-secret")
    code = (
        "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], "
        "'env': {k: v for k, v in os.environ.items() if k.startswith(('RUNBOOKD_', 'APP_'))}}))"
    )
    args = ["$(touch pwned)", "; rm -rf /", "*", "{{ incident.id }}"]
    incident = make_incident(summary="$(reboot) `id` ; echo owned")

    remediation = make([*python(code), *args], env={"APP_ENV": "prod"})
    result = await remediation.execute(ctx, incident)

    assert result.ok
    assert json.loads(result.data["stdout"]) == {
        "argv": args,
        "env": {
            "APP_ENV": "prod",
            "RUNBOOKD_INCIDENT_ID": "inc-20270115-0001",
            "RUNBOOKD_RULE": "high_error_rate",
            "RUNBOOKD_CHECK": "error_rate",
        },
    }


async def test_cwd_and_stdin_devnull(ctx: RemediationContext, tmp_path: Path) -> None:
    # `cat` would hang forever on an inherited stdin; /dev/null ends it at once.
    argv = [script(tmp_path, "pwd.sh", "#!/bin/sh\npwd\ncat\n")]

    result = await make(argv, cwd=str(tmp_path)).execute(ctx, make_incident())

    assert result.ok
    assert result.data["stdout"] == f"{tmp_path}\n"


@pytest.mark.parametrize(
    ("code", "config", "ok", "recoverable"),
    [
        (3, {}, False, False),
        (3, {"ok_exit_codes": [0, 3]}, True, False),
        (75, {}, False, True),  # EX_TEMPFAIL: the command asks to be tried again later
        (0, {"ok_exit_codes": [1]}, False, False),
    ],
)
async def test_exit_status_decides(
    ctx: RemediationContext, code: int, config: dict[str, Any], ok: bool, recoverable: bool
) -> None:
    argv = python(f"import sys; print('bye'); sys.exit({code})")

    result = await make(argv, **config).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (ok, recoverable)
    assert result.data["exit_code"] == code
    assert result.data["stdout"] == "bye\n"
    assert result.detail == f"{sys.executable} exited with status {code}"


async def test_death_by_signal_is_described(ctx: RemediationContext, tmp_path: Path) -> None:
    argv = [script(tmp_path, "die.sh", "#!/bin/sh\nkill -KILL $$\n")]

    result = await make(argv).execute(ctx, make_incident())

    assert (result.ok, result.data["exit_code"], result.data["timed_out"]) == (False, -9, False)
    assert result.detail == f"{argv[0]} was killed by SIGKILL"


async def test_output_is_truncated_but_fully_drained(ctx: RemediationContext) -> None:
    # 1 MiB exceeds any pipe buffer: the child only finishes if we keep reading.
    argv = python("import sys; sys.stdout.write('x' * 1048576); sys.stderr.write('e' * 5000)")

    result = await make(argv).execute(ctx, make_incident())

    assert result.ok
    assert result.data["stdout"] == "x" * OUTPUT_LIMIT
    assert result.data["stdout_truncated"] is True
    assert result.data["stderr"] == "e" * OUTPUT_LIMIT
    assert result.data["stderr_truncated"] is True


async def test_timeout_kills_the_whole_process_group(
    ctx: RemediationContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    argv = [
        script(
            tmp_path,
            "hang.sh",
            f"#!/bin/sh\nsleep 30 &\necho $! > {pidfile}\necho started\nsleep 30\n",
        )
    ]

    result = await make(argv, timeout="300ms").execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert result.data["timed_out"] is True
    assert result.data["stdout"] == "started\n"
    assert result.detail == f"{argv[0]} timed out after 0.3s; process group killed"
    assert await gone(int(pidfile.read_text()))


async def test_sigterm_ignored_escalates_to_sigkill(
    ctx: RemediationContext, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # An ignored signal stays ignored across fork and exec: the whole group shrugs at TERM.
    text = f"#!/bin/sh\ntrap '' TERM\nsleep 30 &\necho $! > {pidfile}\nsleep 30\n"
    argv = [script(tmp_path, "stubborn.sh", text)]

    result = await make(argv, timeout="300ms", kill_grace="100ms").execute(ctx, make_incident())

    assert result.data["timed_out"] is True
    assert result.data["exit_code"] == -9
    assert await gone(int(pidfile.read_text()))


async def test_missing_executable_is_a_result(ctx: RemediationContext, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-tool")

    result = await make([missing, "--now"]).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == f"executable not found: {missing}"
    assert result.data == {"argv": [missing, "--now"], "error": result.detail}


async def test_not_executable_and_missing_cwd(ctx: RemediationContext, tmp_path: Path) -> None:
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)

    denied = await make([str(plain)]).execute(ctx, make_incident())
    no_cwd = await make(["/bin/true"], cwd=str(tmp_path / "gone")).execute(ctx, make_incident())

    assert (denied.ok, denied.detail) == (False, f"permission denied running {plain}")
    assert (no_cwd.ok, no_cwd.detail) == (False, f"working directory not found: {tmp_path}/gone")
