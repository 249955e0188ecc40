"""A procedure's run as it is recorded: its parameters, each step's state, and a timeline."""

from __future__ import annotations

import dataclasses
import enum
import secrets
from dataclasses import dataclass, field
from typing import Any


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # cut short by a cancel: its effect is unknown
    UNDONE = "undone"  # it had succeeded; its undo ran


@dataclass(slots=True)
class StepRecord:
    name: str
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    detail: str = ""


@dataclass(slots=True)
class RunEntry:
    ts: float
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ProcedureRun:
    id: str
    procedure: str
    params: dict[str, str]
    by: str
    started_at: float
    steps: list[StepRecord]
    status: RunStatus = RunStatus.RUNNING
    ended_at: float | None = None
    timeline: list[RunEntry] = field(default_factory=list)
    # The undo and on_failure remediations begun (`undo/STEP/NAME`, `on_failure/NAME`): each
    # runs at most once, a restart in the middle of one does not repeat it.
    claims: list[str] = field(default_factory=list)

    @property
    def current(self) -> int:
        """The index of the first step not over (len(steps) when all are)."""
        over = (StepStatus.SUCCEEDED, StepStatus.UNDONE)
        return next((i for i, s in enumerate(self.steps) if s.status not in over), len(self.steps))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProcedureRun:
        steps = [
            StepRecord(
                s["name"], StepStatus(s["status"]), s["started_at"], s["ended_at"], s["detail"]
            )
            for s in doc["steps"]
        ]
        return cls(
            id=doc["id"],
            procedure=doc["procedure"],
            params=dict(doc["params"]),
            by=doc["by"],
            started_at=doc["started_at"],
            steps=steps,
            status=RunStatus(doc["status"]),
            ended_at=doc["ended_at"],
            timeline=[RunEntry(**e) for e in doc["timeline"]],
            claims=list(doc.get("claims", [])),
        )


def new_run_id(now: float) -> str:
    """Time-ordered and unique, like an incident's."""
    return f"run-{int(now * 1000):x}-{secrets.token_hex(3)}"
