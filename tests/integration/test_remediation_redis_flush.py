"""The redis_flush remediation against real Redis servers.

The shared test Redis is used in database 14 only, emptied before and after each test;
database 0 is never written. Command counts and authentication are checked on a private
redis-server, whose INFO commandstats no other test can disturb.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from remediations.base import RemediationContext
from remediations.redis_flush import RedisFlushConfig, RedisFlushRemediation
from tests.fakes import make_incident
from tests.services import missing
from tests.utils import free_port

SHARED_URL = os.environ.get("RUNBOOKD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DB = 14  # this module's own database on the shared server
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PASSWORD = "fl-Secr3t-pw"
POLL = 0.02
POLL_LIMIT = 10.0


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


URL = with_db(SHARED_URL, DB)
_SHARED = urlsplit(URL)
TARGET = f"{_SHARED.hostname or 'localhost'}:{_SHARED.port or 6379}/{DB}"


def make(url: str = URL, **fields: Any) -> RedisFlushRemediation:
    data = {"type": "redis_flush", "url": url, **fields}
    return RedisFlushRemediation("flush-cache", RedisFlushConfig.model_validate(data))


@pytest.fixture
async def redis_db() -> AsyncIterator[Redis]:
    """A client on database 14 of the shared Redis, emptied before and after the test."""
    client = Redis.from_url(URL, decode_responses=True)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        missing(f"Redis not reachable at RUNBOOKD_TEST_REDIS_URL: {exc}")
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


async def fill(client: Redis, prefix: str, count: int) -> list[str]:
    """`count` keys of mixed types (UNLINK takes any type)."""
    names = [f"{prefix}{i}" for i in range(count)]
    async with client.pipeline(transaction=False) as pipe:
        for i, name in enumerate(names):
            if i % 3 == 0:
                pipe.set(name, "v")
            elif i % 3 == 1:
                pipe.hset(name, "field", "v")
            else:
                pipe.rpush(name, "a", "b")
        await pipe.execute()
    return names


async def keys_in(client: Redis) -> set[str]:
    return {key async for key in client.scan_iter(count=1000)}


# --- pattern ------------------------------------------------------------------------------


async def test_pattern_deletes_only_matching_keys(ctx: RemediationContext, redis_db: Redis) -> None:
    await fill(redis_db, "session:", 40)
    others = set(await fill(redis_db, "user:", 10)) | set(await fill(redis_db, "sessions", 3))

    result = await make(pattern="session:*", batch=7).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert await keys_in(redis_db) == others
    assert result.data == {
        "mode": "pattern",
        "target": TARGET,
        "pattern": "session:*",
        "deleted": 40,
        "scanned": 40,
        "limited": False,
        "max_keys": 100_000,
    }
    assert result.detail == (f"deleted 40 keys matching 'session:*' on {TARGET} (scanned 40)")


async def test_glob_classes_are_redis_globs(ctx: RemediationContext, redis_db: Redis) -> None:
    await redis_db.mset({"cache:1": "a", "cache:22": "b", "cache:x": "c", "cache:": "d"})

    result = await make(pattern="cache:[0-9]*").execute(ctx, make_incident())

    assert result.ok, result.detail
    assert await keys_in(redis_db) == {"cache:x", "cache:"}
    assert result.data["deleted"] == 2


async def test_max_keys_bounds_a_run_and_says_so(ctx: RemediationContext, redis_db: Redis) -> None:
    await fill(redis_db, "tmp:", 50)

    first = await make(pattern="tmp:*", max_keys=20, batch=7).execute(ctx, make_incident())

    assert first.ok, first.detail
    assert (first.data["deleted"], first.data["limited"]) == (20, True)
    assert first.data["scanned"] >= 20
    assert first.detail.endswith("; stopped at max_keys 20, more may remain")
    assert len(await keys_in(redis_db)) == 30

    # Idempotent: running again carries on where the bound stopped it.
    second = await make(pattern="tmp:*", max_keys=100).execute(ctx, make_incident())

    assert (second.data["deleted"], second.data["limited"]) == (30, False)
    assert await keys_in(redis_db) == set()


async def test_a_bound_that_is_not_reached_is_not_reported(
    ctx: RemediationContext, redis_db: Redis
) -> None:
    await fill(redis_db, "tmp:", 20)

    result = await make(pattern="tmp:*", max_keys=20, batch=1000).execute(ctx, make_incident())

    assert (result.data["deleted"], result.data["limited"]) == (20, False)


async def test_nothing_matching_is_fine(ctx: RemediationContext, redis_db: Redis) -> None:
    await redis_db.set("keep", "1")

    result = await make(pattern="nothing:*").execute(ctx, make_incident())

    assert result.ok
    assert (result.data["deleted"], result.data["scanned"]) == (0, 0)
    assert await redis_db.get("keep") == "1"


# --- flushdb ------------------------------------------------------------------------------


async def test_flushdb_empties_the_database(ctx: RemediationContext, redis_db: Redis) -> None:
    await fill(redis_db, "any:", 25)

    result = await make(flushdb=True).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail == f"flushed {TARGET} (FLUSHDB ASYNC, 25 keys)"
    assert result.data == {
        "mode": "flushdb",
        "target": TARGET,
        "deleted": 25,
        "scanned": 0,
    }
    assert await redis_db.dbsize() == 0


# --- on a private server: which commands, other databases, authentication ----------------


class PrivateRedis:
    """A throwaway redis-server on a free loopback port, persisting nothing."""

    def __init__(self, workdir: Path, *args: str) -> None:
        if not os.path.exists(REDIS_SERVER):
            missing(f"{REDIS_SERVER} not found")
        self.port = free_port()
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, db: int, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    async def client(self, db: int, password: str | None = None) -> Redis:
        """A client once the server answers (it starts in the background), bounded."""
        client = Redis.from_url(self.url(db, password), decode_responses=True)
        deadline = time.monotonic() + POLL_LIMIT
        while True:
            try:
                await client.ping()
                return client
            except (RedisError, OSError):
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    await client.aclose()
                    pytest.fail("private redis-server did not start")
                await asyncio.sleep(POLL)

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def private_redis_with_password(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, "--requirepass", PASSWORD)
    yield server
    server.stop()


async def command_calls(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


async def test_scan_and_unlink_in_batches_never_keys(
    ctx: RemediationContext, private_redis: PrivateRedis
) -> None:
    client = await private_redis.client(DB)
    try:
        await fill(client, "s:", 45)
        await client.config_resetstat()

        result = await make(private_redis.url(DB), pattern="s:*", batch=10).execute(
            ctx, make_incident()
        )
        calls = await command_calls(client)
    finally:
        await client.aclose()

    assert result.ok, result.detail
    assert result.data["deleted"] == 45
    assert "keys" not in calls
    assert "del" not in calls
    assert calls["scan"] >= 1
    # At most `batch` keys per UNLINK (a SCAN reply may hold more than COUNT asked for).
    assert calls["unlink"] >= 5


async def test_flushdb_leaves_other_databases_alone(
    ctx: RemediationContext, private_redis: PrivateRedis
) -> None:
    target, other = await private_redis.client(DB), await private_redis.client(0)
    try:
        await fill(target, "t:", 10)
        await fill(other, "kept:", 10)

        result = await make(private_redis.url(DB), flushdb=True).execute(ctx, make_incident())

        assert result.ok, result.detail
        assert await target.dbsize() == 0
        assert await other.dbsize() == 10
        assert "flushdb" in await command_calls(other)
    finally:
        await target.aclose()
        await other.aclose()


async def test_the_right_password_works_and_is_never_reported(
    ctx: RemediationContext, private_redis_with_password: PrivateRedis
) -> None:
    server = private_redis_with_password
    client = await server.client(DB, PASSWORD)
    try:
        await fill(client, "p:", 5)
        result = await make(server.url(DB, PASSWORD), pattern="p:*").execute(ctx, make_incident())
    finally:
        await client.aclose()

    assert result.ok, result.detail
    assert result.data["deleted"] == 5
    assert PASSWORD not in repr(result)


async def test_missing_password_is_not_recoverable(
    ctx: RemediationContext, private_redis_with_password: PrivateRedis
) -> None:
    server = private_redis_with_password
    await (await server.client(0, PASSWORD)).aclose()  # started

    result = await make(server.url(DB), pattern="p:*").execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == (
        f"deleting keys matching 'p:*' on 127.0.0.1:{server.port}/{DB} failed: "
        "authentication required (0 deleted before)"
    )


# --- failures on the shared server or nowhere ---------------------------------------------


async def test_wrong_password_is_not_recoverable_and_never_reported(
    ctx: RemediationContext, redis_db: Redis
) -> None:
    url = f"redis://nobody:{PASSWORD}@{TARGET}"
    await redis_db.set("keep", "1")

    result = await make(url, flushdb=True).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert "authentication failed" in result.detail
    assert PASSWORD not in repr(result)
    assert await redis_db.get("keep") == "1"


async def test_refused_connection_is_recoverable(ctx: RemediationContext) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/{DB}"

    result = await make(url, pattern="x:*").execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail.endswith("failed: connection refused (0 deleted before)")
    assert result.data["deleted"] == 0
    assert PASSWORD not in repr(result)


async def test_a_server_that_never_answers_times_out_recoverably(
    ctx: RemediationContext,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept and say nothing, until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        remediation = make(f"redis://127.0.0.1:{port}/{DB}", pattern="x:*", timeout="200ms")
        outcome = await remediation.execute(ctx, make_incident())
    finally:
        server.close()
        await server.wait_closed()

    assert (outcome.ok, outcome.recoverable) == (False, True)
    assert "timeout after 0.2s" in outcome.detail
