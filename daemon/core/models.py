"""The values that flow between checks, the engine, the pipeline and the store."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.IntEnum):
    """A check's verdict. UNKNOWN means "could not measure", never "bad"."""

    OK = 0
    WARN = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class Observation:
    """One run of one check: named float values plus a status and a reason."""

    check: str
    status: Status
    values: dict[str, float]
    ts: float
    duration: float = 0.0
    reason: str = ""
    # When the run was due. Rules time `for` and `clear_for` on due times: they advance by
    # exact intervals, so six failing runs 1 s apart span 5 s even when a run's latency
    # varies; `ts` (when it finished) would make them span 4.99 s as often as 5.01 s.
    due: float | None = None

    @property
    def known(self) -> bool:
        return self.status is not Status.UNKNOWN

    @property
    def sampled(self) -> float:
        """The time rule timers use: the due time when known, else the finish time."""
        return self.ts if self.due is None else self.due


class RuleState(enum.IntEnum):
    INACTIVE = 0
    PENDING = 1
    FIRING = 2
    RESOLVED = 3


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Step(enum.StrEnum):
    """The kinds of timeline entries. Stored and shown as their text; decisions that read
    the timeline compare with these members, never with a string typed by hand."""

    OPENED = "opened"
    RESTORED = "restored"  # a restart found the incident open
    ALERT = "alert"  # pushed alerts joined, or a note about them
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    CIRCUIT_OPEN = "circuit_open"
    DRY_RUN = "dry_run"
    APPROVAL = "approval"  # a step waits for an operator
    APPROVED = "approved"
    REJECTED = "rejected"
    SKIPPED = "skipped"  # a step held back by the safety envelope
    ACTION = "action"
    RESULT = "result"
    QUEUED = "queued"  # handed to the paging outbox
    INTERRUPTED = "interrupted"  # a step cut short by a crash or a stop
    ERROR = "error"
    VERIFY = "verify"
    VERIFIED = "verified"
    ESCALATE = "escalate"
    UPDATE = "update"  # the incident's periodic update (daemon/core/updates.py)
    RESOLVED = "resolved"


RESOLVE_PHASE = "resolve"  # a remediation's `resolve` hook, run as the incident resolves
UPDATE_PHASE = "update"  # a remediation's `update` hook, run as an open incident's update is due


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What an entry about a plan step (action, result, queued, skipped, approval...) says
    of it: which remediation, of which type, in which phase and, for a result, whether it
    worked. Written and read only through this class, so its keys are spelled once."""

    remediation: str
    type: str | None = None
    phase: str | None = None
    ok: bool | None = None

    @property
    def on_resolve(self) -> bool:
        return self.phase == RESOLVE_PHASE

    @property
    def hook(self) -> bool:
        """A call of a hook (resolve, update) rather than a step of the plan."""
        return self.phase in (RESOLVE_PHASE, UPDATE_PHASE)

    def data(self) -> dict[str, Any]:
        """The entry's data keys; unknown facts are left out."""
        out: dict[str, Any] = {"remediation": self.remediation}
        for key in ("type", "phase", "ok"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out

    @classmethod
    def read(cls, data: dict[str, Any]) -> StepFacts | None:
        name, kind, phase, ok = (data.get(k) for k in ("remediation", "type", "phase", "ok"))
        if not isinstance(name, str):
            return None
        return cls(
            name,
            kind if isinstance(kind, str) else None,
            phase if isinstance(phase, str) else None,
            ok if isinstance(ok, bool) else None,
        )


@dataclass(slots=True)
class TimelineEntry:
    """One step on an incident's timeline: what happened, when, and with which values."""

    ts: float
    kind: Step
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "kind": self.kind, "message": self.message, "data": self.data}

    @property
    def step(self) -> StepFacts | None:
        """The plan step this entry is about, if any."""
        return StepFacts.read(self.data)

    def succeeded(self, remediation: str | None = None) -> StepFacts | None:
        """A successful result of a plan step (not of a `resolve` or `update` hook), of the
        named remediation if one is given."""
        facts = self.step if self.kind == Step.RESULT else None
        if facts is None or facts.ok is not True or facts.hook:
            return None
        return facts if remediation in (None, facts.remediation) else None


@dataclass(slots=True)
class Incident:
    """One firing episode of one rule."""

    id: str
    rule: str
    check: str
    severity: str
    summary: str
    opened_at: float
    status: IncidentStatus = IncidentStatus.OPEN
    resolved_at: float | None = None
    # The observation values and thresholds that opened the incident.
    trigger: dict[str, Any] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    # Someone is on it (no more escalation): state, kept by the store; the timeline tells it.
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    # Who closed it by hand (None: it cleared, or is open): verification reads it.
    resolved_by: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status is IncidentStatus.OPEN

    def to_json(self, *, with_timeline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "rule": self.rule,
            "check": self.check,
            "severity": self.severity,
            "summary": self.summary,
            "status": self.status.value,
            "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
            "trigger": self.trigger,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
            "resolved_by": self.resolved_by,
        }
        if with_timeline:
            out["timeline"] = [e.to_json() for e in self.timeline]
        return out


@dataclass(frozen=True, slots=True)
class RemediationResult:
    """What a remediation did. `recoverable` says whether trying again later may help;
    `retry_after`, in seconds, how long a retry must wait at least (a provider's rate limit)."""

    ok: bool
    detail: str
    recoverable: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
