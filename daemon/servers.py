"""Starting aiohttp applications on a host and port, including "any free port" (0)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app`; returns its runner (to clean up) and the port actually bound."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:  # e.g. the port is taken: the app's cleanup hooks run all the same
        await runner.cleanup()
        raise
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or [])
    if not sockets:
        await runner.cleanup()
        raise OSError(f"nothing bound on {host}:{port}")
    bound: int = sockets[0].getsockname()[1]
    return runner, bound


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` on a free port for the duration; yields its base URL."""
    runner, port = await start_site(app, host, 0)
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
