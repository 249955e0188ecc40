"""HTTP helpers the checks share (`http`, `scrape`, `prometheus`, `s3_backup`): validated
config value types (URL, header, status), status matching, bounded body reads, and short
reasons for failed requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

import aiohttp
from pydantic import AfterValidator, BeforeValidator
from yarl import URL

from daemon.clients.lean_http import LeanHttpError

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(r"^[1-5](?:\d\d|xx)$")


# --- validated config value types ----------------------------------------------------------


def _http_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError:
        url = None
    # yarl refuses a port that is not a number or above 65535; port 0 reaches nothing.
    if url is None or url.scheme not in ("http", "https") or not url.host or url.port == 0:
        raise ValueError(f"not an http(s) URL: {value!r} (use e.g. http://127.0.0.1:8080/healthz)")
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"not a valid header name: {value!r}")
    return value


def _header_value(value: str) -> str:
    # A line break in a header value would smuggle in another header.
    if "\r" in value or "\n" in value:
        raise ValueError("a header value must not contain line breaks")
    return value


def _status_spec(value: object) -> int | str:
    """200 or "200" -> 200; "5xx" / "5XX" -> "5xx" (a whole class)."""
    text = str(value).strip().lower() if isinstance(value, int | str) else ""
    if isinstance(value, bool) or not _STATUS.match(text):
        raise ValueError(f"not an HTTP status: {value!r} (use e.g. 200, 503 or 5xx)")
    return text if text.endswith("xx") else int(text)


HttpUrl = Annotated[str, AfterValidator(_http_url)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
StatusSpec = Annotated[int | str, BeforeValidator(_status_spec)]
Headers = dict[HeaderName, HeaderValue]


class StatusMatcher:
    """Matches status codes against exact codes and classes ("5xx")."""

    __slots__ = ("_classes", "_codes", "text")

    def __init__(self, specs: Iterable[int | str]) -> None:
        specs = list(specs)
        self._codes = frozenset(s for s in specs if isinstance(s, int))
        self._classes = frozenset(int(s[0]) for s in specs if isinstance(s, str))
        self.text = " or ".join(str(s) for s in specs)

    def __contains__(self, code: int) -> bool:
        return code in self._codes or code // 100 in self._classes

    def matches_label(self, value: str) -> bool:
        """For a status label value: "503", or an already aggregated class like "5xx"."""
        if value.isdigit():
            return int(value) in self
        value = value.lower()
        is_class = len(value) == 3 and value[0].isdigit() and value[1:] == "xx"
        return is_class and int(value[0]) in self._classes


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` bytes (stops reading there)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A short reason for a request that got no usable response."""
    if isinstance(exc, TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, LeanHttpError):
        return exc.reason
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate verification failed"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body incomplete"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, OSError) and exc.strerror:
        return f"request failed: {exc.strerror}"
    return f"request failed: {type(exc).__name__}"


# Every expected failure of a request; anything else is a bug and should surface.
REQUEST_ERRORS = (aiohttp.ClientError, LeanHttpError, TimeoutError, OSError)
