"""The recent history of the watched values, from which each deploy's baseline is frozen: a
rolling `Baseline` (daemon/rules/baseline.py) per value, the median of its bucket means over
`baseline_window`, unknown until it spans a quarter of the window."""

from __future__ import annotations

import math
from collections import defaultdict

from daemon.core.models import Observation
from daemon.deploys.config import split_ref
from daemon.rules.baseline import Baseline


class History:
    def __init__(self, keys: list[str], window: float) -> None:
        self.keys = tuple(keys)
        self.window = window
        self._by_check: dict[str, list[tuple[str, Baseline]]] = defaultdict(list)
        self._baselines: dict[str, Baseline] = {}
        for key in keys:
            check, value = split_ref(key)
            baseline = self._baselines[key] = Baseline(window)
            self._by_check[check].append((value, baseline))

    def same(self, keys: list[str], window: float) -> bool:
        return self.keys == tuple(keys) and self.window == window

    def add(self, obs: Observation) -> None:
        if not obs.known:
            return  # missing data is not a value, and never part of normal
        for name, baseline in self._by_check.get(obs.check, ()):
            value = obs.values.get(name)
            if value is not None and not math.isnan(value):
                baseline.add(obs.sampled, value)

    def freeze(self, now: float) -> dict[str, float | None]:
        """Each value's baseline as of `now` (None: too little history)."""
        return {key: baseline.value(now) for key, baseline in self._baselines.items()}
