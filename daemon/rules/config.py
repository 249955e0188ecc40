"""A rule's configuration: what to watch, how long, what to do, how to check it helped."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from daemon.core.units import Duration, PositiveDuration, StrictModel
from daemon.engine.alerts import Alert
from daemon.rules.expr import Condition, parse_condition


class AlertMatch(StrictModel):
    """`when: {alert: HighErrorRate, labels: {service: web}}`: a rule on pushed alerts."""

    alert: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, alert: Alert) -> bool:
        return alert.name == self.alert and all(
            alert.labels.get(k) == v for k, v in self.labels.items()
        )


def _condition(value: object) -> Condition:
    if isinstance(value, Condition):
        return value
    if not isinstance(value, str):
        raise ValueError("a condition is a string such as 'error_rate.error_ratio > 5%'")
    return parse_condition(value)


def _when(value: object) -> Condition | AlertMatch:
    if isinstance(value, dict | AlertMatch):
        return AlertMatch.model_validate(value)
    return _condition(value)


ConditionField = Annotated[Condition, BeforeValidator(_condition)]
When = Annotated[Condition | AlertMatch, BeforeValidator(_when)]
Severity = Literal["critical", "error", "warning", "info"]


class RuleConfig(StrictModel):
    # A check value condition, or a match on alerts pushed to the API.
    when: When
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
    verify_within: PositiveDuration | None = None
    escalate: list[str] = Field(default_factory=list)
    # When the rule has had no usable data this long, a separate "monitoring blind" incident
    # runs `on_blind` (pages only: blindness is never a reason to roll back).
    on_blind: list[str] = Field(default_factory=list)
    # More than 0s: blindness starts at the last good sample, so 0s would page on every
    # single UNKNOWN.
    blind_after: PositiveDuration = 600.0

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        when = self.when
        if isinstance(when, AlertMatch):
            # The sender already decided when its alert fires and resolves.
            check_only = ("for_", "clear", "clear_for", "min_samples", "on_blind", "blind_after")
            given = [f for f in check_only if f in self.model_fields_set]
            if given:
                names = ", ".join("for" if f == "for_" else f for f in given)
                raise ValueError(f"{names}: only for rules on check values, not on alerts")
        elif self.clear is not None and self.clear.key != when.key:
            raise ValueError(
                f"clear must watch the same value as when ({when.key}), not {self.clear.key}"
            )
        return self

    @property
    def condition(self) -> Condition:
        """The check condition of a rule on check values."""
        if not isinstance(self.when, Condition):
            raise TypeError("a rule on alerts has no check condition")
        return self.when

    @property
    def alert_match(self) -> AlertMatch | None:
        return self.when if isinstance(self.when, AlertMatch) else None

    @property
    def clear_condition(self) -> Condition:
        return self.clear if self.clear is not None else self.condition.negated()
