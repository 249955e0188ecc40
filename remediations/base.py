"""The contract every remediation type fulfils."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import Field

from daemon.core.clock import Clock
from daemon.core.models import Incident, RemediationResult
from daemon.core.registry import Registry
from daemon.core.units import Duration, PositiveDuration, SecretsModel, StrictModel


class RunLimit(StrictModel):
    """At most `count` runs per sliding `window`, whichever rule asks (e.g. restarts)."""

    count: int = Field(ge=1)
    window: PositiveDuration


class RemediationConfig(SecretsModel):
    """Fields every remediation has. Subclasses narrow `type` to a Literal."""

    type: str
    # No second run of this remediation for the same rule within this window; 0s: none.
    cooldown: Duration = 300.0
    timeout: PositiveDuration = 30.0
    # What it acts on (a service, a project). Two plans never act on one target at once.
    # Default: the remediation's own name.
    target: str | None = None
    # Beyond this many runs in the window the step is refused and the plan escalates,
    # so a restart loop stops by itself.
    max_runs: RunLimit | None = None
    # Destructive remediations wait for an operator's approval unless this says false;
    # true asks for approval for any remediation.
    require_approval: bool | None = None
    # Unanswered this long, the approval counts as refused and the plan escalates.
    approval_timeout: PositiveDuration = 900.0

    def deadline(self) -> float:
        """The longest one execution may take, retries included: the pipeline's outer bound."""
        return self.timeout


class StateStore(Protocol):
    """Small JSON values a remediation keeps across runs and restarts (e.g. the last image
    seen healthy). Each remediation sees its own keys."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: Any) -> None: ...


class MemoryState:
    """A StateStore in memory: for tests, and the default outside the daemon."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.values.get(key)

    async def put(self, key: str, value: Any) -> None:
        self.values[key] = value


@dataclass(slots=True)
class RemediationContext:
    session: aiohttp.ClientSession
    clock: Clock
    state: StateStore = field(default_factory=MemoryState)


class Remediation(Protocol):
    type: ClassVar[str]
    Config: ClassVar[builtins.type[RemediationConfig]]
    # Safe to run twice with the same effect (a crash mid-run may be retried). Plain
    # attributes, not ClassVars, so an instance may follow its config.
    idempotent: bool
    # Loses data or capacity if misapplied; needs approval (see the safety envelope).
    destructive: bool
    # Tells people rather than changes systems: exempt from the action budget.
    notifier: bool

    def __init__(self, name: str, config: Any) -> None: ...

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult: ...

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        """Called once when the incident resolves (a page resolves); None: nothing to do.
        It may wait on ctx.clock (scale back in after a quiet period): the pipeline cancels
        it if the same rule fires again meanwhile."""
        ...

    async def healthy(self, ctx: RemediationContext) -> None:
        """Called now and then while a rule that uses it is healthy, to note what a good
        state looks like (the image running, the deployment serving)."""
        ...


class Hooks:
    """Default hooks for remediations with nothing to do on resolve or while healthy."""

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        return None

    async def healthy(self, ctx: RemediationContext) -> None:
        return None


def incident_fields(incident: Incident) -> dict[str, Any]:
    """The incident facts a template may insert, as plain data (never evaluated)."""
    trigger = incident.trigger
    return {
        "incident.id": incident.id,
        "incident.rule": incident.rule,
        "incident.check": incident.check,
        "incident.severity": incident.severity,
        "incident.summary": incident.summary,
        "incident.status": incident.status.value,
        "incident.opened_at": incident.opened_at,
        "incident.value": trigger.get("value"),
        "incident.threshold": trigger.get("threshold"),
    }


REMEDIATIONS: Registry[type[Remediation]] = Registry("remediation")
