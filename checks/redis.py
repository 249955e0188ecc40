"""`redis` check: does Redis answer, how full is it, and is replication healthy?

One client (a small connection pool) per check, made in `start` and closed in `stop`; it
connects lazily, so Redis being down at startup is only reported by the runs.

Each run: one INFO (the default sections hold everything needed, and unlike a list of
sections it works on every Redis version) and one PING for the latency. Counters are
reported as totals and as the increase since the previous run (`*_delta`), which is what a
rule wants; a restarted server (new run_id, or a counter going down) starts from zero.

redis-py is imported on first use (by `start`), not with the module: the config model
registers without it, and its URL is checked by daemon.clients.redis, which reads redis-py's URL
syntax with the standard library (the redis_flush remediation uses it too).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult
from daemon.clients.redis import checked_redis_url, redis_errors, url_passwords
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.redaction import excerpt

if TYPE_CHECKING:
    from redis.asyncio import Redis

CLIENT_NAME = "runbookd"
MAX_REASON = 200
COUNTERS = ("evicted_keys", "rejected_connections")
VALUE_NAMES = frozenset(
    {
        "up",
        "latency_seconds",
        "used_memory_bytes",
        "maxmemory_bytes",
        "memory_ratio",
        "connected_clients",
        "blocked_clients",
        *COUNTERS,
        *(f"{name}_delta" for name in COUNTERS),
        "is_master",
        "master_link_up",
        "replication_lag_seconds",
        "connected_replicas",
    }
)


class RedisCheckConfig(CheckConfig):
    """One INFO and one PING per run: latency, memory against maxmemory, clients,
    evictions and rejected connections (totals and `*_delta`, the increase since the previous
    run), and the replication link. Redis not answering is CRITICAL with `up` 0."""

    # Errors must not show the input: the URL may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    example: ClassVar[str] = """
        checks:
          cache:
            type: redis
            url: redis://cache.internal:6379/0
            interval: 30s
        """

    type: Literal["redis"]
    url: SecretStr = Field(
        description="`redis://[user[:password]@]host:6379/0`, `rediss://` for TLS, "
        "`unix:///path?db=0`; a secret, since the URL may carry the password."
    )
    password: SecretStr | None = Field(
        None, description="The password, for a URL without one (not both)."
    )

    _redis_url = field_validator("url")(checked_redis_url)

    @model_validator(mode="after")
    def _one_password(self) -> RedisCheckConfig:
        # The URL's password would silently win over `password`.
        if self.password is not None and url_passwords(self.url.get_secret_value()):
            raise ValueError("give the password in url or in password, not both")
        return self

    def value_names(self) -> frozenset[str]:
        return VALUE_NAMES


# --- reading INFO -------------------------------------------------------------------------


def _number(info: Mapping[str, Any], key: str) -> float | None:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def info_values(info: Mapping[str, Any]) -> dict[str, float]:
    """The values INFO gives directly (everything but latency and the deltas)."""
    values: dict[str, float] = {}
    for key, name in (
        ("used_memory", "used_memory_bytes"),
        ("maxmemory", "maxmemory_bytes"),
        ("connected_clients", "connected_clients"),
        ("blocked_clients", "blocked_clients"),
        ("evicted_keys", "evicted_keys"),
        ("rejected_connections", "rejected_connections"),
    ):
        if (number := _number(info, key)) is not None:
            values[name] = number
    # maxmemory 0 means no limit: maxmemory_bytes says so, but there is no ratio to a limit.
    if values.get("maxmemory_bytes") and "used_memory_bytes" in values:
        values["memory_ratio"] = values["used_memory_bytes"] / values["maxmemory_bytes"]
    values |= _replication_values(info)
    return values


def _replication_values(info: Mapping[str, Any]) -> dict[str, float]:
    """Role and link, only as far as INFO tells them: a server without a role (a Sentinel)
    is neither a master nor a replica whose link is down."""
    values: dict[str, float] = {}
    role = info.get("role")
    if role == "master":
        values["is_master"] = 1.0
        if (replicas := _number(info, "connected_slaves")) is not None:
            values["connected_replicas"] = replicas
        return values
    if role not in ("slave", "replica"):
        return values
    values["is_master"] = 0.0
    link = info.get("master_link_status")
    if link is not None:
        values["master_link_up"] = 1.0 if link == "up" else 0.0
        # Seconds since the master last spoke: an idle master only pings every
        # repl-ping-replica-period (10s by default), so rules want a limit above that.
        # -1 until the first exchange; meaningless while the link is down.
        last_io = _number(info, "master_last_io_seconds_ago")
        if link == "up" and last_io is not None and last_io >= 0:
            values["replication_lag_seconds"] = last_io
    return values


def counter_increase(current: float, previous: float) -> float:
    """After a reset (a restart) the increase is the whole value, as in Prometheus."""
    return current - previous if current >= previous else current


class CounterDeltas:
    """Increases of counters between runs, per server instance (INFO's run_id)."""

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: tuple[str, dict[str, float]] | None = None

    def update(self, run_id: str, counters: Mapping[str, float]) -> dict[str, float]:
        """`<name>_delta` for each counter; nothing on the first call."""
        previous, self._previous = self._previous, (run_id, dict(counters))
        if previous is None:
            return {}
        if previous[0] != run_id:  # a restarted (or another) server, counting from zero
            return {f"{name}_delta": current for name, current in counters.items()}
        # A counter the previous INFO lacked has no known increase: left out, not all of it.
        before = previous[1]
        return {
            f"{name}_delta": counter_increase(current, before[name])
            for name, current in counters.items()
            if name in before
        }


# --- failures -----------------------------------------------------------------------------


def _os_error(exc: BaseException) -> OSError | None:
    """redis-py raises its own ConnectionError, with the socket's error as the context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe_failure(exc: BaseException, timeout: float) -> str:
    from redis.exceptions import AuthenticationError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, AuthenticationError):
        return "authentication failed"
    os_error = _os_error(exc)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if os_error is not None and os_error.strerror:
        return f"cannot connect: {os_error.strerror}"
    return str(exc) or type(exc).__name__


# --- the check ----------------------------------------------------------------------------


@CHECKS.register
class RedisCheck:
    type: ClassVar[str] = "redis"
    Config: ClassVar[builtins.type[CheckConfig]] = RedisCheckConfig
    bounded: ClassVar[bool] = False

    def __init__(self, name: str, config: RedisCheckConfig) -> None:
        self.name = name
        self.config = config
        self._timeout_s = request_timeout(config.timeout)
        secrets = url_passwords(config.url.get_secret_value())
        if config.password:
            secrets.add(config.password.get_secret_value())
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)
        self._client: Redis | None = None
        self._deltas = CounterDeltas()

    async def start(self, ctx: CheckContext) -> None:
        self._open()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _open(self) -> Redis:
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError

            password = self.config.password
            self._client = Redis.from_url(
                self.config.url.get_secret_value(),
                password=password.get_secret_value() if password else None,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                # A kept connection the server has closed since (a restart, an idle timeout)
                # fails once; that says nothing about the server now. Timeouts: no retry.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                client_name=CLIENT_NAME,
                max_connections=2,
            )
        return self._client

    async def run(self, ctx: CheckContext) -> CheckResult:
        try:
            async with asyncio.timeout(self._timeout_s):
                client = self._open()
                info = await client.info()
                start = time.perf_counter()  # after INFO, so connecting is not in the latency
                await client.ping()
                latency = time.perf_counter() - start
        except redis_errors() as exc:
            return self._failed(exc)
        values = {"up": 1.0, "latency_seconds": latency, **info_values(info)}
        counters = {name: values[name] for name in COUNTERS if name in values}
        values |= self._deltas.update(str(info.get("run_id", "")), counters)
        if values.get("master_link_up") == 0.0:
            down = _number(info, "master_link_down_since_seconds")
            since = f" for {down:g}s" if down is not None and down >= 0 else ""
            return CheckResult(Status.WARN, values, f"replica: master link down{since}")
        return CheckResult(Status.OK, values)

    def _failed(self, exc: BaseException) -> CheckResult:
        from redis.exceptions import AuthenticationError, NoPermissionError

        if isinstance(exc, NoPermissionError):  # an ACL without INFO or PING: cannot measure
            return CheckResult.unknown(self._redact(f"no permission: {exc}"))
        reason = self._redact(describe_failure(exc, self._timeout_s))
        if isinstance(exc, AuthenticationError) and not self._secrets:
            reason += " (no password configured)"
        return CheckResult(Status.CRITICAL, {"up": 0.0}, reason)

    def _redact(self, text: str) -> str:
        return excerpt(text, MAX_REASON, self._secrets, "...")
