"""One deploy's watch: each condition of its "Rollback if" as a rule state machine fed by the
observations of its check, and what the watch can say at any time: which conditions breach,
and which it cannot judge yet (and why). No I/O: the watcher (watcher.py) acts on it.

A condition is judged once it has seen at least `min_samples` observations since the deploy,
has usable data now, and is not pending; one relative to a baseline needs that baseline. The
rule state machine holds on UNKNOWN or stale data, so missing data never breaches.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from daemon.core.models import Observation, RuleState
from daemon.core.units import format_duration
from daemon.deploys.criteria import Criterion
from daemon.rules.machine import RuleEvaluator
from daemon.store.protocol import Deploy


@dataclass(slots=True)
class Tracked:
    criterion: Criterion
    evaluator: RuleEvaluator | None
    samples: int = 0  # usable observations since the deploy
    # When the condition started to hold in the episode going on (pending or firing).
    failing_since: float | None = None

    @property
    def firing(self) -> bool:
        return self.evaluator is not None and self.evaluator.state is RuleState.FIRING

    @property
    def value(self) -> float | None:
        return self.evaluator.last_value if self.evaluator is not None else None

    def why_not_judged(self, min_samples: int) -> str | None:
        """Why the watch cannot tell yet whether this condition holds, or None."""
        criterion, evaluator = self.criterion, self.evaluator
        if evaluator is None:
            return criterion.missing
        if evaluator.blind:
            return f"no usable data of {criterion.key} ({evaluator.blind_reason or 'unknown'})"
        if self.samples < min_samples:
            return f"{self.samples} of {min_samples} observations of {criterion.key}"
        if evaluator.state is RuleState.PENDING:
            held = format_duration(evaluator.config.for_)
            return f"{criterion.describe(self.value)}, not yet for {held}"
        if evaluator.state is RuleState.FIRING:
            return f"{criterion.describe(self.value)} (not acted on)"
        return None


class Watch:
    def __init__(
        self, deploy: Deploy, criteria: list[Criterion], *, ends_at: float, gives_up_at: float
    ) -> None:
        self.deploy = deploy
        self.ends_at = ends_at
        self.gives_up_at = gives_up_at
        self.extended = False
        # Its rollback incident: the rollback began (an outcome will follow); it resolved.
        self.acting = False
        self.resolved = False
        self.tracked: dict[str, Tracked] = {}
        self._by_check: dict[str, list[Tracked]] = defaultdict(list)
        for criterion in criteria:
            evaluator = None
            if criterion.rule is not None:
                evaluator = RuleEvaluator(f"{deploy.id}:{criterion.name}", criterion.rule)
            tracked = self.tracked[criterion.name] = Tracked(criterion, evaluator)
            self._by_check[criterion.check].append(tracked)

    @property
    def checks(self) -> frozenset[str]:
        return frozenset(self._by_check)

    def observe(self, obs: Observation) -> None:
        for tracked in self._by_check.get(obs.check, ()):
            evaluator = tracked.evaluator
            if evaluator is None:
                continue
            evaluator.observe(obs)
            if not evaluator.blind and evaluator.last_known_ts == obs.sampled:
                tracked.samples += 1
            if evaluator.state in (RuleState.PENDING, RuleState.FIRING):
                if tracked.failing_since is None:
                    tracked.failing_since = obs.sampled
            elif not evaluator.blind:
                tracked.failing_since = None

    def stale(self, now: float, staleness: dict[str, float]) -> None:
        """Hold the conditions whose check stopped delivering, as the engine's rules do."""
        for check, tracked in self._by_check.items():
            after = staleness.get(check)
            for t in tracked:
                if after is not None and t.evaluator is not None and not t.evaluator.blind:
                    t.evaluator.stale(now, after)

    def breaching(self) -> list[Tracked]:
        return [t for t in self.tracked.values() if t.firing]

    def unjudged(self, min_samples: int) -> list[str]:
        return [
            why for t in self.tracked.values() if (why := t.why_not_judged(min_samples)) is not None
        ]

    def restore_firing(self, names: list[str]) -> None:
        """After a restart with this deploy's incident open: its breaches carry on firing."""
        for name in names:
            tracked = self.tracked.get(name)
            if tracked is not None and tracked.evaluator is not None:
                tracked.evaluator.restore_firing(None)

    def values(self) -> str:
        """The watched values now, beside their baselines: "error ratio 0.3% (baseline 0.4%)"."""
        parts = []
        for t in self.tracked.values():
            criterion, value = t.criterion, t.value
            if criterion.baseline is None or value is None:
                continue
            shown = criterion.show
            parts.append(f"{criterion.what} {shown(value)} (baseline {shown(criterion.baseline)})")
        return ", ".join(parts)
