"""`scrape` check: error ratio, request rate and latency quantiles from the app's own /metrics.

Counters are turned into increases the way Prometheus does: per series (keyed by the full
label set), a drop means the process restarted and the increase is the new value. A series
seen for the first time contributes 0, since we cannot know how much of its value is recent.
Increases of the scrapes within `window` are summed; quantiles come from the summed histogram
bucket increases with Prometheus's `histogram_quantile` interpolation.

Each request series must say its status: without `status_label`, the first label of
STATUS_LABELS that a series carries is used for all of them, chosen anew at every scrape. A
series without it, or with a value that is no HTTP status, makes the run UNKNOWN: its
requests might be errors, so no ratio over the others can be trusted.

A metrics source that cannot be read, or too little traffic, is UNKNOWN: never a failing app,
never a healthy one.

Over 400 lines: the exposition parser, the windows and the status labels serve this one
check and are read with it.
"""

from __future__ import annotations

import builtins
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AfterValidator, Field, StringConstraints, model_validator
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
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.units import Duration

MAX_BODY = 10 << 20
# Ask for the classic text format even from servers that could send OpenMetrics or protobuf.
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

MetricName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]

# The labels client libraries and exporters put the HTTP status in, most common first.
STATUS_LABELS = (
    "status",  # Python prometheus_client apps, Micrometer (Spring), ingress-nginx
    "code",  # Go promhttp, Prometheus itself, Traefik, HAProxy, kube-apiserver
    "status_code",  # prom-client apps (express-prom-bundle), starlette-exporter
    "http_status_code",  # OpenTelemetry http.status_code (older conventions), translated
    "http_response_status_code",  # OpenTelemetry http.response.status_code, translated
    "http.response.status_code",  # the same with UTF-8 names kept (Prometheus 3)
    "http.status_code",
    "response_code",  # Istio, Envoy
    "http_status",
    "statusCode",
)
_SHOWN_VALUES = 3  # unreadable status values named in a reason


def _quantile(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"a quantile lies strictly between 0 and 1, not {value!r}")
    return value


Quantile = Annotated[float, AfterValidator(_quantile)]


def quantile_value_name(q: float) -> str:
    """0.95 -> p95_seconds, 0.5 -> p50_seconds, 0.999 -> p99_9_seconds."""
    return f"p{round(q * 100, 4):g}".replace(".", "_") + "_seconds"


class ScrapeCheckConfig(CheckConfig):
    """Reads the application's own Prometheus metrics (`/metrics`, text format) and computes,
    as Prometheus would, over the scrapes of the last `window`:

    - `requests`: the increase of the `requests_metric` counter, summed over its series (a
      counter that drops is a restart: its increase is the new value);
    - `error_ratio`: the increase of the series whose status is one of `error_statuses`,
      divided by `requests`;
    - `request_rate`: `requests` per second of the window;
    - `p95_seconds` (one value per quantile: `p50_seconds`, `p99_9_seconds`): from the
      increases of the `latency_metric` histogram's `_bucket` series, with Prometheus's
      `histogram_quantile` interpolation; left out when the window has no observations.

    The status of a series is read from its `status_label`, or else from the first of
    `status`, `code`, `status_code`, `http_status_code`, `http_response_status_code`,
    `http.response.status_code`, `http.status_code`, `response_code`, `http_status`,
    `statusCode` that the series carry. A series without it, or with a value that is no HTTP
    status (`503`, or a class such as `5xx`), makes the run UNKNOWN: its requests might be
    errors. A rate needs two scrapes, so the first run is UNKNOWN ("first scrape: no window
    yet"); fewer than `min_requests` requests in the window is UNKNOWN too, neither good nor
    bad, and so is a metrics endpoint that cannot be read. `up` is 1 on every run that
    computed values."""

    example: ClassVar[str] = """
        checks:
          traffic:
            type: scrape
            url: http://app.internal:3000/metrics
            interval: 15s
            window: 5m
            min_requests: 100
            quantiles: [0.5, 0.95]
            match_labels: {handler: /api/tasks}
        """

    type: Literal["scrape"]
    url: HttpUrl = Field(description="The metrics endpoint, e.g. `http://127.0.0.1:3000/metrics`.")
    headers: Headers = Field(default_factory=dict, description="Request headers.")
    requests_metric: MetricName = Field(
        "http_requests_total",
        description="The counter of requests, with a status label; given with or without `_total`.",
    )
    status_label: LabelName | None = Field(
        None,
        description="The label holding the HTTP status (`503`, or a class like `5xx`). Unset: "
        "the first of the labels listed above that the series carry.",
    )
    error_statuses: tuple[StatusSpec, ...] = Field(
        ("5xx",),
        min_length=1,
        description="The statuses that count as errors: codes (`503`) or classes (`5xx`).",
    )
    latency_metric: MetricName | None = Field(
        "http_request_duration_seconds",
        description="The latency histogram (its `_bucket` series are read); null: no latency "
        "values.",
    )
    quantiles: tuple[Quantile, ...] = Field(
        (0.95,),
        description="Latency quantiles, each strictly between 0 and 1: 0.95 gives "
        "`p95_seconds`, 0.999 `p99_9_seconds`.",
    )
    window: Duration | None = Field(
        None,
        gt=0,
        description="The increases of the scrapes within this long are summed; default: the "
        "`interval` (one scrape to the next).",
    )
    min_requests: int = Field(
        10,
        ge=1,
        description="Fewer requests in the window is UNKNOWN: too little traffic to judge.",
    )
    match_labels: dict[LabelName, str] = Field(
        default_factory=dict,
        description="Only series carrying all these labels and values count, in both metrics.",
    )

    @model_validator(mode="after")
    def _distinct_quantiles(self) -> ScrapeCheckConfig:
        names = [quantile_value_name(q) for q in self.quantiles]
        if len(set(names)) != len(names):
            raise ValueError(f"quantiles give duplicate value names: {names}")
        return self

    @property
    def window_seconds(self) -> float:
        return self.window if self.window is not None else self.interval

    def value_names(self) -> frozenset[str]:
        names = {"up", "requests", "request_rate", "error_ratio"}
        if self.latency_metric is not None:
            names.update(quantile_value_name(q) for q in self.quantiles)
        return frozenset(names)


# --- histogram_quantile -------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's `histogram_quantile` over cumulative bucket counts keyed by upper bound.

    None where Prometheus says NaN: no +Inf bucket, fewer than two buckets, no observations.
    """
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return None
    counts: list[float] = []
    for bound in bounds:  # summed increases may dip slightly; cumulative counts never do
        counts.append(max(buckets[bound], counts[-1]) if counts else buckets[bound])
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(bounds) - 1:  # in the +Inf bucket: the highest finite bound is all we know
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


# --- the check ----------------------------------------------------------------------------

SeriesKey = frozenset[tuple[str, str]]


@dataclass(slots=True)
class _Totals:
    """Counter values of one scrape, per series."""

    requests: dict[SeriesKey, tuple[float, bool]]  # value, is an error status
    buckets: dict[SeriesKey, tuple[float, float]]  # upper bound, cumulative count


_RequestSeries = list[tuple[dict[str, str], float]]  # labels, value


@dataclass(frozen=True, slots=True)
class _Increase:
    """What changed between two scrapes: the span (since, ts]."""

    since: float
    ts: float
    requests: float
    errors: float
    buckets: dict[float, float]


_STATUS_VALUE = re.compile(r"[0-9]+|[0-9][xX][xX]")


def _is_status(value: str) -> bool:
    """A status label value error_statuses can judge: "503", or a class like "5xx"."""
    return _STATUS_VALUE.fullmatch(value) is not None


def _increase(current: float, previous: float | None) -> float:
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


class _MetricsError(Exception):
    """The metrics could not be read; the message is the reason."""


@CHECKS.register
class ScrapeCheck(Stateless):
    type: ClassVar[str] = "scrape"
    Config: ClassVar[builtins.type[CheckConfig]] = ScrapeCheckConfig

    def __init__(self, name: str, config: ScrapeCheckConfig) -> None:
        self.name = name
        self.config = config
        self._url = URL(config.url)
        self._headers = dict(config.headers)
        if not any(k.lower() == "accept" for k in self._headers):
            self._headers["Accept"] = ACCEPT
        self._timeout_s = request_timeout(config.timeout)
        self._timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        self._window = config.window_seconds
        self._min_requests = config.min_requests
        self._match = tuple(config.match_labels.items())
        self._status_labels = (
            STATUS_LABELS if config.status_label is None else (config.status_label,)
        )
        self._errors = StatusMatcher(config.error_statuses)
        self._is_error: dict[str, bool] = {}  # per status label value; the set is small
        base = config.requests_metric.removesuffix("_total")
        # Typed counters are exposed as `x_total`; untyped old-style ones may lack the suffix.
        self._request_names = frozenset({base, base + "_total"})
        self._bucket_name: str | None = None
        self._quantiles: tuple[tuple[float, str], ...] = ()
        prefixes = [base]
        if config.latency_metric is not None:
            self._bucket_name = config.latency_metric.removesuffix("_bucket") + "_bucket"
            self._quantiles = tuple((q, quantile_value_name(q)) for q in config.quantiles)
            prefixes.append(self._bucket_name)
        # `{` starts a sample whose (quoted) name is inside the braces.
        self._prefixes = (*prefixes, "{")
        self._not_found = f"no {config.requests_metric} series in the metrics" + (
            " matching " + ", ".join(f"{k}={v!r}" for k, v in self._match) if self._match else ""
        )
        self._previous: _Totals | None = None
        self._previous_ts = 0.0
        self._history: deque[_Increase] = deque()

    async def run(self, ctx: CheckContext) -> CheckResult:
        try:
            text = await self._fetch(ctx.session)
            totals = self._parse(text)
        except _MetricsError as exc:
            return CheckResult.unknown(str(exc))
        now = ctx.clock.now()
        previous, previous_ts = self._previous, self._previous_ts
        self._previous, self._previous_ts = totals, now
        if not totals.requests:
            return CheckResult.unknown(self._not_found)
        if previous is None:
            return CheckResult.unknown("first scrape: no window yet", needs_previous=True)
        self._history.append(self._diff(previous, totals, previous_ts, now))
        while self._history[0].ts <= now - self._window:
            self._history.popleft()
        return self._result(now)

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        try:
            async with session.get(self._url, headers=self._headers, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise _MetricsError(f"metrics endpoint returned status {resp.status}")
                body = await read_bounded(resp, MAX_BODY)
        except REQUEST_ERRORS as exc:
            raise _MetricsError(
                "metrics fetch failed: " + describe_failure(exc, self._timeout_s)
            ) from None
        if body is None:
            raise _MetricsError(f"metrics body larger than {MAX_BODY >> 20} MiB")
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise _MetricsError("metrics body is not UTF-8 text") from None

    def _parse(self, text: str) -> _Totals:
        # The parser costs ~11 µs a sample, so only the lines of our two metrics reach it.
        # (Exposition lines are not indented; one that is would be skipped.)
        wanted = "\n".join(line for line in text.splitlines() if line.startswith(self._prefixes))
        totals = _Totals({}, {})
        requests: _RequestSeries = []
        try:
            for family in text_string_to_metric_families(wanted):
                for sample in family.samples:
                    self._add(totals, requests, sample.name, sample.labels, float(sample.value))
        except ValueError as exc:
            raise _MetricsError(f"metrics text is not parseable: {str(exc)[:80]}") from None
        self._classify(requests, totals)
        return totals

    def _add(
        self,
        totals: _Totals,
        requests: _RequestSeries,
        name: str,
        labels: dict[str, str],
        value: float,
    ) -> None:
        if not math.isfinite(value) or any(labels.get(k) != v for k, v in self._match):
            return
        if name in self._request_names:
            requests.append((labels, value))
        elif name == self._bucket_name and "le" in labels:
            bound = float(labels["le"])  # a bad `le` raises ValueError: not parseable
            totals.buckets[frozenset(labels.items())] = (bound, value)

    def _classify(self, requests: _RequestSeries, totals: _Totals) -> None:
        """Each request series as an error or not, by the status label of this scrape."""
        if not requests:
            return
        label = self._status_label(requests)
        unreadable: list[str] = []
        for labels, value in requests:
            status = labels[label]
            is_error = self._is_error.get(status)
            if is_error is None:
                if not _is_status(status):
                    unreadable.append(status)
                    continue
                is_error = self._is_error[status] = self._errors.matches_label(status)
            totals.requests[frozenset(labels.items())] = (value, is_error)
        if unreadable:
            shown = ", ".join(repr(v[:40]) for v in unreadable[:_SHOWN_VALUES])
            more = len(unreadable) - _SHOWN_VALUES
            shown += f" (+{more} more)" if more > 0 else ""
            raise _MetricsError(
                f"{self.config.requests_metric} label {label} has values that are not HTTP"
                f" statuses: {shown} (set status_label)"
            )

    def _status_label(self, requests: _RequestSeries) -> str:
        """The first status label any series carries, if every series carries it."""
        label = next(
            (name for name in self._status_labels if any(ls.get(name) for ls, _ in requests)),
            None,
        )
        lacking = [ls for ls, _ in requests if label is None or not ls.get(label)]
        if not lacking:
            assert label is not None
            return label
        found = ", ".join(sorted({name for ls in lacking for name in ls})) or "none"
        metric = self.config.requests_metric
        if label is None:
            tried = ", ".join(self._status_labels)
            raise _MetricsError(
                f"{metric} has no status label (tried {tried}; found labels: {found})"
            )
        raise _MetricsError(
            f"{len(lacking)} of {len(requests)} {metric} series have no {label} label"
            f" (found labels: {found})"
        )

    @staticmethod
    def _diff(previous: _Totals, current: _Totals, since: float, now: float) -> _Increase:
        requests = errors = 0.0
        for key, (value, is_error) in current.requests.items():
            before = previous.requests.get(key)
            inc = _increase(value, None if before is None else before[0])
            requests += inc
            if is_error:
                errors += inc
        buckets: dict[float, float] = {}
        for key, (bound, value) in current.buckets.items():
            old = previous.buckets.get(key)
            buckets[bound] = buckets.get(bound, 0.0) + _increase(
                value, None if old is None else old[1]
            )
        return _Increase(since, now, requests, errors, buckets)

    def _result(self, now: float) -> CheckResult:
        history = self._history
        requests = sum(inc.requests for inc in history)
        if requests < self._min_requests:
            return CheckResult.unknown(
                f"only {requests:g} requests in the window (min_requests {self._min_requests})"
            )
        errors = sum(inc.errors for inc in history)
        values = {"up": 1.0, "requests": requests, "error_ratio": errors / requests}
        span = now - history[0].since
        if span > 0:  # two scrapes at one instant give a count, but no rate
            values["request_rate"] = requests / span
        if self._quantiles:
            values.update(self._latency(history))
        return CheckResult(Status.OK, values)

    def _latency(self, history: Iterable[_Increase]) -> dict[str, float]:
        """Quantiles that can be computed; one that cannot (no observations) is left out."""
        buckets: dict[float, float] = {}
        for inc in history:
            for bound, count in inc.buckets.items():
                buckets[bound] = buckets.get(bound, 0.0) + count
        out: dict[str, float] = {}
        for q, name in self._quantiles:
            value = histogram_quantile(q, buckets)
            if value is not None:
                out[name] = value
        return out
