"""Rule semantics: for, min_samples, clear hysteresis, baselines, unknown data holding state."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core.models import Observation, RuleState, Status
from daemon.rules.config import RuleConfig
from daemon.rules.machine import RuleEvaluator

T0 = 1_800_000_000.0


def rule(**fields: Any) -> RuleEvaluator:
    fields.setdefault("when", "app.error_ratio > 5%")
    return RuleEvaluator("r", RuleConfig.model_validate(fields))


def ok(t: float, value: float, name: str = "error_ratio") -> Observation:
    return Observation("app", Status.OK, {name: value}, T0 + t)


def unknown(t: float) -> Observation:
    return Observation("app", Status.UNKNOWN, {}, T0 + t, reason="metrics endpoint down")


def feed(ev: RuleEvaluator, *obs: Observation) -> list[tuple[str, str]]:
    moves = []
    for o in obs:
        t = ev.observe(o)
        if t is not None:
            moves.append((t.old.name, t.new.name))
    return moves


def test_fires_at_once_without_for() -> None:
    ev = rule()
    assert feed(ev, ok(0, 0.01), ok(1, 0.2)) == [("INACTIVE", "FIRING")]


def test_for_requires_the_condition_to_hold_that_long() -> None:
    ev = rule(**{"for": "30s"})
    assert feed(ev, ok(0, 0.2)) == [("INACTIVE", "PENDING")]
    assert feed(ev, ok(10, 0.2), ok(29, 0.2)) == []
    assert ev.state is RuleState.PENDING
    assert feed(ev, ok(30, 0.2)) == [("PENDING", "FIRING")]


def test_for_is_timed_on_due_times_not_on_when_runs_finished() -> None:
    # Six runs due 1 s apart, the first slow (40 ms) and the rest fast: by finish times they
    # span 4.97 s and `for: 5s` would wait for a seventh run; by due times they span 5 s.
    ev = rule(**{"for": "5s"})
    latency = [0.040, 0.010, 0.012, 0.011, 0.010, 0.010]
    runs = [
        Observation("app", Status.OK, {"error_ratio": 0.2}, T0 + k + lat, lat, due=T0 + k)
        for k, lat in enumerate(latency)
    ]
    assert feed(ev, *runs[:5]) == [("INACTIVE", "PENDING")]
    assert feed(ev, runs[5]) == [("PENDING", "FIRING")]


def test_one_good_sample_resets_pending() -> None:
    ev = rule(**{"for": "30s"})
    feed(ev, ok(0, 0.2), ok(20, 0.2))
    assert feed(ev, ok(25, 0.01)) == [("PENDING", "INACTIVE")]
    # the timer starts over: 30s from t=40, not from t=0
    assert feed(ev, ok(40, 0.2), ok(60, 0.2)) == [("INACTIVE", "PENDING")]
    assert feed(ev, ok(70, 0.2)) == [("PENDING", "FIRING")]


def test_min_samples_holds_back_a_rule_whose_time_has_passed() -> None:
    ev = rule(**{"for": "10s", "min_samples": 3})
    assert feed(ev, ok(0, 0.2), ok(60, 0.2)) == [("INACTIVE", "PENDING")]
    assert feed(ev, ok(61, 0.2)) == [("PENDING", "FIRING")]


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        (">", 0.06, True),
        (">", 0.05, False),
        (">=", 0.05, True),
        ("<", 0.04, True),
        ("<=", 0.05, True),
        ("==", 0.05, True),
        ("!=", 0.05, False),
        ("!=", 0.5, True),
    ],
)
def test_operators(op: str, value: float, fires: bool) -> None:
    ev = rule(when=f"app.error_ratio {op} 5%")
    assert (ev.observe(ok(0, value)) is not None) is fires


def test_clear_for_hysteresis() -> None:
    ev = rule(clear="app.error_ratio < 2%", clear_for="20s")
    feed(ev, ok(0, 0.2))
    assert feed(ev, ok(1, 0.03)) == []  # below 5% but not below 2%: still firing
    assert feed(ev, ok(2, 0.01), ok(21, 0.01)) == []
    assert feed(ev, ok(22, 0.01)) == [("FIRING", "RESOLVED")]


def test_a_resolved_rule_is_inactive_again_and_can_fire_anew() -> None:
    ev = rule(**{"for": "10s"})
    feed(ev, ok(0, 0.2), ok(10, 0.2))
    assert feed(ev, ok(11, 0.01)) == [("FIRING", "RESOLVED")]
    assert ev.state is RuleState.INACTIVE  # resolved is the transition, not where it rests
    assert feed(ev, ok(12, 0.01)) == []
    # a new episode needs its whole `for` again
    assert feed(ev, ok(13, 0.2), ok(22, 0.2)) == [("INACTIVE", "PENDING")]
    assert feed(ev, ok(23, 0.2)) == [("PENDING", "FIRING")]


def test_clear_timer_restarts_when_the_value_bounces() -> None:
    ev = rule(clear_for="20s")
    feed(ev, ok(0, 0.2))
    feed(ev, ok(1, 0.01), ok(15, 0.01), ok(16, 0.3))
    assert feed(ev, ok(17, 0.01), ok(36, 0.01)) == []
    assert feed(ev, ok(37, 0.01)) == [("FIRING", "RESOLVED")]


def test_flapping_input_never_fires_and_opens_no_incident() -> None:
    ev = rule(**{"for": "10s"})
    moves = feed(ev, *(ok(t, 0.2 if t % 2 == 0 else 0.01) for t in range(60)))
    assert ("PENDING", "FIRING") not in moves
    assert ev.state is not RuleState.FIRING


def test_unknown_holds_a_pending_rule_and_pauses_its_timer() -> None:
    ev = rule(**{"for": "30s"})
    feed(ev, ok(0, 0.2), ok(10, 0.2))
    # 100s with the metrics source down: nothing fires, nothing resets
    assert feed(ev, *(unknown(t) for t in range(11, 111))) == []
    assert ev.state is RuleState.PENDING
    assert ev.blind
    # the blind time does not count: 10s were seen before, 20 more are needed
    assert feed(ev, ok(111, 0.2), ok(120, 0.2)) == []
    assert not ev.blind
    assert feed(ev, ok(131, 0.2)) == [("PENDING", "FIRING")]


def test_unknown_never_resolves_a_firing_rule() -> None:
    ev = rule()
    feed(ev, ok(0, 0.2))
    assert feed(ev, *(unknown(t) for t in range(1, 600))) == []
    assert ev.state is RuleState.FIRING


def test_unknown_never_fires_an_inactive_rule() -> None:
    ev = rule(when="app.up < 1")
    assert feed(ev, *(unknown(t) for t in range(100))) == []
    assert ev.state is RuleState.INACTIVE


def test_a_missing_value_or_nan_counts_as_unknown() -> None:
    ev = rule()
    assert feed(ev, ok(0, 0.5, name="other"), ok(1, float("nan"))) == []
    assert ev.state is RuleState.INACTIVE
    assert ev.blind


def test_stale_data_holds_and_pauses() -> None:
    ev = rule(**{"for": "30s"})
    feed(ev, ok(0, 0.2), ok(10, 0.2))
    assert ev.stale(T0 + 100, stale_after=30)  # blind since the last sample, t=10
    assert ev.state is RuleState.PENDING
    # resumes at t=200: 190s of blindness shift the timer; 10s seen, 20s more needed
    assert feed(ev, ok(200, 0.2), ok(219, 0.2)) == []
    assert feed(ev, ok(220, 0.2)) == [("PENDING", "FIRING")]


def test_out_of_order_observation_is_ignored() -> None:
    ev = rule()
    feed(ev, ok(10, 0.01))
    assert feed(ev, ok(5, 0.9)) == []


def test_baseline_degradation_fires_and_clears() -> None:
    ev = rule(when="app.p95_seconds > 1.5 x baseline(1h)", **{"for": "60s"})
    # an hour of normal latency around 200ms
    normal = [ok(t, 0.2 + (t % 7) * 0.001, "p95_seconds") for t in range(0, 3600, 10)]
    assert feed(ev, *normal) == []
    assert feed(ev, ok(3600, 0.28, "p95_seconds")) == []  # +40%: not degraded by over 50%
    moves = feed(ev, *(ok(3600 + t, 0.35, "p95_seconds") for t in range(10, 80, 10)))
    assert moves == [("INACTIVE", "PENDING"), ("PENDING", "FIRING")]
    # a long incident does not move the reference it is compared with
    assert feed(ev, *(ok(3680 + t, 0.4, "p95_seconds") for t in range(0, 7200, 60))) == []
    assert feed(ev, ok(11000, 0.21, "p95_seconds")) == [("FIRING", "RESOLVED")]


def test_no_baseline_yet_never_fires() -> None:
    ev = rule(when="app.p95_seconds > 1.5 x baseline(1h)")
    assert feed(ev, ok(0, 0.2, "p95_seconds"), ok(10, 5.0, "p95_seconds")) == []
    assert ev.blind
    assert ev.blind_reason == "no baseline yet"


def test_transition_reports_value_and_limit() -> None:
    ev = rule()
    t = ev.observe(ok(0, 0.2))
    assert t is not None
    assert (t.value, t.limit, t.condition) == (0.2, 0.05, "app.error_ratio > 5%")


def test_restart_while_pending_needs_the_whole_for_again() -> None:
    config = {"when": "app.error_ratio > 5%", "for": "30s"}
    before = RuleEvaluator("r", RuleConfig.model_validate(config))
    feed(before, ok(0, 0.2), ok(25, 0.2))
    after = RuleEvaluator("r", RuleConfig.model_validate(config))  # the daemon restarted
    assert feed(after, ok(26, 0.2), ok(50, 0.2)) == [("INACTIVE", "PENDING")]
    assert feed(after, ok(56, 0.2)) == [("PENDING", "FIRING")]


def test_restored_firing_rule_resolves_without_a_new_incident() -> None:
    ev = rule()
    ev.restore_firing(None)
    assert feed(ev, ok(0, 0.2)) == []
    assert feed(ev, ok(1, 0.01)) == [("FIRING", "RESOLVED")]
