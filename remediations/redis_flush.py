"""`redis_flush`: delete the keys matching a glob pattern, or empty the whole database.

Always destructive: the pipeline waits for an operator's approval before it runs.

`pattern` walks the keyspace with SCAN and deletes each batch with UNLINK (the memory is
freed in the background), at most `max_keys` keys per run; KEYS is never used, since it
blocks Redis for as long as it takes to walk every key. `flushdb: true` sends FLUSHDB ASYNC
to the database of the URL. Running either twice leaves the same state, so a run that
stopped (timeout, bound reached) is simply run again.

One client per run, closed at the end: flushing is rare and must not keep connections.
redis-py is imported on first use (by `execute`), not with the module; the URL is read with
daemon.clients.redis, which needs no redis-py.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.clients.redis import checked_redis_url, parse_redis_url, redis_errors, url_passwords
from daemon.core.models import Incident, RemediationResult
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext

if TYPE_CHECKING:
    from redis.asyncio import Redis

CLIENT_NAME = "runbookd"
CLOSE_GRACE = 5.0
MAX_MESSAGE = 200


class RedisFlushConfig(RemediationConfig):
    """Deletes the keys matching `pattern` (SCAN, then UNLINK in batches; never KEYS), at most
    `max_keys` per run, or with `flushdb: true` empties the URL's database (FLUSHDB ASYNC).
    Running it again after it stopped part way (timeout, `max_keys`) carries on."""

    example: ClassVar[str] = """
        remediations:
          flush_sessions:
            type: redis_flush
            url: redis://cache.internal:6379/0
            pattern: "session:*"
        """

    type: Literal["redis_flush"]
    url: SecretStr = Field(
        description="`redis://[user[:password]@]host:6379/0`, `rediss://` for TLS, "
        "`unix:///path?db=0`; a secret, since it may carry the password. Its database number "
        "is the one flushed."
    )
    pattern: str | None = Field(
        None,
        min_length=1,
        description="A Redis glob (`session:*`, `cache:user:[0-9]*`): the keys to delete. "
        "Give this or `flushdb`.",
    )
    flushdb: bool = Field(
        False, description="true: the whole database goes (FLUSHDB ASYNC); not with `pattern`."
    )
    max_keys: int = Field(
        100_000,
        ge=1,
        description="At most this many keys are deleted per run; the result says when it "
        "stopped there.",
    )
    batch: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Keys asked of each SCAN and deleted by each UNLINK: small commands keep "
        "Redis responsive for everyone else.",
    )

    _redis_url = field_validator("url")(checked_redis_url)

    @model_validator(mode="after")
    def _one_mode(self) -> RedisFlushConfig:
        if (self.pattern is None) == (not self.flushdb):
            raise ValueError("give either pattern (keys to delete) or flushdb: true, not both")
        if self.pattern is not None and not self.pattern.strip():
            raise ValueError("pattern is blank")
        return self

    def deadline(self) -> float:
        # `timeout` bounds the work (see execute); closing the client may take a moment more.
        return self.timeout + CLOSE_GRACE


@dataclass(slots=True)
class Progress:
    """What a run did so far: reported whether it finished, failed or stopped early."""

    scanned: int = 0  # keys SCAN returned (a key may come back twice)
    unlinked: int = 0  # keys sent to UNLINK, counted against max_keys
    deleted: int = 0  # keys UNLINK removed
    limited: bool = False  # stopped at max_keys before the scan was complete


# --- failures -----------------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _os_error(exc: BaseException) -> OSError | None:
    """redis-py raises its own ConnectionError, with the socket's error as the context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short reason, and whether trying again later may help."""
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return f"timeout after {timeout:g}s", True
    if isinstance(exc, AuthenticationError):
        # NOAUTH: no password was sent; WRONGPASS and the like: a wrong user or password.
        # (redis-py 6+ gives the server's error code; older ones only the message.)
        required = getattr(exc, "status_code", None) == "NOAUTH" or "required" in str(exc)
        return ("authentication required" if required else "authentication failed"), False
    if isinstance(exc, NoPermissionError):
        return f"no permission: {_clip(str(exc))}", False
    if isinstance(exc, ResponseError):
        # A renamed command, a read-only replica: asking again gets the same answer.
        return f"refused: {_clip(str(exc))}", False
    os_error = _os_error(exc)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused", True
    if os_error is not None and os_error.strerror:
        return f"cannot connect: {os_error.strerror}", True
    if isinstance(exc, RedisConnectionError):  # also LOADING: the server is starting up
        return _clip(str(exc) or type(exc).__name__), True
    return _clip(str(exc) or type(exc).__name__), False


def describe_target(url: str) -> str:
    """host:port/db (or the socket path) for results: never the password."""
    try:
        parts = parse_redis_url(url)
    except ValueError:
        return "<invalid url>"
    db = parts.get("db", 0)
    if "path" in parts:
        return f"unix:{parts['path']}/{db}"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}/{db}"


# --- the remediation ----------------------------------------------------------------------


@REMEDIATIONS.register
class RedisFlushRemediation(Hooks):
    type: ClassVar[str] = "redis_flush"
    Config: ClassVar[builtins.type[RemediationConfig]] = RedisFlushConfig
    idempotent: bool = True
    # Deleted data is gone: the pipeline asks an operator first, whichever mode.
    destructive: bool = True
    notifier: bool = False

    def __init__(self, name: str, config: RedisFlushConfig) -> None:
        self.name = name
        self.config = config
        url = config.url.get_secret_value()
        self._secrets = sorted(url_passwords(url), key=len, reverse=True)
        self._target = describe_target(url)

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        config = self.config
        progress = Progress()
        client = self._client()
        try:
            # Bounded here rather than by the pipeline, so a run that stops says how far it got.
            async with asyncio.timeout(config.timeout):
                if config.flushdb:
                    await self._flushdb(client, progress)
                else:
                    await self._unlink_matching(client, progress)
        except redis_errors() as exc:
            reason, recoverable = describe_failure(exc, config.timeout)
            detail = f"{self._what()} failed: {reason} ({progress.deleted} deleted before)"
            return RemediationResult(False, self._redact(detail), recoverable, self._data(progress))
        finally:
            await self._close(client)
        return RemediationResult(True, self._done(progress), data=self._data(progress))

    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return Redis.from_url(
            self.config.url.get_secret_value(),
            socket_timeout=self.config.timeout,
            socket_connect_timeout=self.config.timeout,
            # One attempt per command: the pipeline and the next run are the retries.
            retry=Retry(NoBackoff(), 0),
            client_name=CLIENT_NAME,
            max_connections=1,
        )

    async def _unlink_matching(self, client: Redis, progress: Progress) -> None:
        config = self.config
        cursor = 0
        while True:
            cursor, keys = await client.scan(cursor, match=config.pattern, count=config.batch)
            progress.scanned += len(keys)
            take = keys[: config.max_keys - progress.unlinked]
            # COUNT is a hint: one SCAN reply may hold more keys than asked for.
            for start in range(0, len(take), config.batch):
                chunk = take[start : start + config.batch]
                progress.deleted += await client.unlink(*chunk)
                progress.unlinked += len(chunk)
            if len(take) < len(keys) or (progress.unlinked >= config.max_keys and cursor != 0):
                progress.limited = True  # the scan did not finish: matching keys may remain
                return
            if cursor == 0:
                return

    async def _flushdb(self, client: Redis, progress: Progress) -> None:
        # What FLUSHDB removes is not reported by Redis; DBSIZE just before is close to it.
        progress.deleted = await client.dbsize()
        await client.flushdb(asynchronous=True)

    async def _close(self, client: Redis) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await client.aclose()
        except redis_errors():
            pass  # the connection is dropped either way; nothing to tell

    def _what(self) -> str:
        if self.config.flushdb:
            return f"FLUSHDB ASYNC on {self._target}"
        return f"deleting keys matching {self.config.pattern!r} on {self._target}"

    def _done(self, progress: Progress) -> str:
        config = self.config
        if config.flushdb:
            return f"flushed {self._target} (FLUSHDB ASYNC, {progress.deleted} keys)"
        detail = (
            f"deleted {progress.deleted} keys matching {config.pattern!r} on {self._target} "
            f"(scanned {progress.scanned})"
        )
        if progress.limited:
            detail += f"; stopped at max_keys {config.max_keys}, more may remain"
        return self._redact(detail)

    def _data(self, progress: Progress) -> dict[str, Any]:
        if self.config.flushdb:
            # Nothing is scanned: FLUSHDB empties the database in one command.
            return {
                "mode": "flushdb",
                "target": self._target,
                "deleted": progress.deleted,
                "scanned": 0,
            }
        return {
            "mode": "pattern",
            "target": self._target,
            "pattern": self.config.pattern,
            "deleted": progress.deleted,
            "scanned": progress.scanned,
            "limited": progress.limited,
            "max_keys": self.config.max_keys,
        }

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
