"""The API's defences without a server: the rate limiter and replay memory, token lookup,
which addresses are loopback, and the token settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.api.auth import MAX_REPLAY_MEMORY, RateLimiter, ReplayGuard, TokenTable, replay_capacity
from daemon.config.check import check_config_main
from daemon.config.loader import load_config_text
from daemon.config.settings import ApiToken, RateLimitConfig, is_loopback
from tests.config_problems import problems

WRITE = "w-0123456789abcdef-write"
READ = "r-0123456789abcdef-read"
MIB = 1024 * 1024


def test_rate_limiter_refills_caps_at_burst_and_bounds_its_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(10, 2, monotonic=lambda: now[0], max_keys=3)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
    now[0] += 60  # a long pause refills no more than the burst
    assert [limiter.take("a") > 0 for _ in range(3)] == [False, False, True]
    for key in ("b", "c", "d", "e"):
        limiter.take(key)
    assert len(limiter._buckets) == 3


def test_signatures_are_remembered_only_within_their_window() -> None:
    guard = ReplayGuard()
    assert guard.admit("a", 1300.0, now=1000.0, cap=10)
    assert not guard.admit("a", 1300.0, now=1300.0, cap=10)  # the edge: still accepted by time
    assert guard.admit("b", 1400.0, now=1300.0, cap=10)
    # Past its timestamp's tolerance a signature is refused by the timestamp: forgotten here.
    assert guard.admit("c", 1500.0, now=1301.0, cap=10)
    assert len(guard) == 2
    assert guard.admit("d", 2000.0, now=1401.0, cap=10)
    assert len(guard) == 2  # c and d
    guard.forget("d")  # not accepted after all
    assert guard.admit("d", 2000.0, now=1401.0, cap=10)


def test_a_full_replay_memory_forgets_the_oldest_and_refuses_nothing() -> None:
    guard = ReplayGuard()
    with capture_logs() as logs:
        assert all(guard.admit(f"s{i}", 1300.0, now=1000.0, cap=100) for i in range(250))
    assert len(guard) == 100
    assert guard.admit("s0", 1300.0, now=1000.0, cap=100)  # forgotten: a replay gets through
    assert not guard.admit("s249", 1300.0, now=1000.0, cap=100)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("webhook replay memory full: forgetting the oldest signatures", "warning")
    ]


def test_replay_memory_outlasts_what_the_rate_limiter_admits() -> None:
    # One caller at the full rate for twice the tolerance (a timestamp may run ahead of ours).
    assert replay_capacity(RateLimitConfig(), 300.0) == 200 + 50 * 600
    assert replay_capacity(RateLimitConfig(per_second=0.5, burst=10), 300.0) == 310
    assert replay_capacity(RateLimitConfig(per_second=10_000), 3600.0) == MAX_REPLAY_MEMORY


def test_token_lookup_checks_every_token() -> None:
    tokens = [
        ApiToken.model_validate({"name": n, "token": t, "scope": "read"})
        for n, t in (("a", READ), ("b", WRITE))
    ]
    table = TokenTable(tokens)
    assert [table.identify(t) for t in (READ, WRITE, "", READ + " ")] == [
        tokens[0],
        tokens[1],
        None,
        None,
    ]


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("runbookd.internal", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_network_listen_without_tokens_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text("runbookd:\n  state_dir: /tmp/x\n  listen: 0.0.0.0:9464\n")
    assert check_config_main(str(path)) == 2
    assert capsys.readouterr().err == (
        f"{path}:3 runbookd.listen: 0.0.0.0 is not a loopback address, so runbookd.api.tokens "
        "must list at least one token (or listen on 127.0.0.1)\n"
    )
    path.write_text(
        "runbookd:\n  listen: '[::]:9464'\n  api:\n    tokens:\n"
        f"      - {{name: ops, token: {WRITE}, scope: write}}\n"
    )
    assert check_config_main(str(path)) == 0


def test_token_settings_are_validated_with_their_lines() -> None:
    text = f"""\
runbookd:
  api:
    max_body: lots
    rate_limit: {{per_second: 0}}
    tokens:
      - {{name: ops, token: s3cr3t, scope: write}}
      - {{name: bot, token: {READ}, scope: admin}}
      - {{name: x, token_file: /nonexistent/runbookd-token, scope: read}}
"""
    assert problems(text) == [
        "c.yaml:3 runbookd.api.max_body: could not parse value and unit from byte string",
        "c.yaml:4 runbookd.api.rate_limit.per_second: input should be greater than 0",
        "c.yaml:6 runbookd.api.tokens.0.token: too short: use at least 16 characters",
        "c.yaml:7 runbookd.api.tokens.1.scope: input should be 'read', 'write' or 'intake'",
        "c.yaml:8 runbookd.api.tokens.2.token_file: /nonexistent/runbookd-token: cannot read: "
        "No such file or directory",
    ]
    twice = f"""\
runbookd:
  api:
    tokens:
      - {{name: ops, token: {WRITE}, scope: write}}
      - {{name: ops2, token: {WRITE}, scope: read}}
"""
    assert problems(twice) == [
        "c.yaml:2 runbookd.api: tokens: two tokens have the same value (which scope would it have?)"
    ]
    assert all(WRITE not in p for p in problems(twice))


def test_api_defaults() -> None:
    api = load_config_text("", "c.yaml").runbookd.api
    assert (api.tokens, api.protect_metrics, api.max_body) == ([], False, MIB)
    assert (api.rate_limit.per_second, api.rate_limit.burst) == (50.0, 200)
    sized = load_config_text("runbookd: {api: {max_body: 2MiB}}", "c.yaml").runbookd.api
    assert sized.max_body == 2 * MIB
