"""Rule conditions: `check.value OP threshold` or `check.value OP factor x baseline(window)`.

Examples: `error_rate.error_ratio > 5%`, `health.up < 1`, `api.latency_seconds > 800ms`,
`latency.p95_seconds > 1.5 x baseline(1h)` (performance degraded by more than 50%).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from daemon.core.units import MAX_DURATION, format_duration, parse_duration

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
NEGATED = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(
    rf"^\s*(?P<check>{_NAME})\.(?P<value>{_NAME})\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<rhs>.+?)\s*$"
)
_BASELINE = re.compile(
    rf"^(?:(?P<factor>{_NUMBER})\s*[x*×]\s*)?baseline\(\s*(?P<window>[^)]+?)\s*\)$"
)
_LITERAL = re.compile(rf"^(?P<number>{_NUMBER})(?P<unit>%|ms|s|m|h|d)?$")


@dataclass(frozen=True, slots=True)
class Condition:
    check: str
    value: str
    op: str
    threshold: float = 0.0
    # When set, the threshold is `factor x` the baseline of the same value over this window.
    baseline_window: float | None = None
    factor: float = 1.0
    rhs: str = ""  # the threshold as written, for messages

    @property
    def key(self) -> str:
        return f"{self.check}.{self.value}"

    def limit(self, baseline: float | None) -> float | None:
        """The number to compare with; None when a baseline is needed and not yet known."""
        if self.baseline_window is None:
            return self.threshold
        return None if baseline is None else self.factor * baseline

    def holds(self, value: float, baseline: float | None) -> bool | None:
        """True/False, or None when it cannot be decided (no baseline yet)."""
        limit = self.limit(baseline)
        return None if limit is None else OPS[self.op](value, limit)

    def negated(self) -> Condition:
        return Condition(
            self.check,
            self.value,
            NEGATED[self.op],
            self.threshold,
            self.baseline_window,
            self.factor,
            self.rhs,
        )

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.rhs}"


def parse_condition(text: str) -> Condition:
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(
            f"not a condition: {text!r} (use e.g. 'error_rate.error_ratio > 5%' "
            "or 'latency.p95_seconds > 1.5 x baseline(1h)')"
        )
    rhs = match.group("rhs")
    check, value, op = match.group("check"), match.group("value"), match.group("op")
    if base := _BASELINE.match(rhs):
        return Condition(check, value, op, 0.0, *_baseline(base), rhs)
    if lit := _LITERAL.match(rhs):
        number, unit = float(lit.group("number")), lit.group("unit")
        if unit == "%":
            number /= 100
        elif unit:
            number = parse_duration(lit.group(0))
        if not math.isfinite(number):  # 1e400 is inf: no value is ever above it
            raise ValueError(f"not a finite threshold: {rhs!r}")
        return Condition(check, value, op, number, rhs=rhs)
    raise ValueError(f"not a threshold: {rhs!r} (a number, 5%, 800ms, or 1.5 x baseline(1h))")


def _baseline(match: re.Match[str]) -> tuple[float, float]:
    """(window, factor) of `FACTOR x baseline(WINDOW)`, each within its range."""
    written = match.group("factor")
    factor = float(written) if written else 1.0
    # 0 x baseline is a fixed threshold of 0; a negative factor turns the comparison around.
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"a baseline factor must be a finite number above 0, not {written!r}")
    window = parse_duration(match.group("window"))
    if window <= 0:
        raise ValueError("a baseline window must be longer than zero")
    if window > MAX_DURATION:
        longest = format_duration(MAX_DURATION)
        raise ValueError(
            f"a baseline window must be at most {longest}, not {format_duration(window)}"
        )
    return window, factor
