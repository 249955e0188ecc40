"""Where a plan is, kept in the store at every step, so a restart or a crash resumes it.

A plan moves through stages: `do` (the rule's steps), then `verify` (the rule must clear by a
deadline) or `escalate` (the rule's escalation steps), then `done`; with the rule's circuit
open it runs `notify` (its pagers only) instead. Within a stage `index` is the next step. Each
move is written in the same store transaction as what caused it (a step's result, an outbox
item, the timeline entry that announces a stage), so after a crash a step that finished is
never run again, and one that was running is found in the action ledger as interrupted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Store namespace: one key per incident whose plan has not finished.
PLANS = "plans"

Stage = Literal["do", "verify", "escalate", "notify", "done"]


@dataclass(slots=True)
class Progress:
    # The steps as they were when the plan began: a reload changes later plans, not this one.
    do: list[str]
    escalate: list[str]
    notify: list[str] = field(default_factory=list)  # circuit open: the pagers of both
    stage: Stage = "do"
    index: int = 0
    acted: bool = False  # a step that is not a notifier executed: the plan changed something
    held: list[str] = field(default_factory=list)  # why steps were held back
    why: str = ""  # why the plan escalates
    # Whether the plan helped, for the circuit breaker: None unknown or not counted.
    helped: bool | None = None
    verify_started: float = 0.0
    verify_until: float = 0.0
    # The step at `index` asked for approval at `asked_at`, to be answered by `deadline`.
    asked_at: float | None = None
    deadline: float | None = None
    # The answer, once given: {"approved": bool, "by": str, "reason": str}.
    decision: dict[str, Any] | None = None
    # The targets this plan holds (the lock outlives a restart in the middle of a plan).
    targets: list[str] = field(default_factory=list)

    def steps(self) -> list[str]:
        if self.stage == "do":
            return self.do
        if self.stage == "escalate":
            return self.escalate
        return self.notify if self.stage == "notify" else []

    @property
    def claim(self) -> str:
        """The step at `index`, as the action ledger claims it: once per incident."""
        return f"{self.stage}/{self.index}"

    def next_step(self) -> None:
        """The step at `index` is over (whatever its outcome): on to the next."""
        self.index += 1
        self.asked_at = self.deadline = self.decision = None

    def enter(self, stage: Stage) -> None:
        self.stage, self.index = stage, 0
        self.asked_at = self.deadline = self.decision = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> Progress | None:
        """None for what is not a plan's progress (a newer or damaged record)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(**value)
        except TypeError:
            return None
