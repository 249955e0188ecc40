"""Fixtures more than one tier uses (tests/unit, tests/integration, tests/e2e); what a single
tier shares is in its own conftest.py, and helpers that are not fixtures in tests/*.py."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from tests.utils import serve


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> RemediationContext:
    """What a remediation gets; a module overriding `clock` (autojump) changes it here too."""
    return RemediationContext(session=session, clock=clock)


def health_app(state: dict[str, object]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=200 if state["up"] else 503)

    async def hook(request: web.Request) -> web.Response:
        hooks = state.setdefault("hooks", [])
        assert isinstance(hooks, list)
        hooks.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/hook", hook)
    return app


@pytest.fixture
async def app_state() -> AsyncIterator[tuple[dict[str, object], str]]:
    state: dict[str, object] = {"up": True}
    async with serve(health_app(state)) as url:
        yield state, url


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def serving() -> Iterator[None]:
    """Daemon.serve turns the GC on and freezes what exists: undone after the test."""
    yield
    gc.unfreeze()
    gc.enable()
