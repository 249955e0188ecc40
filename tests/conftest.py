from __future__ import annotations

from collections.abc import AsyncIterator

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
