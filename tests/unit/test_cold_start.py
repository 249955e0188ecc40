"""Redis URLs are read the way redis-py reads them (daemon/clients/redis.py parses them without
importing redis-py, to keep a start cheap)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

from daemon.clients.redis import URL_QUERY_PARSERS, parse_redis_url

# --- the Redis URL, read without redis-py ------------------------------------------------------

REDIS_URLS = [
    "redis://127.0.0.1:6379/0",
    "redis://cache",
    "rediss://cache:6380",
    "redis://:pw@cache:6379/2",
    "redis://user@cache/1",
    "redis://us%40er:p%40ss%2Fw@cache/3",
    "redis://[::1]:6379/4",
    "redis://cache/notanumber",
    "redis://cache/0/1",
    "redis://cache/0;params",
    "redis://cache/0?db=5",
    "redis://cache/0?password=a%2520b&username=u",
    "redis://cache/0?socket_timeout=1.5&socket_connect_timeout=2&max_connections=3",
    "redis://cache/0?socket_keepalive=no&retry_on_timeout=yes&ssl_check_hostname=0",
    "redis://cache/0?protocol=3&health_check_interval=10&timeout=4&ssl_min_version=2",
    "rediss://cache/0?ssl_include_verify_flags=[VERIFY_X509_STRICT,VERIFY_X509_PARTIAL_CHAIN]",
    "redis://cache/0?client_name=x&db=1&db=2",
    "unix:///run/redis.sock",
    "unix:///run/redis.sock?db=1&password=pw",
    "unix://:pw@/run/redis%20dir/redis.sock",
    # refused
    "",
    "http://:pw@cache/0",
    "redis://:pw@cache:port/0",
    "redis://cache:70000/0",
    "redis://[::1/0",
    "redis://cache/0?db=x",
    "redis://cache/0?socket_timeout=soon",
    "redis://cache/0?protocol=3.5",
    "rediss://cache/0?ssl_exclude_verify_flags=VERIFY_NO_SUCH_FLAG",
    "redis://cache/0?retry_on_error=ConnectionError,TimeoutError",
    "redis://cache/0?retry_on_error=[BusyLoadingError]",
    "redis://cache/0?retry_on_error=NoSuchError",
    "redis://cache/0?retry_on_error=ConnectionError,",
    "rediss://cache/0?ssl_validate_ocsp=true&ssl_validate_ocsp_stapled=no",
]


def _parsed(parse: Any, url: str) -> dict[str, Any] | str:
    try:
        kwargs: dict[str, Any] = parse(url)
    except ValueError:
        return "refused"
    kwargs.pop("connection_class", None)
    return kwargs


@pytest.mark.parametrize("url", REDIS_URLS)
def test_redis_urls_read_as_redis_py_reads_them(url: str) -> None:
    assert _parsed(parse_redis_url, url) == _parsed(parse_url, url)


def test_every_option_redis_py_converts_is_converted() -> None:
    assert set(URL_QUERY_ARGUMENT_PARSERS) <= set(URL_QUERY_PARSERS)
