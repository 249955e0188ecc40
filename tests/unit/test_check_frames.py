"""The frames between the daemon and its check workers (daemon/runtime/check_frames.py)."""

from __future__ import annotations

import marshal
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.runtime.check_frames import (
    HEADER,
    BadFrame,
    Result,
    decode_command,
    decode_results,
    encode_command,
    encode_results,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
result = st.tuples(
    st.text(),  # any unicode name
    st.integers(0, 3),
    st.dictionaries(st.text(), st.floats()),  # NaN and infinities too
    finite,
    finite,
    st.none() | st.text(min_size=1),
    finite,
)


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (a value that could not be computed stays that)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(st.lists(result, max_size=20), st.lists(st.text(), max_size=5))
def test_results_round_trip(results: list[Result], skipped: list[str]) -> None:
    frame = encode_results(results, skipped)
    (size,) = HEADER.unpack(frame[: HEADER.size])
    assert size == len(frame) - HEADER.size
    back, skips = decode_results(frame[HEADER.size :])
    assert same(back, results)
    assert skips == skipped


@pytest.mark.parametrize(
    "payload",
    [
        b"abc",
        b"",
        marshal.dumps(("results", [("c", 9, {}, 1.0, 0.1, None, 1.0)], [])),  # no status 9
        marshal.dumps(("results", [("c", 0, {"up": 1}, 1.0, 0.1, None, 1.0)], [])),  # int value
        marshal.dumps(("results", [("c", 0, {}, math.nan, 0.1, None, 1.0)], [])),  # NaN time
        marshal.dumps(("results", [("c", 0, {})], [])),
        marshal.dumps(("other", [], [])),
        marshal.dumps(("results", [], [3])),
        marshal.dumps(["results", [], []]),
    ],
)
def test_anything_else_is_a_bad_frame(payload: bytes) -> None:
    with pytest.raises(BadFrame):
        decode_results(payload)


def test_commands_round_trip() -> None:
    frame = encode_command(("run_now", "ünïcode"))
    assert decode_command(frame[HEADER.size :]) == ("run_now", "ünïcode")


def test_check_processes_is_auto_or_a_count() -> None:
    from daemon.config.loader import load_config_text
    from tests.config_problems import problems

    assert load_config_text("checks: {}\n").runbookd.check_processes == "auto"
    text = "runbookd:\n  check_processes: 2\n"
    assert load_config_text(text).runbookd.check_processes == 2
    for bad in ("-1", "lots", "65"):
        found = problems(f"runbookd:\n  check_processes: {bad}\n")
        assert found  # each branch of `int | auto` says why: file, line and field each time
        assert all(p.startswith("c.yaml:2 runbookd.check_processes: ") for p in found), found
