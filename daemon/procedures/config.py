"""The `procedures:` section: the runbook's step lists (a migration, a rollback, a restore) as
named procedures that runbookd runs on request, one gated and recorded step at a time."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from daemon.config.settings import Name
from daemon.core.units import PositiveDuration, StrictModel

# How long a step waits when its config does not say: a check to be OK, an operator to answer.
WAIT_FOR_DEFAULT = 300.0
APPROVAL_DEFAULT = 3600.0
# A parameter's value travels in environment variables and templates: bounded, one line.
MAX_VALUE = 500


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {text!r} ({exc})") from None
    return text


class ParamConfig(StrictModel):
    """`procedures.NAME.params.PARAM`: a value the person who starts a run gives
    (`--param PARAM=VALUE`). A remediation sees it as `{{ params.PARAM }}` in an `http` body
    and as `RUNBOOKD_PARAM_PARAM` (upper case) in a `command`'s environment."""

    example: ClassVar[str] = """
        procedures:
          deploy_migration:
            params:
              version:
                description: The release whose migrations run.
                pattern: "v[0-9]+\\\\.[0-9]+\\\\.[0-9]+"
            steps:
              - {name: migrate, run: migrate}
        remediations:
          migrate:
            type: command
            argv: [npx, prisma, migrate, deploy]
    """

    description: str = Field("", max_length=500, description="What the value is, for people.")
    default: str | None = Field(
        None, max_length=MAX_VALUE, description="The value when none is given; unset: required."
    )
    pattern: Annotated[str, AfterValidator(_regex)] | None = Field(
        None, description="A regular expression the whole value must match."
    )


StepKind = Literal["run", "job", "wait_for", "approval"]


class StepConfig(StrictModel):
    """One step of a procedure: exactly one of `run` (a remediation), `job` (a job, waited
    for), `wait_for` (a check, until it is OK) or `approval` (an operator says go)."""

    example: ClassVar[str] = """
        procedures:
          app_rollback:
            steps:
              - {name: approve, approval: true, timeout: 15m}
              - {name: rollback, run: rollback, timeout: 5m}
              - {name: healthy, wait_for: app, timeout: 5m}
        checks:
          app:
            type: http
            url: https://app.example.com/api/health
        remediations:
          rollback:
            type: command
            argv: [docker, compose, rollback]
    """

    name: Name = Field(description="The step's name, unique in its procedure.")
    run: str | None = Field(None, description="A remediation to run: a name under `remediations:`.")
    job: str | None = Field(None, description="A job to run and wait for: a name under `jobs:`.")
    wait_for: str | None = Field(
        None, description="A check to run until it is OK: a name under `checks:`."
    )
    approval: bool = Field(False, description="true: wait for an operator to approve or reject.")
    timeout: PositiveDuration | None = Field(
        None,
        description="How long the step may take. Unset: as long as the remediation may take "
        "(its `timeout`, with its retries and waits), the job's, 5m for `wait_for`, 1h for "
        "`approval`.",
    )
    undo: list[str] = Field(
        default_factory=list,
        description="Remediations that reverse this step, run (in order) when a later step "
        "fails or the run is cancelled: maintenance mode on is undone by maintenance mode off.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> StepConfig:
        given = [k for k in ("run", "job", "wait_for") if getattr(self, k) is not None]
        given += ["approval"] if self.approval else []
        if len(given) != 1:
            kinds = " and ".join(given) if given else "none"
            raise ValueError(
                f"a step is exactly one of run, job, wait_for or approval: true (got {kinds})"
            )
        return self

    @property
    def kind(self) -> StepKind:
        if self.run is not None:
            return "run"
        if self.job is not None:
            return "job"
        return "wait_for" if self.wait_for is not None else "approval"

    @property
    def target(self) -> str:
        """What the step names: its remediation, job or check ("" for an approval)."""
        return self.run or self.job or self.wait_for or ""


class ProcedureConfig(StrictModel):
    """`procedures.NAME`: steps runbookd runs in order when asked (`runbookd procedure run
    NAME`, `POST /api/v1/procedures/NAME/runs`), each recorded. When a step fails, times out
    or is rejected, the `undo` of the steps done so far runs, newest first, then `on_failure`
    (a page). A run survives a restart: it resumes at its step, and a step whose effect is
    unknown (a remediation or job that was running) is not run again without an operator's
    approval. Among several replicas, the leader runs it."""

    example: ClassVar[str] = """
        procedures:
          deploy_migration:
            description: The runbook's database migration deployment.
            params:
              version: {description: The release being deployed.}
            preconditions: [database]
            steps:
              - {name: backup, job: nightly_backup}
              - {name: maintenance_on, run: maintenance_on, undo: [maintenance_off]}
              - {name: migrate, run: migrate, timeout: 10m}
              - {name: maintenance_off, run: maintenance_off}
              - {name: healthy, wait_for: app}
            on_failure: [page_oncall]
        checks:
          app:
            type: http
            url: https://app.example.com/api/health
          database:
            type: postgres
            dsn: postgresql://monitor@db.internal:5432/app
        remediations:
          backup:
            type: command
            argv: [/usr/local/bin/backup-now]
          maintenance_on:
            type: command
            argv: [/usr/local/bin/maintenance, "on"]
          maintenance_off:
            type: command
            argv: [/usr/local/bin/maintenance, "off"]
          migrate:
            type: command
            argv: [npx, prisma, migrate, deploy]
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        jobs:
          nightly_backup:
            run: backup
            schedule: "0 2 * * *"
    """

    description: str = Field("", max_length=2000, description="What the procedure is for.")
    params: dict[Name, ParamConfig] = Field(
        default_factory=dict, description="The values a run is started with."
    )
    preconditions: list[str] = Field(
        default_factory=list,
        description="Checks that must be OK (by their last run) for a run to start; a check "
        "that is not, or has not run yet, refuses the start and says which.",
    )
    steps: list[StepConfig] = Field(min_length=1, description="What runs, in order.")
    on_failure: list[str] = Field(
        default_factory=list,
        description="Remediations run when a run fails, after the undo steps: a page.",
    )

    @model_validator(mode="after")
    def _unique_steps(self) -> ProcedureConfig:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}")
            seen.add(step.name)
        return self
