"""The `nagios` check's parsing of plugin output and perfdata, its config, and that it never
uses a shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest

from checks.base import CHECKS
from checks.nagios import (
    NagiosCheck,
    NagiosCheckConfig,
    PerfDatum,
    parse_output,
    parse_perfdata,
    value_name,
)

MB = 1024.0 * 1024.0


# --- the perfdata parser ------------------------------------------------------------------


def test_parse_units_thresholds_and_labels() -> None:
    items, bad = parse_perfdata("'time'=12ms;100;200;0; size=2MB load=0.5;1;2 hits=42c idle=97%")
    assert bad == []
    assert items == [
        PerfDatum("time", 0.012, "ms", "100", "200", "0", ""),
        PerfDatum("size", 2 * MB, "MB"),
        PerfDatum("load", 0.5, "", "1", "2"),
        PerfDatum("hits", 42.0, "c"),  # a counter stays a count
        PerfDatum("idle", 97.0, "%"),  # a percentage stays a percentage
    ]


@pytest.mark.parametrize(
    ("text", "label", "value"),
    [
        ("'disk usage on /'=5GB;;;;", "disk usage on /", 5 * 1024.0**3),
        ("'it''s here'=1", "it's here", 1.0),
        ("'a=b'=2", "a=b", 2.0),
        ("'''quoted'''=3", "'quoted'", 3.0),
        ("temp=-12.5", "temp", -12.5),
        ("rate=1.5e3", "rate", 1500.0),
        ("tiny=2.5E-3s", "tiny", 0.0025),
        ("plus=+4", "plus", 4.0),
        ("frac=.5", "frac", 0.5),
        ("wait=250us", "wait", 0.00025),
        ("mem=1KB", "mem", 1024.0),
        ("mem=3KiB", "mem", 3072.0),
        ("disk=1TB", "disk", 1024.0**4),
        ("raw=7B", "raw", 7.0),
        ("odd=3packets", "odd", 3.0),  # a unit we do not know passes through unchanged
        ("bare=5;;;;", "bare", 5.0),  # empty thresholds
        ("extra=5;1;2;3;4;5", "extra", 5.0),  # more fields than the format: value still good
    ],
)
def test_parse_tricky_items(text: str, label: str, value: float) -> None:
    items, bad = parse_perfdata(text)
    assert bad == []
    assert [item.label for item in items] == [label]
    assert items[0].value == pytest.approx(value)


def test_malformed_items_are_skipped_and_named() -> None:
    text = "good=1 bad=abc ;;; =5 'unclosed=2 ''=3 nan=nan empty= also=2.5s"
    items, bad = parse_perfdata(text)
    assert [(item.label, item.value) for item in items] == [("good", 1.0), ("also", 2.5)]
    assert bad == ["bad=abc", ";;;", "=5", "'unclosed=2", "''=3", "nan=nan", "empty="]


def test_numbers_beyond_a_float_are_malformed() -> None:
    # 1e999 parses as infinity (and 1e999 x 1024 too): no value, not an infinite one.
    items, bad = parse_perfdata("huge=1e999 big=1e308TB ok=1e3")
    assert [(item.label, item.value) for item in items] == [("ok", 1000.0)]
    assert bad == ["huge=1e999", "big=1e308TB"]


def test_undetermined_value_is_skipped_quietly() -> None:
    assert parse_perfdata("a=U;1;2 b=1") == ([PerfDatum("b", 1.0)], [])


def test_value_names() -> None:
    assert value_name("Disk Usage /var") == "disk_usage__var"
    assert value_name("/") == "_"
    assert value_name("1min") == "_1min"  # a rule's value name cannot start with a digit
    assert value_name("load-avg.1") == "load_avg_1"


def test_output_with_long_text_and_more_perfdata() -> None:
    output = parse_output("DISK OK - fine | a=1\nline one\nline two | b=2\nc=3s\n")
    assert output.text == "DISK OK - fine"
    assert output.long_text == "line one\nline two"
    assert [item.label for item in output.perfdata] == ["a", "b", "c"]
    assert parse_output("no perfdata at all\n").perfdata == []


def test_registered_and_config() -> None:
    assert CHECKS.get("nagios") is NagiosCheck
    config = NagiosCheckConfig.model_validate({"type": "nagios", "argv": ["/bin/true"]})
    assert config.value_names() is None  # the plugin decides its perfdata labels


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"argv": []}, "at least 1 item"),
        ({"argv": "check_disk -w 10%"}, "valid list"),
        ({"argv": ["/bin/true", "a\0b"]}, "NUL"),
        ({"argv": ["/bin/true"], "env": {"RUNBOOKD_TOKEN": "x"}}, "set by runbookd"),
        ({"argv": ["/bin/true"], "env": {"A=B": "x"}}, "invalid environment"),
        ({"argv": ["/bin/true"], "shell": True}, "Extra inputs"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        NagiosCheckConfig.model_validate({"type": "nagios", **fields})


def test_runs_without_a_shell() -> None:
    for module in ("checks.nagios", "daemon.clients.processes"):
        source = Path(sys.modules[module].__file__ or "").read_text()
        assert "create_subprocess_shell" not in source
        assert "shell=True" not in source
