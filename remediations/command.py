"""`command`: run a fixed argv, never through a shell, in its own process group.

The argv comes from the config alone: no alert label, check output or incident text is
ever put on a command line. The incident is identified to the child only through three
environment variables holding identifiers the daemon and its config generated.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from daemon.models import Incident, RemediationResult
from daemon.units import Duration
from remediations.base import REMEDIATIONS, RemediationConfig, RemediationContext

OUTPUT_LIMIT = 4096
# sysexits.h EX_TEMPFAIL: the command's own way of saying "try again later".
EX_TEMPFAIL = 75
ENV_PREFIX = "RUNBOOKD_"

NonEmpty = Annotated[str, Field(min_length=1)]


class CommandConfig(RemediationConfig):
    type: Literal["command"]
    argv: list[NonEmpty] = Field(min_length=1)
    cwd: Path | None = None
    # Added to the daemon's environment; RUNBOOKD_* names are reserved for the incident.
    env: dict[NonEmpty, str] = Field(default_factory=dict)
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # After `timeout`, the group gets SIGTERM, then SIGKILL once this grace has passed.
    kill_grace: Duration = 2.0
    idempotent: bool = False

    @field_validator("argv")
    @classmethod
    def _no_nul(cls, argv: list[str]) -> list[str]:
        if any("\0" in arg for arg in argv):
            raise ValueError("an argument contains a NUL byte")
        return argv

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if "=" in name or "\0" in name or "\0" in value:
                raise ValueError(f"invalid environment variable {name!r}")
            if name.upper().startswith(ENV_PREFIX):
                raise ValueError(f"{name}: {ENV_PREFIX}* variables are set by runbookd")
        return env


class _Capture:
    """Keeps the first OUTPUT_LIMIT bytes of a stream but reads it all, so the child
    never blocks on a full pipe."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self.data += chunk[: max(0, OUTPUT_LIMIT - len(self.data))]

    def excerpt(self, name: str) -> dict[str, Any]:
        text = bytes(self.data).decode("utf-8", errors="replace")
        return {name: text, f"{name}_truncated": self.total > len(self.data)}


@REMEDIATIONS.register
class CommandRemediation:
    type: ClassVar[str] = "command"
    Config: ClassVar[builtins.type[RemediationConfig]] = CommandConfig
    # Conservative class defaults; an instance follows its config (see __init__).
    idempotent: ClassVar[bool] = False
    destructive: ClassVar[bool] = False
    notifier: ClassVar[bool] = False

    def __init__(self, name: str, config: CommandConfig) -> None:
        self.name = name
        self.config = config
        # mypy forbids assigning a ClassVar through self; the operator's word wins here.
        vars(self)["idempotent"] = config.idempotent

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        argv = self.config.argv
        data: dict[str, Any] = {"argv": list(argv)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.config.cwd,
                env=self._env(incident),
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            reason = self._spawn_failure(exc)
            return RemediationResult(ok=False, detail=reason, data={**data, "error": reason})
        return await self._supervise(proc, data)

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        return None

    def _env(self, incident: Incident) -> dict[str, str]:
        # The daemon's own RUNBOOKD_* settings (tokens among them) are not the child's business.
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
        return {
            **inherited,
            **self.config.env,
            "RUNBOOKD_INCIDENT_ID": incident.id,
            "RUNBOOKD_RULE": incident.rule,
            "RUNBOOKD_CHECK": incident.check,
        }

    def _spawn_failure(self, exc: OSError | ValueError) -> str:
        program = self.config.argv[0]
        if isinstance(exc, FileNotFoundError):
            if self.config.cwd is not None and str(exc.filename) == str(self.config.cwd):
                return f"working directory not found: {self.config.cwd}"
            return f"executable not found: {program}"
        if isinstance(exc, PermissionError):
            return f"permission denied running {program}"
        if isinstance(exc, OSError):
            return f"cannot run {program}: {exc.strerror or exc}"
        return f"cannot run {program}: {exc}"

    async def _supervise(
        self, proc: asyncio.subprocess.Process, data: dict[str, Any]
    ) -> RemediationResult:
        out, err = _Capture(), _Capture()
        loop = asyncio.get_running_loop()
        started = loop.time()
        timed_out = await self._communicate(proc, out, err)
        data |= {
            "exit_code": proc.returncode,
            "timed_out": timed_out,
            "duration_seconds": round(loop.time() - started, 3),
            **out.excerpt("stdout"),
            **err.excerpt("stderr"),
        }
        return self._result(proc.returncode, timed_out, data)

    async def _communicate(
        self, proc: asyncio.subprocess.Process, out: _Capture, err: _Capture
    ) -> bool:
        """Wait for exit and both pipes to close; True if the timeout struck first."""
        drains = (out.drain(proc.stdout), err.drain(proc.stderr))
        try:
            async with asyncio.timeout(self.config.timeout):
                await asyncio.gather(*drains)
                await proc.wait()
            return False
        except TimeoutError:
            await _terminate_group(proc, self.config.kill_grace)
            # Keep what the group wrote before it died; bounded in case a grandchild
            # escaped the group and still holds a pipe open.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.kill_grace):
                    await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
            return True
        except asyncio.CancelledError:
            # The daemon is shutting down: leave nothing running behind us.
            _signal_group(proc.pid, signal.SIGKILL)
            raise

    def _result(self, code: int | None, timed_out: bool, data: dict[str, Any]) -> RemediationResult:
        program = self.config.argv[0]
        if timed_out:
            detail = f"{program} timed out after {self.config.timeout:g}s; process group killed"
            return RemediationResult(ok=False, detail=detail, recoverable=True, data=data)
        ok = code in self.config.ok_exit_codes
        return RemediationResult(
            ok=ok,
            detail=f"{program} {_describe_exit(code)}",
            recoverable=not ok and code == EX_TEMPFAIL,
            data=data,
        )


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after `grace`."""
    _signal_group(proc.pid, signal.SIGTERM)
    await _wait(proc, grace)
    # Even if the leader obeyed, its children may not have: sweep the group.
    _signal_group(proc.pid, signal.SIGKILL)
    await _wait(proc, grace)


async def _wait(proc: asyncio.subprocess.Process, limit: float) -> None:
    """Bounded, because wait() also waits for our pipes to close, and a grandchild that
    left the process group can hold them open out of our reach."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            await proc.wait()
