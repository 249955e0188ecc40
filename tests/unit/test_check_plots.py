"""What the console plots of a check, on numbers: the ring of recent values (bounded, gaps for
runs without a value, reset when a reload changes what is plotted), the SVG drawn from it,
and the checks listing's query (parsed alike from a query string or a forwarded act)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest

from daemon.api.check_query import CheckQuery
from daemon.core.models import Observation, Status
from daemon.rules.expr import parse_condition
from daemon.runtime.observed import DURATION, HISTORY, Observed, Recent, plotted_values
from daemon.ui.spark import sparkline


def obs(check: str, values: dict[str, float], duration: float = 0.1) -> Observation:
    return Observation(check, Status.OK, values, ts=0.0, duration=duration)


def rule(when: str) -> SimpleNamespace:
    return SimpleNamespace(when=parse_condition(when))


def test_the_ring_keeps_the_last_values_oldest_first_and_no_more() -> None:
    recent = Recent()
    assert recent.values() == []
    for i in range(HISTORY + 7):
        recent.add(float(i))
    assert recent.values() == [float(i) for i in range(7, HISTORY + 7)]


def test_a_run_without_the_value_is_a_gap_not_a_zero() -> None:
    rules = {"hot": rule("db.connections > 90")}
    observed = Observed(lambda: None, lambda: rules)  # type: ignore[arg-type,return-value]
    observed.note(obs("db", {"connections": 40.0}))
    observed.note(obs("db", {}))  # the query failed: no value
    observed.note(obs("db", {"connections": math.nan}))
    observed.note(obs("db", {"connections": 42.0}))
    assert observed.plotted("db") == "connections"
    assert observed.recent("db") == [40.0, None, None, 42.0]


def test_a_check_no_rule_watches_plots_its_duration_and_a_reload_restarts_a_changed_plot() -> None:
    rules: dict[str, SimpleNamespace] = {}
    observed = Observed(lambda: None, lambda: rules)  # type: ignore[arg-type,return-value]
    observed.note(obs("web", {"up": 1.0}, duration=0.25))
    assert observed.plotted("web") == DURATION
    assert observed.recent("web") == [0.25]
    rules = {"b_down": rule("web.up < 1"), "a_slow": rule("web.latency_seconds > 2")}
    assert plotted_values(rules) == {"web": "latency_seconds"}  # the first rule by name
    observed.note(obs("web", {"up": 1.0, "latency_seconds": 0.3}))
    assert observed.recent("web") == [0.3]  # another value: it starts anew
    rules = {"a_slow": rule("web.latency_seconds > 3")}
    observed.note(obs("web", {"up": 0.0, "latency_seconds": 0.4}))
    assert observed.recent("web") == [0.3, 0.4]  # the same value: the plot goes on
    observed.forget(lambda name: name != "web")
    assert observed.recent("web") == []
    assert observed.latest("web") is None


def test_the_sparkline_breaks_at_gaps_and_dots_lone_points() -> None:
    svg = str(sparkline([1.0, 2.0, None, 3.0, None, 4.0, 5.0], "connections"))
    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 1
    points = re.findall(r'points="([^"]+)"', svg)
    ys = [float(p.split(",")[1]) for p in points[0].split()]
    assert ys[0] > ys[1]  # a higher value is drawn higher up (SVG's y grows downwards)
    assert "connections: 1 to 5, last 7 runs" in svg


def test_a_flat_or_empty_history() -> None:
    assert str(sparkline([], "x")) == ""
    assert str(sparkline([None, None], "x")) == ""
    flat = str(sparkline([2.0, 2.0, 2.0], "x"))
    assert re.findall(r"[\d.]+,([\d.]+)", flat) == ["9.0"] * 3  # mid-height


def test_a_label_with_markup_is_escaped() -> None:
    assert "<b>" not in str(sparkline([1.0, 2.0], "<b>x</b>"))


def test_the_query_reads_strings_and_json_alike() -> None:
    from_string = CheckQuery.from_args({"limit": "5", "offset": "10", "history": "true"})
    from_json = CheckQuery.from_args({"limit": 5, "offset": 10, "history": True})
    assert from_string == from_json == CheckQuery(limit=5, offset=10, history=True)
    assert CheckQuery.from_args(from_json.to_args()) == from_json  # forwarded as JSON


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"limit": True}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": "1.5"}, "offset"),
        ({"history": 1}, "history"),
        ({"match": 3}, "match"),
        ({"status": "down"}, "status"),
        ({"order": "worst"}, "order"),
    ],
)
def test_a_bad_query_names_its_field(args: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        CheckQuery.from_args(args)
