"""Running a command-line tool (docker, systemctl, pm2) for a remediation.

The remediations that drive a tool share this: a config base with the tool's environment,
`run_tool` (through daemon.clients.processes: an argv list, never a shell, bounded by `timeout`),
and `ToolRun`, one command as it ran, which a result's data and detail are made of.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from daemon.clients.processes import ProcessResult, check_env, describe_exit, run_process
from daemon.core.models import RemediationResult
from remediations.base import RemediationConfig

__all__ = ["Argument", "ToolConfig", "ToolRun", "run_tool", "stderr_reason"]


def _plain_argument(value: str) -> str:
    if "\0" in value or value.startswith("-"):
        raise ValueError("must not contain NUL or start with '-'")
    return value


# A value put on a tool's command line (a file, an executable): never read as a flag.
Argument = Annotated[str, Field(min_length=1), AfterValidator(_plain_argument)]


class ToolConfig(RemediationConfig):
    """What every remediation that runs a tool has."""

    # The daemon's own environment is never passed on (clients.processes.child_env).
    env: dict[Annotated[str, Field(min_length=1)], str] = Field(
        default_factory=dict,
        description="Variables the tool needs beyond PATH, HOME, USER, LOGNAME, TMPDIR, TZ and "
        "the locale, e.g. DOCKER_HOST, DOCKER_CONFIG, PM2_HOME; `RUNBOOKD_*` names are "
        "refused.",
    )

    _env_names = field_validator("env")(check_env)


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One command as it ran: what a result's data and detail are made of."""

    argv: list[str]
    # Names the command in a result's detail ("docker compose up", "systemctl restart").
    label: str
    timeout: float
    result: ProcessResult

    @property
    def ok(self) -> bool:
        r = self.result
        return r.error is None and not r.timed_out and r.exit_code == 0

    def data(self) -> dict[str, Any]:
        r = self.result
        if r.error is not None:
            return {"argv": self.argv, "error": r.error}
        return {
            "argv": self.argv,
            "exit_code": r.exit_code,
            "timed_out": r.timed_out,
            "duration_seconds": round(r.duration, 3),
            "stdout": r.stdout,
            "stdout_truncated": r.stdout_truncated,
            "stderr": r.stderr,
            "stderr_truncated": r.stderr_truncated,
        }

    def failure(self, **facts: Any) -> RemediationResult:
        """This run as a failed result, with `facts` added to its data."""
        r = self.result
        if r.error is not None:
            detail, recoverable = r.error, False
        elif r.timed_out:
            # A busy service manager, a hung docker daemon, a slow pull: trying again later
            # may well work.
            detail, recoverable = f"{self.label} timed out after {self.timeout:g}s", True
        else:
            detail, recoverable = f"{self.label} {describe_exit(r.exit_code)}", False
            if reason := stderr_reason(r.stderr):
                detail += f": {reason}"
        data = {**self.data(), **facts}
        return RemediationResult(ok=False, detail=detail, recoverable=recoverable, data=data)


async def run_tool(
    argv: Sequence[str],
    label: str,
    config: ToolConfig,
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> ToolRun:
    """Run `argv` with the config's `env` and `timeout`; `label` names it in a detail."""
    result = await run_process(argv, term_after=config.timeout, cwd=cwd, env=config.env)
    return ToolRun(list(argv), label, config.timeout, result)


def stderr_reason(stderr: str) -> str:
    """The last line that says what went wrong (compose prints progress first), not the
    "See ... --help" hint after it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("See ", "Run '"))]
    return (reasons or lines or [""])[-1]
