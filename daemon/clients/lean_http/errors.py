"""Why a lean request got no usable response, each with the short reason a check reports.

The reasons are worded as `daemon.clients.http.describe_failure` words aiohttp's errors, so a
check reads the same whichever client made the request. A timeout is `TimeoutError`, as with
aiohttp.
"""

from __future__ import annotations

import socket
import ssl


class LeanHttpError(Exception):
    """A request failed in an expected way; `reason` is short and quotes nothing the server
    sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFailed(LeanHttpError):
    """No connection: DNS, refused, unreachable, TLS handshake or certificate."""


class ServerDisconnected(LeanHttpError):
    """The server closed the connection before the response was whole. `unanswered`: not a
    byte of the response had arrived, so the request may not have been seen (an idle
    keep-alive connection the server had just closed): safe to retry a GET or HEAD."""

    def __init__(self, *, unanswered: bool) -> None:
        super().__init__("server disconnected")
        self.unanswered = unanswered


class MalformedResponse(LeanHttpError):
    """The response is not HTTP/1.x as llhttp reads it (a bad status line, broken framing)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"malformed response: {detail}")


class BodyIncomplete(LeanHttpError):
    """The body ended before its framing said it would, or could not be decoded."""

    def __init__(self) -> None:
        super().__init__("response body incomplete")


def connect_failed(exc: BaseException, host: str) -> ConnectFailed:
    """The reason a connection could not be opened, as aiohttp's connector errors read."""
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"DNS lookup failed for {host}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailed("TLS certificate verification failed")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed("TLS handshake failed")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed("connection refused")
    if isinstance(exc, OSError):
        return ConnectFailed(f"cannot connect: {exc.strerror or type(exc).__name__}")
    return ConnectFailed(f"cannot connect: {type(exc).__name__}")
