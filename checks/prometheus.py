"""`prometheus` check: the values of an instant PromQL query, for rules to judge.

A scalar or a single series gives one value (`value`, or the configured name); with `label`,
each series of a vector gives a value named by that label's value. `series` counts the series
the query returned (a scalar counts as one).

The check has no thresholds of its own: a successful query is OK. Anything that keeps us from
reading the values (Prometheus down, auth, a bad query, no series, only NaN) is UNKNOWN: a
down Prometheus must never look like a healthy application, nor like a failing one.
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import re
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

import aiohttp
from pydantic import Field, SecretStr, StringConstraints, model_validator
from yarl import URL

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from checks.scrape import LabelName
from daemon.clients.http import REQUEST_ERRORS, Headers, HttpUrl, describe_failure, read_bounded
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.redaction import excerpt
from daemon.core.units import SecretsModel

MAX_BODY = 10 << 20
MAX_ERROR = 160  # characters of Prometheus's error message kept in a reason
SERIES = "series"  # the value that counts the series

# What a rule can name (see daemon.expr); `series` is taken by the count.
ValueName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def value_name(label_value: str) -> str:
    """A label value as a value name rules can refer to: "10.0.0.1:9100" -> "_10_0_0_1_9100".

    Characters other than [A-Za-z0-9_] become _, and a leading digit gets a _ in front,
    since a rule's value name cannot start with one.
    """
    name = _UNSAFE.sub("_", label_value)
    return f"_{name}" if name[:1].isdigit() else name


class BasicAuth(SecretsModel):
    """HTTP basic authentication (RFC 7617)."""

    # RFC 7617: the user-id cannot contain a colon.
    username: Annotated[str, StringConstraints(min_length=1, pattern=r"^[^:]*$")] = Field(
        description="The user name (no colon)."
    )
    password: SecretStr = Field(description="The password.")


class PrometheusCheckConfig(CheckConfig):
    """An instant PromQL query (`GET URL/api/v1/query`); a successful query is OK and its
    result becomes values for rules to judge. A scalar or a single series gives one value,
    named by `value`; with `label`, each series of a vector gives a value named by that
    label's value (`10.0.0.1:9100` -> `_10_0_0_1_9100`). `series` counts the series returned.

    An empty result ("query returned no series"), a result of only NaN or ±Inf, a query
    error or a Prometheus that does not answer is UNKNOWN, and a rule on it holds (and after
    `blind_after` pages as blind). So write a ratio so that "nothing bad" is a number: a
    counter with no matching series yields an empty vector, not 0. Give the numerator
    `or vector(0)`: `(sum(rate(http_requests_total{status=~"5.."}[5m])) or vector(0)) /
    sum(rate(http_requests_total[5m]))` is 0 with no errors, while no traffic (0/0 = NaN) or
    no series at all (an empty denominator) stays UNKNOWN. With `or vector(0)` around the
    whole ratio instead, no data at all would read as 0."""

    example: ClassVar[str] = """
        checks:
          error_rate:
            type: prometheus
            url: http://127.0.0.1:9090
            query: >-
              (sum(rate(http_requests_total{job="web", status=~"5.."}[5m])) or vector(0))
              / sum(rate(http_requests_total{job="web"}[5m]))
            value: error_ratio
            interval: 30s
        """

    type: Literal["prometheus"]
    url: HttpUrl = Field(
        description="Prometheus's base URL, e.g. `http://127.0.0.1:9090` (a path prefix such "
        "as `/prometheus` is kept); `/api/v1/query` is added."
    )
    query: Query = Field(description="The PromQL expression, evaluated at the time of the run.")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication.")
    token: SecretStr | None = Field(
        None, description="Sent as `Authorization: Bearer TOKEN`; prefer `token_file`."
    )
    headers: Headers = Field(default_factory=dict, description="Request headers.")
    label: LabelName | None = Field(
        None,
        description="For a vector of several series: the label whose value names each "
        "series' value (a series without it takes the `value` name). Unset: more than one "
        "series is UNKNOWN.",
    )
    value: ValueName = Field(
        "value",
        description="The name of the value of a scalar or a single series: what a rule "
        "names as `CHECK.VALUE`.",
    )
    max_series: int = Field(
        100,
        ge=1,
        description="At most this many series become values (the first by name); the rest "
        "are left out, and the reason says so.",
    )

    @model_validator(mode="after")
    def _one_authorization(self) -> PrometheusCheckConfig:
        given = [self.basic_auth is not None, self.token is not None]
        given.append(any(h.lower() == "authorization" for h in self.headers))
        if sum(given) > 1:
            raise ValueError("give one of basic_auth, token or an Authorization header")
        if self.value == SERIES:
            raise ValueError(f"value: {SERIES!r} is the series count, choose another name")
        return self

    def value_names(self) -> frozenset[str] | None:
        # With `label` the names come from the data, so the loader cannot check them.
        return None if self.label is not None else frozenset({self.value, SERIES})


class _Unknown(Exception):
    """The values could not be read; the message is the reason."""


def _shorten(text: str, secrets: Sequence[str]) -> str:
    # A proxy in front of Prometheus may echo the request's credentials.
    return excerpt(" ".join(text.split()), MAX_ERROR, secrets, "...")


def _error_envelope(doc: object, secrets: Sequence[str]) -> tuple[str, str] | None:
    """(errorType, error) of a Prometheus error answer, or None for anything else."""
    if isinstance(doc, dict) and doc.get("status") == "error":
        kind = _shorten(str(doc.get("errorType", "")), secrets)
        return kind, _shorten(str(doc.get("error", "")), secrets)
    return None


def _http_error(code: int, doc: object, secrets: Sequence[str]) -> str:
    if code in (401, 403):
        return f"auth failed: status {code}"
    envelope = _error_envelope(doc, secrets)
    if envelope is None:
        return f"Prometheus answered status {code}"
    # 400 and 422 are the query's fault; 5xx (timeout, unavailable) the server's.
    where = "query error" if code < 500 else f"Prometheus error, status {code}"
    return f"{where} ({envelope[0]}): {envelope[1]}"


def _sample(value: object) -> float:
    """A [timestamp, "value"] pair -> the value; NaN and ±Inf come as "NaN", "+Inf"."""
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
        raise _Unknown("answer is not a Prometheus query result")
    try:
        return float(value[1])
    except ValueError:
        raise _Unknown(f"answer has a non-numeric sample: {value[1][:40]!r}") from None


Series = list[tuple[dict[str, str], float]]


def _series(result: object) -> Series:
    if not isinstance(result, list):
        raise _Unknown("answer is not a Prometheus query result")
    out: Series = []
    for item in result:
        metric = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(metric, dict):
            raise _Unknown("answer is not a Prometheus query result")
        out.append(({str(k): str(v) for k, v in metric.items()}, _sample(item.get("value"))))
    return out


@CHECKS.register
class PrometheusCheck(Stateless):
    type: ClassVar[str] = "prometheus"
    Config: ClassVar[builtins.type[CheckConfig]] = PrometheusCheckConfig

    def __init__(self, name: str, config: PrometheusCheckConfig) -> None:
        self.name = name
        self.config = config
        base = URL(config.url)
        self._url = base.with_path(base.path.rstrip("/") + "/api/v1/query")
        self._timeout_s = request_timeout(config.timeout)
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        # Prometheus's own timeout, so it stops evaluating a query nobody waits for.
        self._params = {"query": config.query, "timeout": f"{self._timeout_s:g}"}
        self._headers = dict(config.headers)
        if config.basic_auth is not None:
            auth = config.basic_auth
            pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif config.token is not None:
            self._headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        self._secrets = [
            *([config.basic_auth.password.get_secret_value()] if config.basic_auth else []),
            *([config.token.get_secret_value()] if config.token else []),
            *([self._headers["Authorization"]] if "Authorization" in self._headers else []),
        ]
        self._label = config.label
        self._value = config.value
        self._max_series = config.max_series

    async def run(self, ctx: CheckContext) -> CheckResult:
        try:
            data = await self._query(ctx.session)
            return self._result(data)
        except _Unknown as exc:
            return CheckResult.unknown(str(exc))

    async def _query(self, session: aiohttp.ClientSession) -> dict[str, object]:
        """The `data` of a successful answer."""
        try:
            async with session.get(
                self._url, params=self._params, headers=self._headers, timeout=self._timeout
            ) as resp:
                code = resp.status
                body = await read_bounded(resp, MAX_BODY)
        except REQUEST_ERRORS as exc:
            raise _Unknown(describe_failure(exc, self._timeout_s)) from None
        if body is None:
            raise _Unknown(f"answer larger than {MAX_BODY >> 20} MiB")
        try:
            doc: object = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            doc = None
            if code == 200:
                raise _Unknown("answer is not JSON") from None
        if code != 200:
            raise _Unknown(_http_error(code, doc, self._secrets))
        if (envelope := _error_envelope(doc, self._secrets)) is not None:
            raise _Unknown(f"query error ({envelope[0]}): {envelope[1]}")
        data = doc.get("data") if isinstance(doc, dict) and doc.get("status") == "success" else None
        if not isinstance(data, dict):
            raise _Unknown("answer is not a Prometheus query result")
        return data

    def _result(self, data: dict[str, object]) -> CheckResult:
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            named, count = {self._value: _sample(result)}, 1
        elif kind == "vector":
            series = _series(result)
            named, count = self._name(series), len(series)
        else:
            raise _Unknown(f"unsupported result type {str(kind)[:20]}")
        notes: list[str] = []
        finite = {name: v for name, v in named.items() if math.isfinite(v)}
        if not finite:
            raise _Unknown("query returned only NaN/±Inf values")
        if len(finite) < len(named):
            notes.append(f"dropped {len(named) - len(finite)} NaN/±Inf series")
        if len(finite) > self._max_series:
            notes.append(
                f"kept {self._max_series} of {len(finite)} series by name"
                f" (max_series {self._max_series})"
            )
            finite = {name: finite[name] for name in sorted(finite)[: self._max_series]}
        return CheckResult(Status.OK, {**finite, SERIES: float(count)}, "; ".join(notes))

    def _name(self, series: Series) -> dict[str, float]:
        """Each series' value under its name; ambiguity is UNKNOWN, not a guess."""
        if not series:
            raise _Unknown("query returned no series")
        label = self._label
        if label is None:
            if len(series) > 1:
                raise _Unknown(f"query returned {len(series)} series: set label to name them")
            return {self._value: series[0][1]}
        named: dict[str, float] = {}
        for labels, number in series:
            # Prometheus treats a missing label as empty; such a series takes the `value` name.
            name = value_name(labels[label]) if labels.get(label) else self._value
            if name == SERIES:
                raise _Unknown(f"label {label} names a series {SERIES!r}, the count's name")
            if name in named:
                raise _Unknown(f"label {label} gives more than one series the name {name!r}")
            named[name] = number
        return named
