"""The port between the HTTP interface and the running daemon: what the API reads and
steers, and nothing more. The daemon (daemon/runtime) implements it; handlers never reach
past it into the engine or the pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from daemon.api.check_query import CheckQuery
from daemon.config.document import RunbookConfig
from daemon.core.clock import Clock
from daemon.core.models import Incident
from daemon.deploys.models import DeployEvent
from daemon.deploys.vercel import VercelDelivery
from daemon.engine.alerts import Alert
from daemon.pipeline.approvals import Decision, Pending
from daemon.pipeline.silences import Silence
from daemon.procedures.models import ProcedureRun
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Deploy, JobRun, Store


@dataclass(frozen=True, slots=True)
class Answer:
    """What an act (api/acts.py) comes to: the status and JSON body of the route's answer,
    whichever replica performed it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, reason: str, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, {"error": reason}, headers or {})

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": self.headers}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Answer:
        return cls(int(doc["status"]), dict(doc["body"]), dict(doc.get("headers") or {}))


class DaemonView(Protocol):
    """What the API reads from, and steers in, the running daemon."""

    config: RunbookConfig
    store: Store
    registry: CollectorRegistry
    metrics: Metrics
    clock: Clock

    @property
    def operations(self) -> Operations: ...

    config_hash: str
    reload_problems: list[str]

    def ready(self) -> tuple[bool, str]: ...

    def role(self) -> str:
        """ "single", "leader" or "standby" (runtime/leadership.py)."""
        ...

    def leader(self) -> str | None:
        """The replica that holds the lease, as last seen; None when unknown or alone."""
        ...

    def health(self) -> tuple[bool, str]:
        """(alive, why not): not alive once a core task died."""
        ...

    def first_round(self) -> tuple[int, int]:
        """(checks that have run at least once, checks configured)."""
        ...

    async def reload_announced(self) -> bool:
        """Reload the config file (systemd is told, as for SIGHUP); False if refused."""
        ...

    async def intake(self, alerts: list[Alert]) -> int:
        """Feed alerts to the engine; returns how many matched at least one rule."""
        ...

    async def forward(self, act: str, args: dict[str, Any]) -> Answer:
        """A standby's: hand the act to the leader through the store; the leader's answer, or
        why there is none."""
        ...


class RunStart(enum.Enum):
    """What asking for a run at once (of a check, of a job) came to."""

    STARTED = "started"
    RUNNING = "running already"
    UNKNOWN = "unknown"


class Operations(Protocol):
    """What an operator may do to the running daemon, each a single call."""

    def open_incident(self, incident_id: str) -> Incident | None: ...

    async def acknowledge(self, incident: Incident, by: str, reason: str) -> bool:
        """Stop escalating `incident`; False if it was acknowledged already."""
        ...

    async def resolve(self, incident_id: str, by: str, reason: str) -> bool:
        """Close an open incident; False if there is none with that id."""
        ...

    def decide(self, incident_id: str, decision: Decision) -> bool:
        """Answer the step waiting for approval; False if none waits."""
        ...

    def pending_approvals(self) -> list[Pending]: ...

    def silences(self, now: float, *, include_expired: bool) -> list[Silence]: ...

    async def add_silence(self, silence: Silence) -> None: ...

    async def expire_silence(self, silence_id: str, now: float) -> Silence | None: ...

    async def rules(self) -> list[dict[str, Any]]:
        """Every rule's state, as the API shows it."""
        ...

    def has_rule(self, rule: str) -> bool: ...

    def unknown_target(self, silence: Silence) -> str | None:
        """Why the silence could match nothing (an unknown rule or check), naming the field."""
        ...

    async def reset_circuit(self, rule: str) -> bool:
        """Close the rule's circuit; whether it was open."""
        ...

    def run_check(self, check: str) -> RunStart: ...

    def checks(self, query: CheckQuery) -> dict[str, Any]:
        """The checks the query selects with their last observations (None fields until a
        check has run), `total` selected before paging, and `counts` by status of all."""
        ...

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job: its schedule, whether a run goes on, its next time and its last run."""
        ...

    async def job_runs(self, job: str, limit: int) -> list[JobRun] | None:
        """The job's runs, newest first; None if there is no such job."""
        ...

    def run_job(self, job: str) -> RunStart: ...

    async def deploy(self, event: DeployEvent) -> tuple[Deploy, str]:
        """A deploy announced (by CI): the deploy, and what became of the event ("watching",
        "recorded" for another environment, "noted" on another deploy). NotConfigured if the
        config has no `deploys:`."""
        ...

    async def start_procedure(self, name: str, params: dict[str, str], by: str) -> ProcedureRun:
        """A run under way (daemon/procedures/runner.py): UnknownProcedure, or Refused (a
        parameter; PreconditionsNotMet)."""
        ...

    def cancel_procedure(self, run_id: str, by: str, reason: str) -> bool:
        """Cancel a run going on; False if there is none with that id."""
        ...

    async def vercel_event(self, delivery: VercelDelivery) -> dict[str, Any]:
        """A verified Vercel delivery: what it came to. NotConfigured without `deploys:`;
        ValueError naming the field for a deployment event without a deployment."""
        ...
