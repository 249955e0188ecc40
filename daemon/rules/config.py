"""A rule's configuration: what to watch, how long, what to do, how to check it helped."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from daemon.core.units import Duration, PositiveDuration, StrictModel
from daemon.engine.alerts import Alert
from daemon.rules.expr import Condition, parse_condition


class AlertMatch(StrictModel):
    """A rule whose `when:` is `{alert: NAME, labels: {...}}` watches the alerts pushed to
    `POST /api/v1/alerts` (Alertmanager, Grafana) and `POST /api/v1/webhooks/NAME`. The sender
    has already decided when an alert fires and resolves, so `for`, `clear`, `clear_for`,
    `min_samples`, `on_blind` and `blind_after` are refused here.

    An incident is per rule episode, not per alert: the first matching alert to fire opens
    the rule's incident and runs `do:`; every other alert (fingerprint) that fires while it is
    open joins that same incident, with a timeline entry and no second run of `do:`. The
    incident resolves when the last of its alerts resolves. Alertmanager's retries and repeats
    of an alert change nothing, and a firing delivered after its own resolution with a
    `startsAt` not later than the resolved one's (a late copy from the other Alertmanager of a
    pair) opens nothing."""

    example: ClassVar[str] = """
        rules:
          web_errors:
            when: {alert: HighErrorRate, labels: {service: web}}
            severity: critical
            do: [rollback, page_oncall]     # once per episode, however many alerts join
            verify_within: 15m
            escalate: [page_oncall]
        remediations:
          rollback:
            type: http
            url: https://deploy.internal/rollback
            token: ${DEPLOY_TOKEN}
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        """

    alert: str = Field(
        min_length=1, description="The alert's name (`alertname`) that the rule watches."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels the alert must also carry, with these values (others may be "
        "there too).",
    )

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
# The keys only a rule on check values has: the sender of an alert already decided when it
# fires and resolves.
THRESHOLD_ONLY = ("for_", "clear", "clear_for", "min_samples", "on_blind", "blind_after")


class RuleConfig(StrictModel):
    """A rule on check values compares one value of one check with a threshold:
    `CHECK.VALUE OP THRESHOLD`, with `>`, `>=`, `<`, `<=`, `==` or `!=`. The threshold is a
    number, a percentage (`5%`), a duration (`800ms`, compared in seconds), or
    `FACTOR x baseline(WINDOW)`: the median of the value over the window, learned only while
    the rule is inactive and needing a quarter of the window before the rule can fire.

    The rule goes inactive -> pending (the condition holds) -> firing (it held for `for`,
    over at least `min_samples` observations) -> resolved (`clear` held for `clear_for`).
    Firing opens one incident for the episode and runs `do:`. UNKNOWN, missing or stale data
    holds the state and pauses the timers: the rule neither fires nor resolves on it."""

    example: ClassVar[str] = """
        checks:
          traffic:
            type: scrape
            url: http://app.internal:3000/metrics
            window: 5m
        rules:
          high_error_rate:
            when: traffic.error_ratio > 5%
            for: 2m
            min_samples: 4
            clear_for: 5m
            summary: Error rate above 5%
            do: [rollback, page_oncall]
            verify_within: 10m
            escalate: [page_oncall]
          slow:
            when: traffic.p95_seconds > 1.5 x baseline(1h)
            for: 10m
            do: [page_oncall]
            on_blind: [page_oncall]
        remediations:
          rollback:
            type: http
            url: https://deploy.internal/rollback
            token: ${DEPLOY_TOKEN}
            cooldown: 30m
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        """

    when: When = Field(
        description="What the rule watches: a condition on a check's value "
        "(`error_rate.error_ratio > 5%`), or `{alert: NAME, labels: {...}}` for pushed alerts."
    )
    for_: Duration = Field(
        0.0,
        alias="for",
        description="The condition must hold continuously this long before the rule fires; "
        "0s: on the first observation where it holds.",
    )
    min_samples: int = Field(1, ge=1, description="...and over at least this many observations.")
    clear: ConditionField | None = Field(
        None,
        description="The condition under which the rule resolves (hysteresis: "
        "`traffic.error_ratio < 2%`), on the same value as `when`; default: `when` no longer "
        "holds.",
    )
    clear_for: Duration = Field(
        0.0,
        description="`clear` must hold this long before the incident resolves; 0s: on the "
        "first observation where it holds.",
    )
    severity: Severity = Field(
        "critical", description="The incident's severity, passed on to pages and messages."
    )
    summary: str | None = Field(
        None,
        description="The incident's one-line summary; default: the rule's name with the "
        "condition and value (or the alert's summary).",
    )
    dry_run: bool = Field(False, description="true: this rule only records what it would have run.")
    do: list[str] = Field(
        default_factory=list,
        description="Remediations (by name) run in order when the rule fires; a step that "
        "fails stops the list and runs `escalate`. Empty: the incident is only recorded.",
    )
    verify_within: PositiveDuration | None = Field(
        None,
        description="After `do` acted, the rule must resolve within this long, or `escalate` "
        "runs. Unset: no verification; the plan ends after `do`.",
    )
    escalate: list[str] = Field(
        default_factory=list,
        description="Remediations (by name) run when a step of `do` fails or is held back, or "
        "verification fails; not after the incident is acknowledged. Empty: the timeline says "
        '"no escalation configured".',
    )
    on_blind: list[str] = Field(
        default_factory=list,
        description="Notifiers (by name) paged by a separate `RULE:blind` incident when the "
        "rule has had no usable data for `blind_after`; never a rollback.",
    )
    # More than 0s: blindness starts at the last good sample, so 0s would page on every
    # single UNKNOWN.
    blind_after: PositiveDuration = Field(
        600.0, description="How long without usable data makes the rule blind."
    )

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        when = self.when
        if isinstance(when, AlertMatch):
            given = [f for f in THRESHOLD_ONLY if f in self.model_fields_set]
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
