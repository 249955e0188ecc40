"""The route table: the router and the guard's scopes are built from it."""

from __future__ import annotations

import pytest
from aiohttp import web

from daemon.api import routes


async def ok(request: web.Request) -> web.Response:
    return web.Response()


def every_handler() -> dict[str, routes.Handler]:
    return {op.operation_id: ok for op in routes.OPERATIONS}


def test_each_operation_is_bound_to_its_handler_and_gets_answer_heads() -> None:
    bound = routes.bind(every_handler())
    rows = {(r.method, r.path) for r in bound if isinstance(r, web.RouteDef)}
    assert rows == {(op.method.upper(), op.path) for op in routes.OPERATIONS}
    gets = [r for r in bound if isinstance(r, web.RouteDef) and r.method == "GET"]
    assert gets
    assert all(r.kwargs.get("allow_head") is True for r in gets)


def test_a_missing_or_unknown_handler_is_refused_by_name() -> None:
    handlers = every_handler()
    del handlers["listIncidents"]
    with pytest.raises(ValueError, match="without a handler: \\['listIncidents'\\]"):
        routes.bind(handlers)
    with pytest.raises(ValueError, match="without an operation: \\['deleteEverything'\\]"):
        routes.bind(every_handler() | {"deleteEverything": ok})


def test_auth_comes_from_the_table_and_head_asks_what_get_asks() -> None:
    assert routes.auth_of("GET", "/healthz") == "open"
    assert routes.auth_of("HEAD", "/api/v1/incidents") == "read"
    assert routes.auth_of("GET", "/api/v1/silences") == "read"
    assert routes.auth_of("POST", "/api/v1/silences") == "write"
    assert routes.auth_of("POST", "/api/v1/alerts") == "intake"
    assert routes.auth_of("POST", "/api/v1/webhooks/{name}") == "webhook"
    # Not in the table: the guard denies by default.
    assert routes.auth_of("DELETE", "/healthz") is None
    assert routes.auth_of("GET", "/nowhere") is None
