"""How a recorded value reads to people: one formatter for an incident's summary, the console
(an incident's trigger and timeline, a job run's or a deploy's data) and the Markdown incident
report, so that all say the same thing the same way.

- yes / no for a boolean; an em dash for None or a missing value (unknown, or none);
- a number to 4 significant digits, without an exponent where one is not needed;
- a unit from the value's name: `bytes` and `*_bytes` sizes, `*seconds*` durations, `*_at` and
  `*_since` times, `*_percent` and `*_ratio` percentages, `*_days` days. A rule's `value`,
  `threshold`, `limit` and `baseline` are in the unit of the value it watches, which the
  incident's trigger names (`value_name`: p95_seconds, error_ratio...);
- an object as `key: value` pairs, a list as its items (nested ones in braces and brackets);
- text with its controls and direction overrides shown as escapes (daemon/core/text.py), cut
  at `MAX_TEXT`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from daemon.core.text import visible
from daemon.core.units import format_bytes, format_duration

EM_DASH = "\u2014"
MAX_TEXT = 300
# The names of a rule's numbers, which are in the unit of the value the rule watches.
MEASURED = frozenset({"value", "threshold", "limit", "baseline"})
# The name of that value, in an incident's trigger (daemon/engine/thresholds.py).
MEASURE_KEY = "value_name"


def shown(value: Any, name: str = "", *, measure: str | None = None) -> str:
    """`value` as people read it, its unit from `name` (or, for a rule's numbers, from
    `measure`, the name of the value the rule watches)."""
    if measure and name in MEASURED:
        name = measure
    return _cut(_shown(value, name, nested=False))


def pairs(data: Mapping[str, Any], measure: str | None = None) -> list[tuple[str, str]]:
    """The data's fields by name, each shown. Its rule's numbers take the unit of the value
    the data names (`value_name`, as a trigger does), else of `measure`."""
    named = data.get(MEASURE_KEY)
    measure = named if isinstance(named, str) else measure
    return [(str(k), shown(v, str(k), measure=measure)) for k, v in sorted(data.items())]


def measure_of(trigger: Mapping[str, Any]) -> str | None:
    """The name of the value an incident's rule watched, from its trigger (None: an alert's)."""
    named = trigger.get(MEASURE_KEY)
    return named if isinstance(named, str) else None


def number(x: float) -> str:
    """An int as it is (a count); a float to 4 significant digits: 0.07312 -> 0.07312,
    12345.6 -> 12350, 1e-09 -> 1e-09."""
    if isinstance(x, int) or not math.isfinite(x):
        return str(x)
    text = f"{x:.4g}"
    if "e" in text and 1e-6 <= abs(x) < 1e15:
        text = format(Decimal(text), "f")
    return text


def duration(seconds: float) -> str:
    """250ms, 2.346s, 1m5s."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{number(seconds * 1000)}ms"
    if seconds < 60:
        return f"{number(float(seconds))}s"
    return format_duration(round(seconds))


def utc(ts: float | None) -> str:
    if ts is None:
        return EM_DASH
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def span(seconds: float) -> str:
    """How long something lasted: 4m 05s, 1h 02m 03s."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _with_unit(x: float, name: str) -> str:
    if name == "bytes" or name.endswith("_bytes"):
        return format_bytes(x)
    if "seconds" in name:
        return duration(x)
    if name.endswith(("_at", "_since")):
        return utc(x)
    if name == "percent" or name.endswith("_percent"):
        return f"{number(x)}%"
    if name == "ratio" or name.endswith("_ratio"):
        return f"{number(x * 100.0)}%"
    if name.endswith("_days"):
        return f"{number(x)} days"
    return number(x)


def _shown(value: Any, name: str, *, nested: bool) -> str:
    if value is None:
        return EM_DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _with_unit(value, name) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, Mapping):
        text = ", ".join(
            f"{visible(str(k))}: {_shown(v, str(k), nested=True)}" for k, v in value.items()
        )
        return f"{{{text}}}" if nested else text or EM_DASH
    if isinstance(value, list | tuple):
        text = ", ".join(_shown(v, name, nested=True) for v in value)
        return f"[{text}]" if nested else text or EM_DASH
    return visible(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
