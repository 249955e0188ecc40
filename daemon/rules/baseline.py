"""A rolling baseline of one value: what "normal" looked like over the last window.

Samples are folded into 60 time buckets (bounded memory whatever the check rate); the
baseline is the median of the bucket means, so a short spike moves it little. It is None
until the history spans a quarter of the window: no baseline is missing data, and missing
data never fires a rule.
"""

from __future__ import annotations

import statistics
from collections import deque

BUCKETS = 60
MIN_SAMPLES = 3


class Baseline:
    __slots__ = ("_buckets", "_first_ts", "_samples", "_width", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._width = window / BUCKETS
        # (bucket index, sum, count), oldest first
        self._buckets: deque[list[float]] = deque()
        self._first_ts: float | None = None
        self._samples = 0

    def add(self, ts: float, value: float) -> None:
        index = ts // self._width
        if self._buckets and self._buckets[-1][0] == index:
            bucket = self._buckets[-1]
            bucket[1] += value
            bucket[2] += 1
        else:
            self._buckets.append([index, value, 1])
        if self._first_ts is None:
            self._first_ts = ts
        self._samples += 1
        self._evict(ts)

    @property
    def samples(self) -> int:
        """The samples in the window as of the last `add` or `value`."""
        return self._samples

    def value(self, now: float) -> float | None:
        self._evict(now)
        if not self._buckets or self._first_ts is None:
            return None
        if now - self._first_ts < self.window / 4 or self._samples < MIN_SAMPLES:
            return None
        return statistics.median(total / count for _, total, count in self._buckets)

    def _evict(self, now: float) -> None:
        oldest = now // self._width - BUCKETS
        while self._buckets and self._buckets[0][0] <= oldest:
            _, _, count = self._buckets.popleft()
            self._samples -= int(count)
        if not self._buckets:
            self._first_ts = None
            self._samples = 0
