"""The one formatter of recorded values (daemon/core/values.py) the console's incident timeline,
its record pages and the Markdown incident report share: no Python reprs, units from names,
a rule's numbers in the unit of what it watched, controls escaped."""

from __future__ import annotations

import pytest

from daemon.core import values
from daemon.core.values import EM_DASH, number, pairs, shown


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "yes"),
        (False, "no"),
        (None, EM_DASH),
        (0, "0"),
        (12345678901234567, "12345678901234567"),  # an int is a count: exact
        (0.1 + 0.2, "0.3"),
        (2 / 3, "0.6667"),
        (12345.678, "12350"),  # 4 significant digits, no exponent
        (1234.5, "1234"),
        (0.00001234, "0.00001234"),
        (-0.07312, "-0.07312"),
        (1e-9, "1e-09"),
        (3e20, "3e+20"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ("text", "text"),
        ("", ""),
    ],
)
def test_scalars_read_as_people_write_them(value: object, text: str) -> None:
    assert shown(value) == text


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("bytes", 52_428_800, "50.0 MiB"),
        ("backup_size_bytes", 1536, "1.5 KiB"),
        ("latency_seconds", 0.2345678, "234.6ms"),
        ("p95_seconds", 1.73456, "1.735s"),
        ("for_seconds", 300.0, "5m"),
        ("time_to_recover_seconds", 3725, "1h2m5s"),
        ("replication_lag_seconds", 0, "0s"),
        ("skew_seconds", -2.5, "-2.5s"),
        ("started_at", 0.0, "1970-01-01 00:00:00 UTC"),
        ("blind_since", 60, "1970-01-01 00:01:00 UTC"),
        ("cpu_percent", 85.04321, "85.04%"),
        ("error_ratio", 0.07, "7%"),
        ("connections_ratio", 0.123456, "12.35%"),
        ("retention_days", 7, "7 days"),
        ("up", 1.0, "1"),
        ("started_at", None, EM_DASH),  # unknown, never 1970
        ("cpu_percent", True, "yes"),
    ],
)
def test_units_come_from_the_values_name(name: str, value: object, text: str) -> None:
    assert shown(value, name) == text


def test_a_rules_numbers_take_the_unit_of_the_value_it_watched() -> None:
    trigger = {
        "check": "api",
        "value_name": "p95_seconds",
        "value": 1.8,
        "threshold": 1.5,
        "baseline": 1.0,
        "min_samples": 3,
    }
    assert pairs(trigger) == [
        ("baseline", "1s"),
        ("check", "api"),
        ("min_samples", "3"),
        ("threshold", "1.5s"),
        ("value", "1.8s"),
        ("value_name", "p95_seconds"),
    ]
    # A later entry (the resolution) names no unit: the incident's trigger gives it.
    resolved = {"value": 0.9, "limit": 1.5, "condition": "api.p95_seconds <= 1.5"}
    assert pairs(resolved, values.measure_of(trigger)) == [
        ("condition", "api.p95_seconds <= 1.5"),
        ("limit", "1.5s"),
        ("value", "900ms"),
    ]
    assert pairs(resolved) == [  # an alert's incident: no unit known
        ("condition", "api.p95_seconds <= 1.5"),
        ("limit", "1.5"),
        ("value", "0.9"),
    ]
    assert values.measure_of({"labels": {}}) is None
    assert values.measure_of({"value_name": 3}) is None


def test_objects_are_key_value_pairs_and_lists_their_items() -> None:
    labels = {"alertname": "HighErrors", "severity": "page", "firing": True, "age_seconds": 90}
    assert shown(labels) == "alertname: HighErrors, severity: page, firing: yes, age_seconds: 1m30s"
    assert shown([1.5, 2, None, True, "x"]) == f"1.5, 2, {EM_DASH}, yes, x"
    nested = {"a": {"b": [1, {"c": None}]}, "empty": {}, "none": []}
    assert shown(nested) == f"a: {{b: [1, {{c: {EM_DASH}}}]}}, empty: {{}}, none: []"
    assert shown({}) == EM_DASH
    assert shown([]) == EM_DASH
    assert "{'" not in shown(nested)  # never a Python repr
    assert "None" not in shown(nested)


def test_controls_and_direction_overrides_are_escaped_and_long_text_cut() -> None:
    assert shown("ok\x1b[31m red\u202egnp.exe") == "ok\\x1b[31m red\\u202egnp.exe"
    assert shown({"k\x07": "v\u2066"}) == "k\\x07: v\\u2066"
    assert shown("two\nlines") == "two\nlines"  # a page keeps lines; the report joins them
    long = shown("x" * 1000)
    assert long == "x" * values.MAX_TEXT + "…"
    assert len(shown(list(range(1000)))) == values.MAX_TEXT + 1


def test_durations_times_and_spans() -> None:
    assert values.duration(0.25) == "250ms"
    assert values.duration(2.34567) == "2.346s"
    assert values.duration(65) == "1m5s"
    assert values.utc(None) == EM_DASH
    assert values.span(3723) == "1h 02m 03s"
    assert values.span(-5) == "0m 00s"
    assert number(7) == "7"
