"""The redis check against real servers: the shared test Redis (read only: the check only
runs INFO and PING) and throwaway redis-servers for passwords, memory limits, evictions,
rejected connections and replication, so the shared server's config is never touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from checks.base import CheckContext
from checks.redis import (
    RedisCheck,
    RedisCheckConfig,
)
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.services import missing
from tests.utils import free_port, wait_until

SHARED_URL = os.environ.get("RUNBOOKD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PASSWORD = "t0p-s3cret-pw"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
POLL_LIMIT = 5.0


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


class RedisServer:
    """A throwaway redis-server on a free loopback port, persisting nothing."""

    def __init__(self, workdir: Path, *args: str, sentinel: bool = False) -> None:
        if not os.path.exists(REDIS_SERVER):
            missing(f"{REDIS_SERVER} not found")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        self._ready_line = "Ready to accept connections"
        if sentinel:  # a Sentinel needs a config file of its own, which it rewrites
            config = workdir / "sentinel.conf"
            config.write_text("")
            argv[1:1] = [str(config), "--sentinel"]
            self._ready_line = "Sentinel ID is"
        else:
            argv += ["--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), *args]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._ready = threading.Event()
        self.log: list[str] = []
        # The log is read to the end, so a chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or self._proc.poll() is not None:
            self.stop()
            pytest.fail("redis-server did not start:\n" + "".join(self.log[-20:]))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.append(line)
            if self._ready_line in line:
                self._ready.set()
        self._ready.set()  # exited: let the constructor see it at once

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        assert self._proc.stdout is not None
        self._proc.stdout.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Starts throwaway servers; all are stopped when the module's tests are done."""
    started: list[RedisServer] = []

    def start(*args: str, sentinel: bool = False) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), *args, sentinel=sentinel)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module")
def limited(servers: Callable[..., RedisServer]) -> RedisServer:
    """Password, a 10 MB memory limit and evictions."""
    return servers(
        "--requirepass", PASSWORD, "--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"
    )


@pytest.fixture(scope="module")
def replication(servers: Callable[..., RedisServer]) -> tuple[RedisServer, RedisServer]:
    """A master and its replica (no diskless sync delay: the sync starts at once)."""
    master = servers("--repl-diskless-sync-delay", "0")
    replica = servers("--replicaof", "127.0.0.1", str(master.port))
    return master, replica


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


Make = Callable[..., Awaitable[RedisCheck]]


@pytest.fixture
async def checks(ctx: CheckContext) -> AsyncIterator[Make]:
    """Makes started checks and stops them all at the end."""
    made: list[RedisCheck] = []

    async def make(url: str, **fields: Any) -> RedisCheck:
        config = RedisCheckConfig.model_validate({"type": "redis", "url": url, **fields})
        check = RedisCheck("cache", config)
        made.append(check)
        await check.start(ctx)
        return check

    yield make
    for check in made:
        await check.stop()


@pytest.fixture
async def admin() -> AsyncIterator[Callable[[str], Redis]]:
    """Plain clients for setting up servers, closed at the end."""
    clients: list[Redis] = []

    def connect(url: str) -> Redis:
        client = Redis.from_url(url, password=PASSWORD, socket_timeout=STOP_TIMEOUT)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.aclose()


# --- the OK path --------------------------------------------------------------------------


async def test_ok_with_real_values(ctx: CheckContext, checks: Make) -> None:
    check = await checks(with_db(SHARED_URL, 15))
    first = await check.run(ctx)
    if first.reason == "connection refused":
        missing(f"Redis not reachable at RUNBOOKD_TEST_REDIS_URL ({first.reason})")
    assert (first.status, first.reason) == (Status.OK, "")
    values = first.values
    assert values["up"] == 1.0
    assert 0.0 < values["latency_seconds"] < 1.0
    assert values["used_memory_bytes"] > 0
    assert values["is_master"] == 1.0
    assert values["connected_clients"] >= 1.0
    assert values["blocked_clients"] >= 0.0
    assert values["connected_replicas"] >= 0.0
    assert ("memory_ratio" in values) == (values["maxmemory_bytes"] > 0)
    assert values["evicted_keys"] >= 0.0
    assert values["rejected_connections"] >= 0.0
    assert "evicted_keys_delta" not in values  # nothing to compare with yet
    assert "rejected_connections_delta" not in values
    assert "master_link_up" not in values
    assert set(values) <= check.config.value_names()

    second = await check.run(ctx)
    assert second.values["evicted_keys_delta"] == 0.0
    assert second.values["rejected_connections_delta"] == 0.0


async def test_memory_ratio_and_evictions(
    ctx: CheckContext, checks: Make, admin: Callable[[str], Redis], limited: RedisServer
) -> None:
    check = await checks(limited.url, password=PASSWORD)
    before = await check.run(ctx)
    assert before.status is Status.OK
    assert before.values["maxmemory_bytes"] == 10 * 1024 * 1024
    assert before.values["memory_ratio"] == pytest.approx(
        before.values["used_memory_bytes"] / (10 * 1024 * 1024)
    )
    # Twice the memory limit: the server has to evict.
    client = admin(limited.url)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(200):
            pipe.set(f"runbookd:fill:{i}", b"x" * 100_000)
        await pipe.execute()
    after = await check.run(ctx)
    evicted = after.values["evicted_keys"]
    assert evicted > before.values["evicted_keys"]
    assert after.values["evicted_keys_delta"] == evicted - before.values["evicted_keys"]
    assert after.values["rejected_connections_delta"] == 0.0
    await client.flushall()


async def test_rejected_connections_delta(
    ctx: CheckContext, checks: Make, servers: Callable[..., RedisServer]
) -> None:
    server = servers("--maxclients", "1")
    check = await checks(server.url)
    first = await check.run(ctx)  # the check holds the one connection allowed
    assert first.values["rejected_connections"] == 0.0
    with socket.create_connection(("127.0.0.1", server.port), timeout=STOP_TIMEOUT) as sock:
        # The server counts the rejection before it sends the error.
        assert b"max number of clients reached" in sock.recv(1024)
    second = await check.run(ctx)
    assert second.values["rejected_connections"] == 1.0
    assert second.values["rejected_connections_delta"] == 1.0


# --- passwords ----------------------------------------------------------------------------


async def test_password(ctx: CheckContext, checks: Make, limited: RedisServer) -> None:
    separate = await (await checks(limited.url, password=PASSWORD)).run(ctx)
    assert separate.status is Status.OK
    in_url = limited.url.replace("redis://", f"redis://:{PASSWORD}@")
    assert (await (await checks(in_url)).run(ctx)).status is Status.OK


async def test_password_from_file(
    ctx: CheckContext, checks: Make, limited: RedisServer, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    check = await checks(limited.url, password_file=str(secret))
    assert (await check.run(ctx)).status is Status.OK


async def test_wrong_password_is_critical(
    ctx: CheckContext, checks: Make, limited: RedisServer
) -> None:
    wrong = "not-" + PASSWORD
    for check in (
        await checks(limited.url, password=wrong),
        await checks(limited.url.replace("redis://", f"redis://:{wrong}@")),
    ):
        result = await check.run(ctx)
        assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
        assert result.reason == "authentication failed"
    missing = await (await checks(limited.url)).run(ctx)
    assert (missing.status, missing.reason) == (
        Status.CRITICAL,
        "authentication failed (no password configured)",
    )


async def test_password_never_in_reasons(ctx: CheckContext, checks: Make) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    result = await (await checks(url)).run(ctx)
    assert result.reason == "connection refused"
    assert PASSWORD not in result.reason


# --- replication --------------------------------------------------------------------------


async def test_replica_with_master_link_up(
    ctx: CheckContext,
    checks: Make,
    admin: Callable[[str], Redis],
    replication: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = replication
    leader = admin(master.url)
    await leader.set("runbookd:replicated", "1")
    # WAIT blocks until the replica has synced and acknowledged the write.
    assert await leader.wait(1, int(POLL_LIMIT * 1000)) == 1

    result = await (await checks(replica.url)).run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")
    assert result.values["is_master"] == 0.0
    assert result.values["master_link_up"] == 1.0
    assert result.values["replication_lag_seconds"] >= 0.0
    assert "connected_replicas" not in result.values

    primary = await (await checks(master.url)).run(ctx)
    assert primary.values["is_master"] == 1.0
    assert primary.values["connected_replicas"] == 1.0
    assert "master_link_up" not in primary.values


async def test_replica_with_master_down_warns(
    ctx: CheckContext, checks: Make, servers: Callable[..., RedisServer]
) -> None:
    orphan = servers("--replicaof", "127.0.0.1", str(free_port()))
    result = await (await checks(orphan.url)).run(ctx)
    assert result.status is Status.WARN
    assert result.reason.startswith("replica: master link down")
    assert result.values["up"] == 1.0
    assert result.values["is_master"] == 0.0
    assert result.values["master_link_up"] == 0.0
    assert "replication_lag_seconds" not in result.values


async def test_no_role_in_info_is_no_replica(
    ctx: CheckContext, checks: Make, servers: Callable[..., RedisServer]
) -> None:
    # A Sentinel answers INFO without a role (nor memory): no master, no replica with a
    # link down, just what it does report.
    sentinel = servers(sentinel=True)
    result = await (await checks(sentinel.url)).run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")
    assert "is_master" not in result.values
    assert "master_link_up" not in result.values
    assert "memory_ratio" not in result.values  # no used_memory, no maxmemory
    assert result.values["up"] == 1.0


# --- failures -----------------------------------------------------------------------------


async def test_refused_port_is_critical(ctx: CheckContext, checks: Make) -> None:
    check = await checks(f"redis://127.0.0.1:{free_port()}/0")
    result = await check.run(ctx)
    assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
    assert result.reason == "connection refused"


async def test_timeout_is_critical(ctx: CheckContext, checks: Make, silent_port: int) -> None:
    check = await checks(f"redis://127.0.0.1:{silent_port}/0", timeout="300ms")
    start = time.perf_counter()
    result = await check.run(ctx)
    assert time.perf_counter() - start < 1.0
    assert (result.status, result.values) == (Status.CRITICAL, {"up": 0.0})
    assert result.reason == "timeout after 0.27s"  # 300ms less a margin for the scheduler


async def test_connection_closed_by_the_server_is_no_outage(
    ctx: CheckContext, checks: Make, admin: Callable[[str], Redis], limited: RedisServer
) -> None:
    # A restart or an idle timeout closes the kept connection; the next run reconnects.
    check = await checks(limited.url, password=PASSWORD)
    assert (await check.run(ctx)).status is Status.OK
    killed = await admin(limited.url).client_kill_filter(skipme=True)
    assert killed >= 1
    result = await check.run(ctx)
    assert (result.status, result.reason) == (Status.OK, "")


async def test_stop_closes_the_client(
    ctx: CheckContext, checks: Make, admin: Callable[[str], Redis], limited: RedisServer
) -> None:
    check = await checks(limited.url, password=PASSWORD)
    assert (await check.run(ctx)).status is Status.OK
    observer = admin(limited.url)

    async def ours() -> int:
        clients = await observer.client_list()
        return sum(1 for client in clients if client.get("name") == "runbookd")

    assert await ours() == 1
    await check.stop()

    async def gone() -> bool:  # the server notices the closed socket on its next loop
        return await ours() == 0

    await wait_until(gone, "the check's connection to close")
    await check.stop()  # stopping twice is harmless
