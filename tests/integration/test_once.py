"""`runbookd once`: every check run one time against real servers, printed as a table."""

from __future__ import annotations

from aiohttp import web

from daemon.cli.once import run_once
from daemon.config.loader import load_config_text
from tests.once import CONFIG
from tests.utils import free_port, serve


def app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    application = web.Application()
    application.router.add_get("/health", health)
    return application


async def test_all_ok_exits_0_and_prints_a_table() -> None:
    async with serve(app()) as url:
        config = load_config_text(CONFIG.format(url=url, dead=free_port()))
        lines: list[str] = []
        assert await run_once(config, ["api"], out=lines.append) == 0
    header, row = lines
    assert header.split() == ["CHECK", "STATUS", "TOOK", "VALUES", "REASON"]
    assert row.split()[:2] == ["api", "OK"]
    assert "up=1" in row
    assert "status_code=200" in row


async def test_anything_not_ok_exits_1_with_the_reason() -> None:
    async with serve(app()) as url:
        config = load_config_text(CONFIG.format(url=url, dead=free_port()))
        lines: list[str] = []
        assert await run_once(config, out=lines.append) == 1
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["api"].split()[1] == "OK"
    assert rows["gone"].split()[1] == "CRITICAL"
    assert rows["gone"].endswith("connection refused")
