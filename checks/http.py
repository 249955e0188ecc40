"""`http` check: does the application answer, correctly and fast enough?

Also home to the small HTTP helpers the `scrape` check shares (URL and header validation,
status matching, bounded body reads, and short reasons for failed requests).
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections.abc import Iterable
from typing import Annotated, ClassVar, Literal

import aiohttp
from pydantic import AfterValidator, BeforeValidator, Field, JsonValue, model_validator
from yarl import URL

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from daemon.core.models import Status
from daemon.core.units import PositiveDuration

MAX_BODY = 1 << 20  # body expectations read at most 1 MiB
VALUE_NAMES = frozenset({"up", "latency_seconds", "status_code"})

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(r"^[1-5](?:\d\d|xx)$")


# --- validated config value types, shared with checks.scrape -------------------------------


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


def request_timeout(check_timeout: float) -> float:
    """Give up a little before the scheduler cancels the run, so a timeout is reported by us."""
    return max(check_timeout - min(0.5, check_timeout * 0.1), 0.001)


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
REQUEST_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


# --- the check ----------------------------------------------------------------------------


def _json_path(value: str) -> str:
    if not value or any(not part for part in value.split(".")):
        raise ValueError(f"not a JSON path: {value!r} (use e.g. status or checks.db)")
    return value


JsonPath = Annotated[str, AfterValidator(_json_path)]


class HttpCheckConfig(CheckConfig):
    type: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: Headers = Field(default_factory=dict)
    expect_status: tuple[StatusSpec, ...] = Field((200,), min_length=1)
    # Dotted path -> expected value, e.g. {"status": "ok", "checks.db": "up"}.
    expect_json: dict[JsonPath, JsonValue] | None = None
    expect_body: str | None = Field(None, min_length=1)
    # Slower than this (but otherwise fine) is WARN.
    max_latency: PositiveDuration | None = None

    @model_validator(mode="after")
    def _head_has_no_body(self) -> HttpCheckConfig:
        if self.method == "HEAD" and (self.expect_json or self.expect_body):
            raise ValueError("a HEAD response has no body: expect_json/expect_body need GET")
        return self

    def value_names(self) -> frozenset[str]:
        return VALUE_NAMES


_MISSING = object()


def _lookup(doc: object, keys: tuple[str, ...]) -> object:
    for key in keys:
        if isinstance(doc, dict):
            doc = doc.get(key, _MISSING)
        elif isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        else:
            return _MISSING
        if doc is _MISSING:
            break
    return doc


def _json_equal(actual: object, expected: object) -> bool:
    # JSON true is not 1, though Python says True == 1.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return actual == expected


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@CHECKS.register
class HttpCheck(Stateless):
    """One request; up=1 when every expectation holds. No answer means the app is down
    (CRITICAL), not that we could not measure: the endpoint not answering is the data."""

    type: ClassVar[str] = "http"
    Config: ClassVar[builtins.type[CheckConfig]] = HttpCheckConfig
    # aiohttp's total timeout (`request_timeout`, a little under the check's) ends every run,
    # body included, so the scheduler needs no timer of its own.
    bounded: ClassVar[bool] = True

    def __init__(self, name: str, config: HttpCheckConfig) -> None:
        self.name = name
        self.config = config
        self._method = config.method
        self._url = URL(config.url)
        self._headers = dict(config.headers) or None
        self._timeout_s = request_timeout(config.timeout)
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        self._status = StatusMatcher(config.expect_status)
        self._needle = config.expect_body.encode() if config.expect_body else None
        self._json = tuple(
            (path, tuple(path.split(".")), expected)
            for path, expected in (config.expect_json or {}).items()
        )
        self._read_body = bool(self._needle or self._json)
        self._max_latency = config.max_latency

    async def run(self, ctx: CheckContext) -> CheckResult:
        start = time.perf_counter()
        body: bytes | None = None
        try:
            async with ctx.session.request(
                self._method, self._url, headers=self._headers, timeout=self._timeout
            ) as resp:
                code = resp.status
                if self._read_body and code in self._status:
                    body = await read_bounded(resp, MAX_BODY)
        except REQUEST_ERRORS as exc:
            return CheckResult(Status.CRITICAL, {"up": 0.0}, describe_failure(exc, self._timeout_s))
        latency = time.perf_counter() - start
        values = {"up": 0.0, "latency_seconds": latency, "status_code": float(code)}
        problem = self._problem(code, body)
        if problem is not None:
            return CheckResult(Status.CRITICAL, values, problem)
        values["up"] = 1.0
        if self._max_latency is not None and latency > self._max_latency:
            reason = f"slow: {latency:.3g}s, max_latency {self._max_latency:g}s"
            return CheckResult(Status.WARN, values, reason)
        return CheckResult(Status.OK, values)

    def _problem(self, code: int, body: bytes | None) -> str | None:
        """The first unmet expectation, or None when all are met."""
        if code not in self._status:
            return f"status {code}, expected {self._status.text}"
        if not self._read_body:
            return None
        if body is None:
            return f"body larger than {MAX_BODY >> 20} MiB"
        if self._needle is not None and self._needle not in body:
            return f"body does not contain {_show(self.config.expect_body)}"
        return self._json_problem(body) if self._json else None

    def _json_problem(self, body: bytes) -> str | None:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return "body is not JSON"
        for path, keys, expected in self._json:
            actual = _lookup(doc, keys)
            if actual is _MISSING:
                return f"json field {path} is missing"
            if not _json_equal(actual, expected):
                return f"json field {path} = {_show(actual)}, expected {_show(expected)}"
        return None
