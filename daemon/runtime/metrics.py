"""Every metric runbookd exports, defined once against an injected registry (a catalogue, one
entry per family: over 400 lines for that reason).

Labels are bounded by the config (check, rule, remediation names and types, a fixed set of
outcomes and value names) or by the code (check types, the API's route templates): never URLs,
error strings or alert labels.

The per-check families are the bulk of the exposition (thousands of checks) and are recorded on
every run, so they are not prometheus_client metrics: each check keeps plain counters
(`CheckSeries`), families are built from them only at scrape time, and `Metrics.render` writes
their text directly, in slices between which the event loop runs. Everything else is ordinary
prometheus_client metrics. No `_created` series: nothing reads them, and they doubled the size
of every counter and histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from daemon import __version__
from daemon.core.models import Observation, Status
from daemon.deploys.metrics import DeployMetrics
from daemon.jobs.metrics import JobMetrics
from daemon.procedures.metrics import ProcedureMetrics
from daemon.runtime.leadership import LeaderMetrics

# Process-wide (prometheus_client reads it at collect time); runbookd exports no `_created`.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Outcomes of a remediation step (the `outcome` label): executed, or why not.
OUTCOMES = (
    "ok",
    "failed",
    "error",
    "timeout",
    "interrupted",
    "dry_run",
    "cooldown",
    "budget",
    "run_limit",
    "target_busy",
    "approval_timeout",
    "rejected",
)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

# Checks rendered between two returns to the event loop: about 1 ms of CPU, so a scrape of
# thousands of checks (5,000: some 30 ms in all) never holds the scheduler up for long.
RENDER_SLICE = 250

STATUS_HELP = "Last status of each check: 0 ok, 1 warn, 2 critical, 3 unknown."
VALUE_HELP = "Values measured by each check's last run."
LAST_DURATION_HELP = "How long each check's last run took."
RUNS_HELP = "Check runs by final status."
SKIPPED_HELP = "Runs not started because the previous run of the same check was still going."
DURATION_HELP = "How long check runs took, by check type."
LATENESS_HELP = "How late check runs started relative to their due time."

# The per-check families, in the order `CheckFamilies.write` fills them.
_CHECK_FAMILIES = (
    ("runbookd_check_status", "gauge", STATUS_HELP),
    ("runbookd_check_value", "gauge", VALUE_HELP),
    ("runbookd_check_last_duration_seconds", "gauge", LAST_DURATION_HELP),
    ("runbookd_check_runs_total", "counter", RUNS_HELP),
    ("runbookd_check_runs_skipped_total", "counter", SKIPPED_HELP),
)
_STATUS_NAMES = tuple(s.name.lower() for s in sorted(Status))
# A sample value exactly as generate_latest writes it (Go's syntax: +Inf, NaN, 1.5e+07).
_num: Callable[[float], str] = floatToGoString


class Buckets:
    """A histogram as plain counts: observing is a bisect and two additions, no lock (it is
    only touched from the event loop)."""

    __slots__ = ("bounds", "counts", "le", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.le = (*(_num(b) for b in self.bounds), "+Inf")
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for le, count in zip(self.le, self.counts, strict=True):
            total += count
            out.append((le, float(total)))
        return out

    def text(self, name: str, labels: str, out: list[str]) -> None:
        """Append the `_bucket`, `_count` and `_sum` lines; `labels` is `k="v"` or empty.

        Laid out as generate_latest does (label names sorted: `labels` must sort after `le`),
        so that the two can be compared byte for byte."""
        after_le = f",{labels}" if labels else ""
        for le, total in self.cumulative():
            out.append(f'{name}_bucket{{le="{le}"{after_le}}} {_num(total)}\n')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_count{braces} {_num(sum(self.counts))}\n")
        out.append(f"{name}_sum{braces} {_num(self.sum)}\n")


class Metrics:
    """`registry` collects everything, for prometheus_client's API (get_sample_value,
    generate_latest); `render` writes the same text much faster, for /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The prometheus_client metrics, apart from the per-check families: `render` has
        # generate_latest write only these.
        self._core = core = CollectorRegistry()
        self._checks = CheckFamilies()
        registry.register(core)
        registry.register(self._checks)
        self.lateness = self._checks.lateness
        self.rule_state = Gauge(
            "runbookd_rule_state",
            "Rule state: 0 inactive (also once resolved), 1 pending, 2 firing.",
            ["rule"],
            registry=core,
        )
        self.rule_blind = Gauge(
            "runbookd_rule_blind",
            "1 while a rule has no usable data (unknown or stale) and holds its state.",
            ["rule"],
            registry=core,
        )
        self.incidents_open = Gauge(
            "runbookd_incidents_open", "Incidents currently open.", registry=core
        )
        self.incidents_opened = Counter(
            "runbookd_incidents_opened_total",
            "Incidents opened, by rule.",
            ["rule"],
            registry=core,
        )
        self.remediations = Counter(
            "runbookd_remediations_total",
            "Remediation steps by outcome: " + ", ".join(OUTCOMES) + ".",
            ["remediation", "type", "outcome"],
            registry=core,
        )
        self.remediation_duration = Histogram(
            "runbookd_remediation_duration_seconds",
            "How long executed remediations took.",
            ["remediation", "type"],
            buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=core,
        )
        self.alerts = Counter(
            "runbookd_alerts_received_total",
            "Alerts received by source, status and whether a rule matched.",
            ["source", "status", "result"],
            registry=core,
        )
        self.alerts_refused = Counter(
            "runbookd_alerts_refused_total",
            "Firing alerts refused as late deliveries of an episode already resolved.",
            ["rule"],
            registry=core,
        )
        self.alerts_over_cap = Counter(
            "runbookd_alerts_over_cap_total",
            "New firing alerts refused (429) because their rule, or runbookd as a whole, had "
            "as many alerts firing as its cap (runbookd.alerts).",
            ["rule"],
            registry=core,
        )
        self.alerts_firing = Gauge(
            "runbookd_alerts_firing",
            "Pushed alerts firing, by the rule they match (runbookd.alerts caps them).",
            ["rule"],
            registry=core,
        )
        self.circuit_open = Gauge(
            "runbookd_circuit_open",
            "1 while a rule's automation is stopped by the circuit breaker.",
            ["rule"],
            registry=core,
        )
        self.reload_success = Gauge(
            "runbookd_config_last_reload_successful",
            "1 if the last config (re)load succeeded.",
            registry=core,
        )
        self.reload_time = Gauge(
            "runbookd_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded.",
            registry=core,
        )
        self.config_hash = Gauge(
            "runbookd_config_hash",
            "The first 48 bits of the running config's hash: it changes when the config does.",
            registry=core,
        )
        self.api_requests = Counter(
            "runbookd_api_requests_total",
            "HTTP requests answered, by route template (never the raw path) and status class.",
            ["route", "code_class"],
            registry=core,
        )
        self.check_workers = Gauge(
            "runbookd_check_workers_running",
            "Check-worker processes running (runbookd.check_processes).",
            registry=core,
        )
        self.check_worker_restarts = Counter(
            "runbookd_check_worker_restarts_total",
            "Check-worker processes started again after they exited or wrote garbage; their "
            "checks delivered nothing meanwhile.",
            ["worker"],
            registry=core,
        )
        self.jobs = JobMetrics(core)
        self.deploys = DeployMetrics(core)
        self.procedures = ProcedureMetrics(core)
        self.build = Info("runbookd_build", "Build information.", registry=core)
        self.build.info({"version": __version__})

    def leader_metrics(self) -> LeaderMetrics:
        """The leadership's gauges, for a daemon among several replicas only."""
        return LeaderMetrics(self._core)

    def check_series(self, check: str, type: str) -> CheckSeries:
        """The series of `check`; the same object again for a check a reload changed."""
        return self._checks.series(check, type)

    def exposition(self) -> bytes:
        """`render` in one go, without an event loop (tests). Like the recording, not for
        another thread: the state is only consistent on the loop that writes it."""
        out: list[str] = []
        for _ in self._write(out):
            pass
        return "".join(out).encode()

    async def render(self) -> bytes:
        """The exposition for /metrics, returning to the event loop between slices of checks.

        Slices on the loop rather than a thread: the per-check state is plain attributes the
        loop writes on every run, so a slice reads it consistently without locks, and under
        the GIL a rendering thread would cost the same CPU and still preempt the loop."""
        out: list[str] = []
        for _ in self._write(out):
            await asyncio.sleep(0)
        return "".join(out).encode()

    def _write(self, out: list[str]) -> Iterator[None]:
        out.append(generate_latest(self._core).decode())
        yield
        yield from self._checks.write(out)


class CheckSeries:
    """One check's metrics as plain attributes: a run costs a few writes and a histogram
    bisect, where prometheus_client's children took a lock each."""

    __slots__ = (
        "_owner",
        "check",
        "duration",
        "durations",
        "label",
        "runs",
        "skipped",
        "status",
        "type",
        "values",
    )

    def __init__(self, owner: CheckFamilies, check: str, type: str) -> None:
        self._owner = owner
        self.check = check
        self.label = f'check="{_escape(check)}"'
        self.type = type
        self.durations = owner.durations_of(type)
        self.status: Status | None = None  # until a run finished
        self.values: dict[str, float] = {}
        self.duration = 0.0
        self.runs = [0] * len(Status)  # by status
        self.skipped = 0

    def observe(self, obs: Observation) -> None:
        self.status = obs.status
        # The last run's values, by reference: the dict is never changed after the run, and
        # a value the run did not measure (no latency without an answer) is not shown stale.
        self.values = obs.values
        self.duration = obs.duration
        self.runs[obs.status] += 1
        self.durations.observe(obs.duration)

    def forget(self) -> None:
        """Drop every series of a check a reload removed."""
        self._owner.forget(self)


class CheckFamilies:
    """A collector of the per-check families, the check-duration histograms (one per check
    type) and the schedule lateness: all recorded on every run, so all kept as plain counts."""

    def __init__(self) -> None:
        self.checks: dict[str, CheckSeries] = {}
        self.durations: dict[str, Buckets] = {}
        self.lateness = Buckets(LATENESS_BUCKETS)

    def durations_of(self, type: str) -> Buckets:
        # One histogram per check type, kept when its last check goes: types are bounded by
        # the code, and a histogram that vanished and came back would look like a reset.
        found = self.durations.get(type)
        if found is None:
            found = self.durations[type] = Buckets(DURATION_BUCKETS)
        return found

    def series(self, check: str, type: str) -> CheckSeries:
        found = self.checks.get(check)
        if found is None:
            found = self.checks[check] = CheckSeries(self, check, type)
        elif found.type != type:
            found.type, found.durations = type, self.durations_of(type)
        return found

    def forget(self, series: CheckSeries) -> None:
        if self.checks.get(series.check) is series:
            del self.checks[series.check]

    def collect(self) -> Iterable[Metric]:
        """The reference form of what `write` renders (prometheus_client's API)."""
        status = GaugeMetricFamily("runbookd_check_status", STATUS_HELP, labels=["check"])
        value = GaugeMetricFamily("runbookd_check_value", VALUE_HELP, labels=["check", "value"])
        last = GaugeMetricFamily(
            "runbookd_check_last_duration_seconds", LAST_DURATION_HELP, labels=["check"]
        )
        runs = CounterMetricFamily("runbookd_check_runs", RUNS_HELP, labels=["check", "status"])
        skipped = CounterMetricFamily("runbookd_check_runs_skipped", SKIPPED_HELP, labels=["check"])
        for s in list(self.checks.values()):
            skipped.add_metric([s.check], s.skipped)
            if s.status is None:
                continue
            status.add_metric([s.check], int(s.status))
            for name, v in s.values.items():
                with contextlib.suppress(TypeError, ValueError):
                    value.add_metric([s.check, name], float(v))
            last.add_metric([s.check], s.duration)
            for index, count in enumerate(s.runs):
                if count:
                    runs.add_metric([s.check, _STATUS_NAMES[index]], count)
        durations = HistogramMetricFamily(
            "runbookd_check_duration_seconds", DURATION_HELP, labels=["type"]
        )
        for type, buckets in sorted(self.durations.items()):
            durations.add_metric([type], buckets.cumulative(), buckets.sum)
        lateness = HistogramMetricFamily("runbookd_schedule_lateness_seconds", LATENESS_HELP)
        lateness.add_metric([], self.lateness.cumulative(), self.lateness.sum)
        return [status, value, last, runs, skipped, durations, lateness]

    def write(self, out: list[str]) -> Iterator[None]:
        """Append the same families as `collect`, as text; yields between slices of checks.

        Written directly: generate_latest over `collect` takes 7 times as long (it sorts and
        escapes every label of every sample; 240 ms for 5,000 checks). Here a check's label
        is escaped once, when its series is made, and the text is the same to the byte."""
        checks = self.checks
        snapshot = list(checks.values())
        names: dict[str, str] = {}  # value name -> escaped
        # Per family, one string per slice: joining the lines of a slice costs that slice,
        # and the final join is over a few strings rather than one per sample.
        chunks: list[list[str]] = [[] for _ in _CHECK_FAMILIES]
        for start in range(0, len(snapshot), RENDER_SLICE):
            if start:
                yield
            status: list[str] = []
            value: list[str] = []
            last: list[str] = []
            runs: list[str] = []
            skipped: list[str] = []
            for s in snapshot[start : start + RENDER_SLICE]:
                if checks.get(s.check) is not s:
                    continue  # removed by a reload since the render began
                label = s.label
                skipped.append(f"runbookd_check_runs_skipped_total{{{label}}} {_num(s.skipped)}\n")
                if s.status is None:
                    continue
                status.append(f"runbookd_check_status{{{label}}} {int(s.status)}.0\n")
                last.append(f"runbookd_check_last_duration_seconds{{{label}}} {_num(s.duration)}\n")
                for index, count in enumerate(s.runs):
                    if count:
                        runs.append(
                            f'runbookd_check_runs_total{{{label},status="{_STATUS_NAMES[index]}"}}'
                            f" {_num(count)}\n"
                        )
                for name, v in s.values.items():
                    escaped = names.get(name)
                    if escaped is None:
                        escaped = names[name] = _escape(name)
                    try:
                        number = _num(v)
                    except (TypeError, ValueError):
                        continue  # a plugin's bug, not a reason to fail the whole scrape
                    value.append(f'runbookd_check_value{{{label},value="{escaped}"}} {number}\n')
            for family, lines in zip(chunks, (status, value, last, runs, skipped), strict=True):
                family.append("".join(lines))
        for (name, kind, help), family in zip(_CHECK_FAMILIES, chunks, strict=True):
            out.append(f"# HELP {name} {help}\n# TYPE {name} {kind}\n")
            out.extend(family)
        name = "runbookd_check_duration_seconds"
        out.append(f"# HELP {name} {DURATION_HELP}\n# TYPE {name} histogram\n")
        for type, buckets in sorted(self.durations.items()):
            buckets.text(name, f'type="{_escape(type)}"', out)
        name = "runbookd_schedule_lateness_seconds"
        out.append(f"# HELP {name} {LATENESS_HELP}\n# TYPE {name} histogram\n")
        self.lateness.text(name, "", out)


def _escape(label_value: str) -> str:
    """A label value as the text format quotes it."""
    return label_value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
