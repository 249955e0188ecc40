"""Redis connection settings shared by the `redis` check and the `redis_flush` remediation.

redis-py's URL syntax read with the standard library, so validating a config never imports
redis-py (tests/unit/test_cold_start.py holds the two to agreeing); the URL's password, to mask it
in what we report; and the expected failures of talking to Redis, imported on first use.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from pydantic import SecretStr


def _flag(value: str) -> bool | None:
    if value == "":
        return None
    return value.upper() not in ("0", "F", "FALSE", "N", "NO")


def _verify_flags(value: str) -> list[Any]:
    """`VERIFY_X509_STRICT, VERIFY_X509_PARTIAL_CHAIN`, brackets allowed."""
    flags = []
    for name in (part.strip() for part in value.replace("[", "").replace("]", "").split(",")):
        if not hasattr(ssl.VerifyFlags, name):
            raise ValueError(f"Invalid ssl verify flag: {name}")
        flags.append(getattr(ssl.VerifyFlags, name))
    return flags


def _retry_on_error(value: str) -> list[type[Exception]]:
    """`ConnectionError,TimeoutError`: redis-py's exception classes, imported only for a URL
    that names some."""
    from redis import exceptions

    classes = []
    for name in (part.strip() for part in value.replace("[", "").replace("]", "").split(",")):
        found = getattr(exceptions, name, None) if name else None
        if not (isinstance(found, type) and issubclass(found, Exception)):
            raise ValueError(f"Unknown redis exception {name!r}")
        classes.append(found)
    return classes


# The query options redis-py converts (redis.asyncio.connection.URL_QUERY_ARGUMENT_PARSERS);
# others are kept as text.
URL_QUERY_PARSERS: dict[str, Callable[[str], object]] = {
    "db": int,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_read_size": int,
    "socket_keepalive": _flag,
    "retry_on_timeout": _flag,
    "max_connections": int,
    "health_check_interval": int,
    "ssl_check_hostname": _flag,
    "ssl_include_verify_flags": _verify_flags,
    "ssl_exclude_verify_flags": _verify_flags,
    "ssl_min_version": int,
    "timeout": float,
    "protocol": int,
    "legacy_responses": _flag,
    "retry_on_error": _retry_on_error,
}


def parse_redis_url(url: str) -> dict[str, Any]:
    """redis-py's `parse_url` (redis.asyncio.connection), read with the standard library so
    config validation does not import redis-py: the same keys and values except
    `connection_class`, and a ValueError for every URL it refuses (tests/unit/test_cold_start.py
    holds the two to agreeing) and for those it takes but cannot use (no host, port 0, a
    negative database, a timeout that is not a positive number, protocol other than 2/3)."""
    parsed = urlparse(url)
    kwargs: dict[str, Any] = {}
    for name, values in parse_qs(parsed.query).items():
        parser = URL_QUERY_PARSERS.get(name)
        try:
            kwargs[name] = parser(values[0]) if parser else values[0]
        except (TypeError, ValueError):
            raise ValueError(f"Invalid value for '{name}' in connection URL.") from None
    if parsed.username:
        kwargs["username"] = unquote(parsed.username)
    if parsed.password:
        kwargs["password"] = unquote(parsed.password)
    if parsed.scheme == "unix":
        if parsed.path:
            kwargs["path"] = unquote(parsed.path)
    elif parsed.scheme in ("redis", "rediss"):
        if parsed.hostname:
            kwargs["host"] = unquote(parsed.hostname)
        if parsed.port:
            kwargs["port"] = int(parsed.port)
        # The path is the database number, unless `?db=` gave it.
        if parsed.path and "db" not in kwargs:
            with suppress(ValueError):
                kwargs["db"] = int(unquote(parsed.path).replace("/", ""))
    else:
        raise ValueError("Redis URL must specify one of the schemes redis://, rediss://, unix://")
    _check_usable(parsed.scheme, parsed.port, kwargs)
    return kwargs


_POSITIVE = ("socket_timeout", "socket_connect_timeout", "timeout", "max_connections")


def checked_redis_url(value: SecretStr) -> SecretStr:
    """A config validator: the URL parses, or the reason why not (never the URL itself, which
    may hold a password: parse_redis_url's messages do not quote it)."""
    try:
        parse_redis_url(value.get_secret_value())
    except ValueError as exc:
        raise ValueError(
            f"not a valid Redis URL: {exc} (use e.g. redis://127.0.0.1:6379/0)"
        ) from None
    return value


def url_passwords(url: str) -> set[str]:
    """The URL's password (userinfo or `?password=`) as written and as decoded; empty when
    there is none or the URL does not parse."""
    try:
        found = {urlsplit(url).password, parse_redis_url(url).get("password")}
    except ValueError:
        return set()
    return {s for p in found if isinstance(p, str) and p for s in (p, unquote(p))}


def _check_usable(scheme: str, port: int | None, kwargs: dict[str, Any]) -> None:
    """Refuse, beyond redis-py, what it takes but cannot connect with or would misread:
    found when the config is loaded, not on the first run."""
    if scheme == "unix" and "path" not in kwargs:
        raise ValueError("a unix:// Redis URL needs the socket's path")
    if scheme != "unix" and "host" not in kwargs:
        raise ValueError("a Redis URL needs a host")
    if port == 0:  # redis-py would quietly use 6379
        raise ValueError("the port must be within 1-65535")
    if kwargs.get("db", 0) < 0:
        raise ValueError("the database number must not be negative")
    for name in _POSITIVE:
        value = kwargs.get(name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"Invalid value for '{name}' in connection URL.")
    if kwargs.get("protocol", 2) not in (2, 3):
        raise ValueError("Invalid value for 'protocol' in connection URL.")


@functools.cache
def redis_errors() -> tuple[type[BaseException], ...]:
    """Every expected failure of talking to Redis; anything else is a bug and should surface."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)
