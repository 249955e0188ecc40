"""The contract every remediation type fulfils."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import aiohttp

from daemon.clock import Clock
from daemon.models import Incident, RemediationResult
from daemon.registry import Registry
from daemon.units import Duration, SecretsModel


class RemediationConfig(SecretsModel):
    """Fields every remediation has. Subclasses narrow `type` to a Literal."""

    type: str
    # No second run of this remediation for the same rule within this window.
    cooldown: Duration = 300.0
    timeout: Duration = 30.0

    def deadline(self) -> float:
        """The longest one execution may take, retries included: the pipeline's outer bound."""
        return self.timeout


@dataclass(slots=True)
class RemediationContext:
    session: aiohttp.ClientSession
    clock: Clock


class Remediation(Protocol):
    type: ClassVar[str]
    Config: ClassVar[builtins.type[RemediationConfig]]
    # Safe to run twice with the same effect (a crash mid-run may be retried).
    idempotent: ClassVar[bool]
    # Loses data or capacity if misapplied; needs approval (see the safety envelope).
    destructive: ClassVar[bool]
    # Tells people rather than changes systems: exempt from the action budget.
    notifier: ClassVar[bool]

    def __init__(self, name: str, config: Any) -> None: ...

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult: ...

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        """Called once when the incident resolves (a page resolves); None: nothing to do."""
        ...


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
