"""The `prometheus` check's registration, value names and config validation."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from checks.base import CHECKS
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig, value_name
from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError

# --- config --------------------------------------------------------------------------------


def test_registered_and_value_names() -> None:
    assert CHECKS.get("prometheus") is PrometheusCheck
    base = {"type": "prometheus", "url": "http://127.0.0.1:9090", "query": " up "}
    config = PrometheusCheckConfig.model_validate(base)
    assert config.query == "up"
    assert config.max_series == 100
    assert config.value_names() == frozenset({"value", "series"})
    renamed = PrometheusCheckConfig.model_validate({**base, "value": "errors"})
    assert renamed.value_names() == frozenset({"errors", "series"})
    # Label-keyed names come from the data: the loader cannot check rules against them.
    assert PrometheusCheckConfig.model_validate({**base, "label": "instance"}).value_names() is None


@pytest.mark.parametrize(
    ("label_value", "name"),
    [
        ("kitchen", "kitchen"),
        ("living-room", "living_room"),
        ("10.0.0.1:9100", "_10_0_0_1_9100"),
        ("Ünïcode", "_n_code"),
    ],
)
def test_value_name(label_value: str, name: str) -> None:
    assert value_name(label_value) == name


def test_rules_on_label_keyed_values_load() -> None:
    text = """\
checks:
  temps: {type: prometheus, url: "http://127.0.0.1:9090", query: app_temperature, label: room}
  total: {type: prometheus, url: "http://127.0.0.1:9090", query: sum(app_temperature)}
rules:
  hot_kitchen:
    when: temps.kitchen > 30
  few_rooms:
    when: total.series < 2
"""
    config = load_config_text(text, "c.yaml")
    assert set(config.checks) == {"temps", "total"}
    with pytest.raises(ConfigError, match="check 'total' has no value 'kitchen'"):
        load_config_text(text.replace("temps.kitchen", "total.kitchen"), "c.yaml")


AUTH_FIELDS = {"username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"basic_auth": AUTH_FIELDS, "token": "t"}, "give one of basic_auth, token or an Auth"),
        ({"token": "t", "headers": {"authorization": "x"}}, "give one of basic_auth, token"),
        ({"token": "t", "token_file": "/x"}, "give token or token_file, not both"),
        ({"basic_auth": {"username": "u"}}, "basic_auth.password"),
        ({"basic_auth": {"username": "a:b", "password": "p"}}, "should match pattern"),
        ({"url": "ftp://prometheus:9090"}, "not an http"),
        ({"url": "prometheus:9090"}, "not an http"),
        ({"query": "  "}, "at least 1 character"),
        ({"label": "room-name"}, "should match pattern"),
        ({"value": "1st"}, "should match pattern"),
        ({"value": "series"}, "is the series count"),
        ({"max_series": 0}, "greater than or equal to 1"),
        ({"lable": "room"}, "Extra inputs are not permitted"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    data = {"type": "prometheus", "url": "http://127.0.0.1:9090", "query": "up", **fields}
    with pytest.raises(pydantic.ValidationError, match=message):
        PrometheusCheckConfig.model_validate(data)


def test_secrets_are_not_shown() -> None:
    data = {"basic_auth": {"username": "u", "password": "hunter2"}}
    config = PrometheusCheckConfig.model_validate(
        {"type": "prometheus", "url": "http://127.0.0.1:9090", "query": "up", **data}
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in json.dumps(config.model_dump(mode="json"))
