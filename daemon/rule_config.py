"""A rule's configuration: what to watch, how long, what to do, how to check it helped."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from daemon.expr import Condition, parse_condition
from daemon.units import Duration, StrictModel


def _condition(value: object) -> Condition:
    if isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError("a condition is a string such as 'error_rate.error_ratio > 5%'")
    return parse_condition(value)


ConditionField = Annotated[Condition, BeforeValidator(_condition)]
Severity = Literal["critical", "error", "warning", "info"]


class RuleConfig(StrictModel):
    when: ConditionField
    # The condition must hold continuously this long, over at least min_samples observations.
    for_: Duration = Field(0.0, alias="for")
    min_samples: int = Field(1, ge=1)
    # Hysteresis: the incident resolves once `clear` (default: not `when`) holds for clear_for.
    clear: ConditionField | None = None
    clear_for: Duration = 0.0
    severity: Severity = "critical"
    summary: str | None = None
    dry_run: bool = False
    do: list[str] = Field(default_factory=list)
    # After `do`, the rule must clear within this long, or `escalate` runs.
    verify_within: Duration | None = None
    escalate: list[str] = Field(default_factory=list)

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _clear_watches_the_same_value(self) -> RuleConfig:
        if self.clear is not None and self.clear.key != self.when.key:
            raise ValueError(
                f"clear must watch the same value as when ({self.when.key}), not {self.clear.key}"
            )
        return self

    @property
    def clear_condition(self) -> Condition:
        return self.clear if self.clear is not None else self.when.negated()
