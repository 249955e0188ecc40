"""`command`: run a fixed argv, never through a shell, in its own process group.

The argv comes from the config alone: no alert label, check output or incident text is
ever put on a command line. The incident is identified to the child only through three
environment variables holding identifiers the daemon and its config generated.
The running itself (process group, bounded output, timeout) is daemon.clients.processes.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from daemon.clients.processes import (
    OUTPUT_LIMIT,
    RESERVED_ENV_PREFIX,
    ProcessResult,
    check_argv,
    check_env,
    describe_exit,
    run_process,
)
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import Duration
from remediations.base import (
    NOTIFIER_FIELD,
    REMEDIATIONS,
    Hooks,
    RemediationConfig,
    RemediationContext,
    run_params,
)

__all__ = ["ENV_PREFIX", "EX_TEMPFAIL", "OUTPUT_LIMIT", "CommandConfig", "CommandRemediation"]

# sysexits.h EX_TEMPFAIL: the command's own way of saying "try again later".
EX_TEMPFAIL = 75
ENV_PREFIX = RESERVED_ENV_PREFIX

NonEmpty = Annotated[str, Field(min_length=1)]


class CommandConfig(RemediationConfig):
    """Runs a fixed argv, never through a shell, in its own process group, with stdin from
    /dev/null. Nothing from a check or an alert reaches its arguments: the incident comes only
    as environment variables, `RUNBOOKD_INCIDENT_ID` (the incident's id), `RUNBOOKD_RULE` (the
    rule's name) and `RUNBOOKD_CHECK` (the check's name; empty for a rule on alerts), and in a
    procedure's step its parameters as `RUNBOOKD_PARAM_NAME` (upper case). Of the
    daemon's own environment it inherits only PATH, HOME, USER, LOGNAME, TMPDIR, TZ and the
    locale. Success is an exit code in `ok_exit_codes`; exit 75 (EX_TEMPFAIL) fails as
    recoverable, and a timeout kills the process group. Output is kept on the timeline, up to
    a bound."""

    example: ClassVar[str] = """
        remediations:
          restart_workers:
            type: command
            argv: [/usr/local/bin/restart-workers, --graceful]
            timeout: 2m
            env: {WORKER_POOL: default}
            cooldown: 15m
        """

    type: Literal["command"]
    argv: list[NonEmpty] = Field(
        min_length=1, description="The program and its arguments, run as a list (no shell)."
    )
    cwd: Path | None = Field(None, description="The working directory; default: the daemon's.")
    env: dict[NonEmpty, str] = Field(
        default_factory=dict,
        description="Environment variables for the command, beyond the few it inherits "
        "(never the daemon's own: it may hold secrets); `RUNBOOKD_*` names are refused.",
    )
    ok_exit_codes: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="The exit codes that count as success.",
    )
    kill_grace: Duration = Field(
        2.0,
        description="After `timeout` the process group gets SIGTERM, then SIGKILL once this "
        "has passed (0s: at once).",
    )
    idempotent: bool = Field(
        False,
        description="Declares that running it twice does no harm; a run a crash interrupted is "
        "never repeated whatever it says.",
    )
    notifier: bool = NOTIFIER_FIELD

    _no_nul = field_validator("argv")(check_argv)
    _env_names = field_validator("env")(check_env)


@REMEDIATIONS.register
class CommandRemediation(Hooks):
    type: ClassVar[str] = "command"
    Config: ClassVar[builtins.type[RemediationConfig]] = CommandConfig
    # Conservative class defaults; an instance follows its config (see __init__).
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: CommandConfig) -> None:
        self.name = name
        self.config = config
        # The operator knows whether the command tolerates running twice, and whether it
        # only tells people.
        self.idempotent = config.idempotent
        self.notifier = config.notifier

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        argv = self.config.argv
        data: dict[str, Any] = {"argv": list(argv)}
        run = await run_process(
            argv,
            term_after=self.config.timeout,
            kill_grace=self.config.kill_grace,
            cwd=self.config.cwd,
            env=self._env(incident),
        )
        if run.error is not None:
            return RemediationResult(ok=False, detail=run.error, data={**data, "error": run.error})
        data |= {
            "exit_code": run.exit_code,
            "timed_out": run.timed_out,
            "duration_seconds": round(run.duration, 3),
            "stdout": run.stdout,
            "stdout_truncated": run.stdout_truncated,
            "stderr": run.stderr,
            "stderr_truncated": run.stderr_truncated,
        }
        return self._result(run, data)

    def _env(self, incident: Incident) -> dict[str, str]:
        return {
            **self.config.env,
            "RUNBOOKD_INCIDENT_ID": incident.id,
            "RUNBOOKD_RULE": incident.rule,
            "RUNBOOKD_CHECK": incident.check,
            # A procedure's parameters (validated against its patterns when the run began).
            **{f"RUNBOOKD_PARAM_{k.upper()}": v for k, v in run_params(incident).items()},
        }

    def _result(self, run: ProcessResult, data: dict[str, Any]) -> RemediationResult:
        program = self.config.argv[0]
        if run.timed_out:
            detail = f"{program} timed out after {self.config.timeout:g}s; process group killed"
            return RemediationResult(ok=False, detail=detail, recoverable=True, data=data)
        code = run.exit_code
        ok = code in self.config.ok_exit_codes
        return RemediationResult(
            ok=ok,
            detail=f"{program} {describe_exit(code)}",
            recoverable=not ok and code == EX_TEMPFAIL,
            data=data,
        )
