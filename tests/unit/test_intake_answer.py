"""The intake's answer to alerts taken is written without encoding a dict each time: it must be
what json_response writes, byte for byte, headers included."""

from __future__ import annotations

import pytest

from daemon.api.bodies import json_response
from daemon.api.intake import taken


@pytest.mark.parametrize(
    ("received", "matched"), [(0, 0), (1, 0), (1, 1), (10, 2), (10_000, 9_999)]
)
def test_the_prebuilt_answer_is_json_responses(received: int, matched: int) -> None:
    fast = taken(received, matched)
    general = json_response({"received": received, "matched": matched})
    assert (fast.status, fast.body) == (general.status, general.body)
    assert fast.headers["Content-Type"] == general.headers["Content-Type"]
    assert (fast.content_type, fast.charset) == ("application/json", "utf-8")
