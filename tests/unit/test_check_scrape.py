"""The `scrape` check's histogram quantiles, registration and config validation."""

from __future__ import annotations

import math
from typing import Any

import pydantic
import pytest

from checks.base import CHECKS
from checks.scrape import ScrapeCheck, ScrapeCheckConfig, histogram_quantile


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 5.0, 1.0: 10.0}) is None  # no +Inf bucket
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None  # no observations
    assert histogram_quantile(0.5, {0.0: 8.0, 1.0: 9.0, math.inf: 10.0}) == 0.0
    # Cumulative counts that dip (summed across resets) are made monotonic first.
    assert histogram_quantile(0.5, {0.1: 6.0, 0.2: 5.0, math.inf: 10.0}) == pytest.approx(
        0.1 * 5 / 6
    )


def test_registered_and_value_names() -> None:
    assert CHECKS.get("scrape") is ScrapeCheck
    data = {"type": "scrape", "url": "http://127.0.0.1:8080/metrics"}
    config = ScrapeCheckConfig.model_validate(data)
    assert config.value_names() == {"up", "requests", "request_rate", "error_ratio", "p95_seconds"}
    assert config.window_seconds == config.interval == 30.0
    config = ScrapeCheckConfig.model_validate(
        {**data, "quantiles": [0.5, 0.99, 0.999], "window": "5m"}
    )
    assert {"p50_seconds", "p99_seconds", "p99_9_seconds"} <= config.value_names()
    assert config.window_seconds == 300.0
    config = ScrapeCheckConfig.model_validate({**data, "latency_metric": None})
    assert config.value_names() == {"up", "requests", "request_rate", "error_ratio"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "localhost:9100/metrics"}, "not an http"),
        ({"quantiles": [1.5]}, "strictly between 0 and 1"),
        ({"quantiles": [0]}, "strictly between 0 and 1"),
        ({"quantiles": [0.95, 0.950]}, "duplicate value names"),
        ({"requests_metric": "http-requests"}, "should match pattern"),
        ({"error_statuses": ["server errors"]}, "not an HTTP status"),
        ({"min_requests": 0}, "greater than or equal to 1"),
        ({"window": "0s"}, "greater than 0"),
        ({"match_labels": {"job-name": "web"}}, "should match pattern"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    data = {"type": "scrape", "url": "http://127.0.0.1:8080/metrics", **fields}
    with pytest.raises(pydantic.ValidationError, match=message):
        ScrapeCheckConfig.model_validate(data)
