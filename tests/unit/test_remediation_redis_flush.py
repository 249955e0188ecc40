"""The redis_flush remediation's config: flags, the URL (never echoed) and its file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.redis_flush import RedisFlushConfig, RedisFlushRemediation

SHARED_URL = os.environ.get("RUNBOOKD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DB = 14  # this module's own database on the shared server
PASSWORD = "fl-Secr3t-pw"


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


URL = with_db(SHARED_URL, DB)


def make(url: str = URL, **fields: Any) -> RedisFlushRemediation:
    data = {"type": "redis_flush", "url": url, **fields}
    return RedisFlushRemediation("flush-cache", RedisFlushConfig.model_validate(data))


@pytest.mark.parametrize("fields", [{"pattern": "x:*"}, {"flushdb": True}])
def test_always_destructive(fields: dict[str, Any]) -> None:
    remediation = make(**fields)

    assert remediation.destructive is True
    assert remediation.idempotent is True
    assert remediation.notifier is False


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "either pattern"),
        ({"pattern": "x:*", "flushdb": True}, "not both"),
        ({"flushdb": False}, "either pattern"),
        ({"pattern": ""}, "at least 1 character"),
        ({"pattern": "   "}, "pattern is blank"),
        ({"pattern": "x:*", "max_keys": 0}, "max_keys"),
        ({"pattern": "x:*", "batch": 0}, "batch"),
    ],
)
def test_config_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**fields)


def test_url_must_be_redis_and_is_never_echoed() -> None:
    with pytest.raises(ValidationError, match="not a valid Redis URL") as info:
        make(f"http://:{PASSWORD}@127.0.0.1/0", flushdb=True)
    # The daemon reports each error's message (never its input): that must not echo it.
    assert all(PASSWORD not in error["msg"] for error in info.value.errors())


def test_url_file(tmp_path: Path) -> None:
    url_file = tmp_path / "redis-url"
    url_file.write_text(f"redis://:{PASSWORD}@cache:6380/3\n")
    config = RedisFlushConfig.model_validate(
        {"type": "redis_flush", "url_file": str(url_file), "flushdb": True}
    )

    assert config.url.get_secret_value() == f"redis://:{PASSWORD}@cache:6380/3"
    assert PASSWORD not in repr(config)
    assert config.deadline() == 30.0 + 5.0
    assert RedisFlushRemediation("f", config)._target == "cache:6380/3"


def test_registered() -> None:
    assert REMEDIATIONS.get("redis_flush") is RedisFlushRemediation
