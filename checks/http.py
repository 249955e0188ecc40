"""`http` check: does the application answer, correctly and fast enough?"""

from __future__ import annotations

import builtins
import json
import math
import re
import time
from typing import Annotated, ClassVar, Literal

import aiohttp
from pydantic import AfterValidator, Field, JsonValue, model_validator
from yarl import URL

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from daemon.clients.http import (
    REQUEST_ERRORS,
    Headers,
    HttpUrl,
    StatusMatcher,
    StatusSpec,
    describe_failure,
    read_bounded,
)
from daemon.clients.lean_http import prepare
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.units import PositiveDuration

MAX_BODY = 1 << 20  # body expectations read at most 1 MiB
VALUE_NAMES = frozenset({"up", "latency_seconds", "status_code"})


def _json_path(value: str) -> str:
    if not value or any(not part for part in value.split(".")):
        raise ValueError(f"not a JSON path: {value!r} (use e.g. status or checks.db)")
    return value


JsonPath = Annotated[str, AfterValidator(_json_path)]
_VALUE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class HttpCheckConfig(CheckConfig):
    """One request to an endpoint: `up` is 1 when every expectation holds (status, JSON
    fields, body text), else 0 and CRITICAL; no answer at all is CRITICAL with `up` 0 too, since
    the endpoint not answering is the data. Redirects are not followed."""

    example: ClassVar[str] = """
        checks:
          health:
            type: http
            url: https://app.example.com/api/health
            interval: 30s
            timeout: 5s
            expect_json: {status: ok}
            max_latency: 800ms
        """

    type: Literal["http"]
    url: HttpUrl = Field(description="The http(s) URL to request.")
    method: Literal["GET", "HEAD", "POST"] = Field("GET", description="The request method.")
    headers: Headers = Field(
        default_factory=dict, description="Request headers, e.g. `{Authorization: ...}`."
    )
    expect_status: tuple[StatusSpec, ...] = Field(
        (200,),
        min_length=1,
        description="The statuses that count as up: codes (`200`) or classes (`2xx`).",
    )
    expect_json: dict[JsonPath, JsonValue] | None = Field(
        None,
        description="Dotted path into the JSON body -> the value it must have, e.g. "
        "`{status: ok, checks.db: up}` (`true` is not `1`).",
    )
    expect_body: str | None = Field(
        None, min_length=1, description="Text the body must contain (first MiB read)."
    )
    max_latency: PositiveDuration | None = Field(
        None, description="Slower than this, but otherwise fine, is WARN (`up` stays 1)."
    )
    values: dict[str, JsonPath] = Field(
        default_factory=dict,
        max_length=32,
        description="Values read from the JSON body: name -> dotted path, e.g. `{build: "
        "build.number}` for `deploys.version_from: version.build`. A JSON number there is the "
        "value; anything else (a missing field, a text such as `v1.2.3`) leaves it out, so a "
        "rule on it holds.",
    )

    @model_validator(mode="after")
    def _head_has_no_body(self) -> HttpCheckConfig:
        if self.method == "HEAD" and (self.expect_json or self.expect_body or self.values):
            raise ValueError("a HEAD response has no body: expect_json/expect_body/values need GET")
        for name in self.values:
            if name in VALUE_NAMES or not _VALUE_NAME.match(name):
                raise ValueError(f"values: {name!r} is not a name a value can have")
        return self

    def value_names(self) -> frozenset[str]:
        return VALUE_NAMES | frozenset(self.values)


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
    # The client's total timeout (`request_timeout`, a little under the check's) ends every
    # run, body included, so the scheduler needs no timer of its own.
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
        self._values = tuple((name, tuple(path.split("."))) for name, path in config.values.items())
        self._read_body = bool(self._needle or self._json or self._values)
        self._max_latency = config.max_latency
        # Chosen once: a plain GET or HEAD goes through the lean client (a fraction of
        # aiohttp's CPU per request); a POST, or a header that changes framing or encodings,
        # through aiohttp.
        self._lean = prepare(config.method, self._url, config.headers)

    @property
    def remote_ok(self) -> bool:
        """True when a check-worker process may run it (runbookd.check_processes): a plain
        GET or HEAD the lean client serves, which needs nothing of the daemon's but its
        config. Every other check runs in the daemon's process."""
        return self._lean is not None

    async def run(self, ctx: CheckContext) -> CheckResult:
        start = time.perf_counter()
        body: bytes | None = None
        lean = ctx.lean_http
        try:
            if self._lean is not None and lean is not None:
                answer = await lean.send(
                    self._lean,
                    timeout=self._timeout_s,
                    read_body=self._read_body,
                    read_headers=False,  # status and body are all the check reads
                    body_limit=MAX_BODY,
                )
                code = answer.status
                if self._read_body and code in self._status:
                    body = answer.body
            else:
                async with ctx.session.request(
                    self._method,
                    self._url,
                    headers=self._headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    code = resp.status
                    if self._read_body and code in self._status:
                        body = await read_bounded(resp, MAX_BODY)
        except REQUEST_ERRORS as exc:
            return CheckResult(Status.CRITICAL, {"up": 0.0}, describe_failure(exc, self._timeout_s))
        latency = time.perf_counter() - start
        values = {"up": 0.0, "latency_seconds": latency, "status_code": float(code)}
        if self._values and body is not None:
            values |= self._read_values(body)
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

    def _read_values(self, body: bytes) -> dict[str, float]:
        """The configured values that are JSON numbers in the body (true is not 1)."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return {}
        found: dict[str, float] = {}
        for name, keys in self._values:
            value = _lookup(doc, keys)
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:  # an integer beyond a double
                    continue
                if math.isfinite(number):
                    found[name] = number
        return found

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
