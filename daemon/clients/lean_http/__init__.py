"""A lean HTTP/1.1 client for plain GET and HEAD: requests built once, responses parsed by
llhttp (httptools) on kept-alive connections. The `http` check uses it for GET and HEAD;
everything else keeps aiohttp."""

from daemon.clients.lean_http.client import LeanHttpClient, default_ssl_context
from daemon.clients.lean_http.errors import (
    BodyIncomplete,
    ConnectFailed,
    LeanHttpError,
    MalformedResponse,
    ServerDisconnected,
)
from daemon.clients.lean_http.wire import PreparedRequest, Response, prepare

__all__ = [
    "BodyIncomplete",
    "ConnectFailed",
    "LeanHttpClient",
    "LeanHttpError",
    "MalformedResponse",
    "PreparedRequest",
    "Response",
    "ServerDisconnected",
    "default_ssl_context",
    "prepare",
]
