"""daemon/runtime/metrics.py: the per-check families kept as plain counts, and the text runbookd
writes for them itself instead of prometheus_client's generate_latest.

The text is checked against prometheus_client's own rendering of the same collector (through
its parser) and against `promtool check metrics`.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.core.models import Status
from daemon.runtime import metrics as metrics_module
from daemon.runtime.metrics import Metrics
from tests.awkward_metrics import AWKWARD, awkward_metrics, run

Samples = set[tuple[str, tuple[tuple[str, str], ...], str]]


def samples(text: str) -> Samples:
    """(name, labels, value) of every sample; values as text so that NaN equals NaN."""
    return {
        (s.name, tuple(sorted(s.labels.items())), repr(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


@pytest.fixture
def metrics() -> Metrics:
    return awkward_metrics()


def test_the_text_is_what_prometheus_client_writes_for_the_same_collector(
    metrics: Metrics,
) -> None:
    written = metrics.exposition().decode()
    reference = generate_latest(metrics.registry).decode()
    assert samples(written) == samples(reference)
    assert families(written) == families(reference)
    assert written == reference  # even laid out the same


def test_label_values_are_escaped(metrics: Metrics) -> None:
    text = metrics.exposition().decode()
    assert 'runbookd_check_status{check="say \\"hi\\""} 2.0\n' in text
    assert 'runbookd_check_status{check="C:\\\\temp\\\\"} 2.0\n' in text
    assert 'runbookd_check_status{check="two\\nlines"} 2.0\n' in text
    parsed = {s.labels["check"] for s in samples_of(text, "runbookd_check_status")}
    assert parsed == {*AWKWARD, "odd"}


def samples_of(text: str, name: str) -> list[object]:
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_what_each_check_exports() -> None:
    m = Metrics(CollectorRegistry())
    series = m.check_series("api", "http")
    assert value(m, "runbookd_check_runs_skipped_total", check="api") == 0
    assert value(m, "runbookd_check_status", check="api") is None  # no run yet: not "ok"
    series.observe(run("api", Status.OK, {"up": 1.0, "latency_seconds": 0.2}, 0.2))
    series.observe(run("api", Status.OK, {"up": 1.0, "latency_seconds": 0.1}, 0.1))
    series.observe(run("api", Status.CRITICAL, {"up": 0.0}, 5.0))
    assert value(m, "runbookd_check_status", check="api") == 2
    assert value(m, "runbookd_check_last_duration_seconds", check="api") == 5.0
    assert value(m, "runbookd_check_value", check="api", value="up") == 0
    # The last run measured no latency: none is shown, rather than an older run's.
    assert value(m, "runbookd_check_value", check="api", value="latency_seconds") is None
    assert value(m, "runbookd_check_runs_total", check="api", status="ok") == 2
    assert value(m, "runbookd_check_runs_total", check="api", status="critical") == 1
    text = m.exposition().decode()
    assert 'status="warn"' not in text  # statuses that never happened have no series
    assert 'status="unknown"' not in text
    assert "runbookd_check_duration_seconds_bucket{check=" not in text  # by type, not check
    assert value(m, "runbookd_check_duration_seconds_count", type="http") == 3
    assert value(m, "runbookd_check_duration_seconds_sum", type="http") == pytest.approx(5.3)


def test_histograms_count_a_value_on_a_bound_in_that_bound_s_bucket() -> None:
    m = Metrics(CollectorRegistry())
    for lateness in (0.001, 0.0011, 5.0, 6.0):
        m.lateness.observe(lateness)
    name = "runbookd_schedule_lateness_seconds_bucket"
    assert value(m, name, le="0.001") == 1
    assert value(m, name, le="0.005") == 2
    assert value(m, name, le="5.0") == 3
    assert value(m, name, le="+Inf") == 4
    assert value(m, "runbookd_schedule_lateness_seconds_count") == 4
    assert value(m, "runbookd_schedule_lateness_seconds_sum") == pytest.approx(11.0021)


def test_a_changed_check_keeps_its_counts_and_moves_to_its_new_type() -> None:
    m = Metrics(CollectorRegistry())
    first = m.check_series("db", "tcp")
    first.observe(run("db", Status.OK, {}, 0.01))
    again = m.check_series("db", "postgres")  # a reload changed its type
    assert again is first
    again.observe(run("db", Status.OK, {}, 0.01))
    assert value(m, "runbookd_check_runs_total", check="db", status="ok") == 2
    assert value(m, "runbookd_check_duration_seconds_count", type="tcp") == 1
    assert value(m, "runbookd_check_duration_seconds_count", type="postgres") == 1


def test_a_forgotten_check_leaves_no_series_even_mid_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "RENDER_SLICE", 1)
    m = Metrics(CollectorRegistry())
    for name in ("a", "b", "c"):
        m.check_series(name, "http").observe(run(name, Status.OK, {"v": 1.0}, 0.1))
    out: list[str] = []
    steps = m._write(out)
    next(steps)  # the other metrics written, "a" not yet
    next(steps)  # "a" written
    m.check_series("c", "http").forget()
    for _ in steps:
        pass
    text = "".join(out)
    assert 'check="a"' in text
    assert 'check="b"' in text
    assert 'check="c"' not in text
    assert 'check="c"' not in generate_latest(m.registry).decode()


def test_a_non_number_from_a_check_is_left_out_not_fatal() -> None:
    m = Metrics(CollectorRegistry())
    bad = {"up": 1.0, "oops": "n/a"}
    m.check_series("p", "plugin").observe(run("p", Status.OK, bad, 0.1))  # type: ignore[dict-item]
    text = m.exposition().decode()
    assert 'runbookd_check_value{check="p",value="up"} 1.0\n' in text
    assert "oops" not in text
    assert "oops" not in generate_latest(m.registry).decode()


async def test_render_lets_the_event_loop_run_between_slices() -> None:
    m = Metrics(CollectorRegistry())
    checks = 4 * metrics_module.RENDER_SLICE
    for index in range(checks):
        name = f"c{index}"
        m.check_series(name, "http").observe(run(name, Status.OK, {"up": 1.0}, 0.1))
    turns = 0
    done = False

    async def other_work() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    body = await m.render()
    done = True
    await task
    assert turns - before >= 4  # after the other metrics, and after each slice but the last
    assert body == m.exposition()
    assert body.count(b"runbookd_check_status{") == checks
