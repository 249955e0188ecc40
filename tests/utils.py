"""Helpers shared by the tests: real servers on loopback, started and stopped in-process."""

from __future__ import annotations

import asyncio
import io
import select
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from daemon.api.servers import serve
from daemon.config.loader import load_config
from daemon.core.clock import ManualClock
from daemon.runtime.daemon import Daemon
from daemon.runtime.logs import configure

__all__ = [
    "PauseClock",
    "free_port",
    "read_until",
    "requests_to",
    "run_daemon",
    "serve",
    "wait_for",
    "wait_until",
]


def free_port() -> int:
    """A loopback port with nothing listening (for "connection refused" cases)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def run_daemon(config_file: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_config(config_file), config_path=config_file)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def wait_for(predicate: Callable[[], object], within: float = 20.0) -> None:
    """Poll a real-time condition (bounded): the daemon runs on the system clock here."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = 5.0
) -> None:
    """Poll a server-side condition (it changes asynchronously), bounded."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30.0) -> str:
    """Read the process's output until a line contains `needle` (bounded in time)."""
    assert proc.stdout is not None
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(seen)}")


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers; yields its port."""
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        release.set()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def serve_releasing(build: Callable[[asyncio.Event], web.Application]) -> AsyncIterator[str]:
    """Serve the app `build` makes around an event its hanging handlers wait on; the event is
    set on the way out, so that they finish and the server stops promptly."""
    release = asyncio.Event()
    async with serve(build(release)) as url:
        try:
            yield url
        finally:
            release.set()


async def stop_process(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: a test never leaves a server behind."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
                return
        except TimeoutError:
            proc.kill()
    await proc.wait()


@contextmanager
def rendered_logs() -> Iterator[io.StringIO]:
    """The daemon's real log output (JSON lines, tracebacks rendered) in a buffer."""
    saved = structlog.get_config()
    out = io.StringIO()
    configure("debug", stream=out)
    try:
        yield out
    finally:
        structlog.configure(**saved)


class PauseClock(ManualClock):
    """Time moves only when `once` pauses, and `during` is what the app serves meanwhile."""

    def __init__(self, during: Callable[[], Awaitable[None]]) -> None:
        super().__init__(autojump=True)
        self.during = during

    async def sleep(self, seconds: float) -> None:
        await self.during()
        await super().sleep(seconds)


def requests_to(url: str, count: int) -> Callable[[], Awaitable[None]]:
    async def serve_them() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(count):
                async with session.get(f"{url}/api/tasks") as response:
                    await response.read()

    return serve_them
