"""The runbook's "Rollback if" for one deploy: each condition of `rollback_if` with its limit
fixed at the deploy from the values before it, as a rule the rule state machine runs (`for`,
`min_samples`, UNKNOWN holds), and the plans of the incidents a deploy may open.

A condition relative to a baseline that is unknown (too little history before the deploy)
cannot be judged: it has no rule, and says why; the watch treats it as missing data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.core.units import format_duration
from daemon.deploys.config import DeploysConfig, split_ref
from daemon.rules.config import RuleConfig
from daemon.rules.expr import Condition

Format = Callable[[float], str]


def percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def seconds(value: float) -> str:
    return format_duration(round(value, 3)) if value > 0 else "0s"


def number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class Criterion:
    """One condition of `rollback_if` for one deploy."""

    name: str  # error_ratio, p95, critical:CHECK, database
    what: str  # for people: "error ratio", "critical endpoint health"
    key: str  # CHECK.VALUE
    show: Format
    rule: RuleConfig | None  # None: it cannot be judged (`missing` says why)
    baseline: float | None = None
    missing: str | None = None
    why: str = ""  # where the limit comes from: "(baseline 0.4% + 5 points)"

    @property
    def check(self) -> str:
        return split_ref(self.key)[0]

    @property
    def limit(self) -> float | None:
        return self.rule.condition.threshold if self.rule is not None else None

    @property
    def condition(self) -> str:
        """As the timeline says it: "traffic.error_ratio > 5.4% (baseline 0.4% + 5 points)"."""
        if self.rule is None:
            return f"{self.key}: {self.missing}"
        return f"{self.rule.condition} {self.why}".rstrip()

    def describe(self, value: float | None) -> str:
        """Why it breaches: "error ratio 20% above 5.4% (baseline 0.4% + 5 points)", or
        "critical endpoint health failing (up 0)"."""
        seen = "?" if value is None else self.show(value)
        if self.rule is None:
            return f"{self.what}: {self.missing}"
        if not self.why:
            return f"{self.what} failing ({self.key.rpartition('.')[2]} {seen})"
        return f"{self.what} {seen} above {self.show(self.rule.condition.threshold)} {self.why}"


def baseline_keys(config: DeploysConfig) -> list[str]:
    """The values whose history the pre-deploy baseline is taken from."""
    limits = config.rollback_if
    return [limit.value for limit in (limits.error_ratio, limits.p95) if limit is not None]


def _rule(config: DeploysConfig, condition: Condition) -> RuleConfig:
    # The durations were validated with the section: copied, not parsed again.
    update = {"for_": config.for_, "min_samples": config.min_samples, "clear_for": config.clear_for}
    return RuleConfig.model_validate({"when": condition}).model_copy(update=update)


def _missing(key: str, config: DeploysConfig) -> str:
    need = format_duration(config.baseline_window / 4)
    return f"no baseline of {key} before the deploy (it needs {need} of history)"


def criteria(config: DeploysConfig, baseline: Mapping[str, float | None]) -> list[Criterion]:
    """Each condition of `rollback_if`, its limit taken from `baseline` (by CHECK.VALUE)."""
    found: list[Criterion] = []
    limits = config.rollback_if
    if (error := limits.error_ratio) is not None:
        before = baseline.get(error.value)
        if before is None:
            missing = _missing(error.value, config)
            found.append(
                Criterion("error_ratio", "error ratio", error.value, percent, None, None, missing)
            )
        else:
            limit = before + error.above_baseline_by
            points = f"{error.above_baseline_by * 100:g} points"
            why = f"(baseline {percent(before)} + {points})"
            check, value = split_ref(error.value)
            rule = _rule(config, Condition(check, value, ">", limit, rhs=percent(limit)))
            found.append(
                Criterion("error_ratio", "error ratio", error.value, percent, rule, before, why=why)
            )
    if (p95 := limits.p95) is not None:
        before = baseline.get(p95.value)
        if before is None:
            missing = _missing(p95.value, config)
            found.append(Criterion("p95", "p95 latency", p95.value, seconds, None, None, missing))
        else:
            limit = before * p95.factor
            why = f"({p95.factor:g} x baseline {seconds(before)})"
            check, value = split_ref(p95.value)
            rule = _rule(config, Condition(check, value, ">", limit, rhs=seconds(limit)))
            found.append(Criterion("p95", "p95 latency", p95.value, seconds, rule, before, why=why))
    for check in limits.critical:
        rule = _rule(config, Condition(check, "up", "<", 1.0, rhs="1"))
        found.append(
            Criterion(
                f"critical:{check}", f"critical endpoint {check}", f"{check}.up", number, rule
            )
        )
    if (database := limits.database) is not None:
        rule = _rule(config, Condition(database, "up", "<", 1.0, rhs="1"))
        found.append(Criterion("database", f"database {database}", f"{database}.up", number, rule))
    return found


def incident_key(config: DeploysConfig) -> str:
    """The incident a breach opens; its plan rolls back."""
    return f"deploy:{config.environment}"


def unverified_key(config: DeploysConfig) -> str:
    """The incident a watch that ran out of data opens; its plan only pages."""
    return f"deploy:{config.environment}:unverified"


# A plan's `when` is never evaluated (the watch decides); the pipeline reads its steps.
_NOT_EVALUATED = Condition("deploy", "breach", ">", 0.0, rhs="0")


def plans(config: DeploysConfig) -> dict[str, RuleConfig]:
    """The plans of the incidents a deploy opens, by their key: a breach rolls back (through
    the whole envelope), must clear within `verify_within`, else pages; a watch that ran out
    of data only pages."""
    rollback = RuleConfig.model_validate(
        {"when": _NOT_EVALUATED, "do": [config.rollback], "escalate": list(config.page)}
    ).model_copy(update={"verify_within": config.verify_within})
    unverified = RuleConfig.model_validate(
        {"when": _NOT_EVALUATED, "severity": "warning", "do": list(config.page)}
    )
    return {incident_key(config): rollback, unverified_key(config): unverified}
