"""One rule's state machine: inactive -> pending -> firing -> resolved -> inactive.

The semantics the on-call engineer relies on:
- `for`: the condition must hold on every known observation for that long (and over at least
  `min_samples` observations) before the rule fires; one observation where it does not hold
  sends a pending rule back to inactive.
- `clear` / `clear_for`: a firing rule resolves only once the clear condition (default: the
  negation of `when`) has held that long — hysteresis against flapping.
- UNKNOWN, missing or stale data holds the state: nothing fires, nothing resolves, and the
  time spent blind does not count towards `for` or `clear_for` (the timers pause).
- Resolved is a transition, not a place to rest: a rule that resolves is inactive again at
  once, as idle as one that never fired (its healthy hooks run, the API and the gauge say
  inactive).
- A baseline condition compares with the value's own recent history, fed only while the rule
  is inactive so that a degradation never becomes its own baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daemon.core.models import Observation, RuleState
from daemon.rules.baseline import Baseline
from daemon.rules.config import RuleConfig
from daemon.rules.expr import Condition


@dataclass(frozen=True, slots=True)
class Transition:
    rule: str
    old: RuleState
    new: RuleState
    ts: float
    value: float
    # The number the value was compared with (the threshold or factor x baseline).
    limit: float | None
    condition: str
    baseline: float | None = None


class RuleEvaluator:
    def __init__(self, name: str, config: RuleConfig) -> None:
        self.name = name
        self.config = config
        self.state = RuleState.INACTIVE
        self.last_value: float | None = None
        self.last_known_ts: float | None = None
        self.blind_reason: str | None = None
        self._pending_since: float | None = None
        self._pending_samples = 0
        self._clear_since: float | None = None
        self._blind_since: float | None = None
        self._reference: float | None = None
        window = config.condition.baseline_window
        self.baseline = Baseline(window) if window is not None else None

    @property
    def check(self) -> str:
        return self.config.condition.check

    @property
    def blind(self) -> bool:
        return self._blind_since is not None

    @property
    def blind_since(self) -> float | None:
        return self._blind_since

    def restore_firing(self, baseline: float | None) -> None:
        """After a restart with this rule's incident still open: carry on firing."""
        self.state = RuleState.FIRING
        self._clear_since = None
        self._reference = baseline

    def reset(self) -> None:
        """Back to inactive with no progress (an operator resolved the incident by hand)."""
        self.state = RuleState.INACTIVE
        self._pending_since, self._pending_samples = None, 0
        self._clear_since = self._reference = None

    def observe(self, obs: Observation) -> Transition | None:
        ts = obs.sampled
        if self.last_known_ts is not None and ts < self.last_known_ts:
            return None  # out of order: an older run finishing late says nothing new
        value = obs.values.get(self.config.condition.value) if obs.known else None
        if value is None or math.isnan(value):
            reason = obs.reason if not obs.known else f"no value {self.config.condition.value!r}"
            self.hold(ts, reason or "unknown")
            return None
        baseline = self._baseline_at(ts)
        if self.config.condition.holds(value, baseline) is None:
            if self.baseline is not None and self.state is not RuleState.FIRING:
                self.baseline.add(ts, value)  # still learning what normal looks like
            self.hold(ts, "no baseline yet")
            return None
        self._resume(ts)
        self.last_value = value
        self.last_known_ts = ts
        return self._step(ts, value, baseline)

    def _baseline_at(self, ts: float) -> float | None:
        if self.baseline is None:
            return None
        if self.state in (RuleState.PENDING, RuleState.FIRING):
            # Compare with normal as it was before the episode began; the rolling baseline
            # is not fed meanwhile and would empty out during a long incident.
            return self._reference
        return self.baseline.value(ts)

    def hold(self, ts: float, reason: str) -> None:
        """No usable data at `ts`: freeze the timers until data comes back."""
        if self._blind_since is None:
            self._blind_since = ts
        self.blind_reason = reason

    def stale(self, now: float, stale_after: float) -> bool:
        """Hold the state if no known observation arrived for `stale_after`; True if so."""
        if self.last_known_ts is None or now - self.last_known_ts < stale_after:
            return False
        # Blind from the last sample on: the silence afterwards is no evidence either way.
        self.hold(self.last_known_ts, f"no fresh data for {stale_after:g}s")
        return True

    def _resume(self, ts: float) -> None:
        if self._blind_since is None:
            return
        gap = max(0.0, ts - self._blind_since)
        if self._pending_since is not None:
            self._pending_since += gap
        if self._clear_since is not None:
            self._clear_since += gap
        self._blind_since = None
        self.blind_reason = None

    def _step(self, ts: float, value: float, baseline: float | None) -> Transition | None:
        cfg = self.config
        if self.state in (RuleState.INACTIVE, RuleState.PENDING):
            if not cfg.condition.holds(value, baseline):
                if self.baseline is not None:
                    self.baseline.add(ts, value)
                if self.state is RuleState.PENDING:
                    return self._move(RuleState.INACTIVE, ts, value, baseline, cfg.condition)
                return None
            if self.state is not RuleState.PENDING:
                self._pending_since, self._pending_samples = ts, 0
                self._reference = baseline
            self._pending_samples += 1
            assert self._pending_since is not None
            held = ts - self._pending_since
            if held >= cfg.for_ and self._pending_samples >= cfg.min_samples:
                return self._move(RuleState.FIRING, ts, value, baseline, cfg.condition)
            if self.state is not RuleState.PENDING:
                return self._move(RuleState.PENDING, ts, value, baseline, cfg.condition)
            return None
        # FIRING
        clear = cfg.clear_condition
        if not clear.holds(value, baseline):
            self._clear_since = None
            return None
        if self._clear_since is None:
            self._clear_since = ts
        if ts - self._clear_since >= cfg.clear_for:
            return self._move(RuleState.RESOLVED, ts, value, baseline, clear)
        return None

    def _move(
        self, new: RuleState, ts: float, value: float, baseline: float | None, condition: Condition
    ) -> Transition:
        old = self.state
        self.state = RuleState.INACTIVE if new is RuleState.RESOLVED else new
        if new is not RuleState.PENDING:
            self._pending_since, self._pending_samples = None, 0
        self._clear_since = None
        limit = condition.limit(baseline)
        return Transition(self.name, old, new, ts, value, limit, str(condition), baseline)
