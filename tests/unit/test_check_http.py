"""The `http` check's registration and config validation."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from checks.base import CHECKS
from checks.http import HttpCheck, HttpCheckConfig


def test_registered_and_value_names() -> None:
    assert CHECKS.get("http") is HttpCheck
    config = HttpCheckConfig.model_validate({"type": "http", "url": "https://example.com/"})
    assert config.value_names() == {"up", "latency_seconds", "status_code"}
    assert config.expect_status == (200,)
    assert config.method == "GET"
    versioned = HttpCheckConfig.model_validate(
        {"type": "http", "url": "https://example.com/api/version", "values": {"build": "b.n"}}
    )
    assert versioned.value_names() == {"up", "latency_seconds", "status_code", "build"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://example.com/"}, "not an http"),
        ({"url": "example.com/health"}, "not an http"),
        ({"url": "http://"}, "not an http"),
        ({"method": "DELETE"}, "method"),
        ({"expect_status": ["6xx"]}, "not an HTTP status"),
        ({"expect_status": []}, "at least 1 item"),
        ({"expect_json": {"checks..db": "up"}}, "not a JSON path"),
        ({"method": "HEAD", "expect_body": "ok"}, "HEAD response has no body"),
        ({"headers": {"X-A": "1\r\nX-B: 2"}}, "line breaks"),
        ({"max_latency": "fast"}, "not a duration"),
        ({"expected_status": [200]}, "Extra inputs are not permitted"),
        ({"values": {"up": "build"}}, "not a name a value can have"),
        ({"values": {"build no": "build"}}, "not a name a value can have"),
        ({"values": {"build": "a..b"}}, "not a JSON path"),
        ({"method": "HEAD", "values": {"build": "build"}}, "HEAD response has no body"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    data = {"type": "http", "url": "http://127.0.0.1:8080/healthz", **fields}
    with pytest.raises(pydantic.ValidationError, match=message):
        HttpCheckConfig.model_validate(data)
