"""Hostile HTTP, the limits set without a socket: the connection cap leaves half the file
descriptors to the rest, and no answer holds a NaN."""

from __future__ import annotations

import math

import pytest

from daemon.api.bodies import json_response
from daemon.api.servers import connection_cap


def test_the_cap_leaves_half_the_file_descriptors_to_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def nofile(limit: int) -> None:
        monkeypatch.setattr("resource.getrlimit", lambda _: (limit, limit))

    nofile(1024)
    assert connection_cap(512) == 512
    assert connection_cap(600) == 512
    nofile(64)
    assert connection_cap(512) == 32
    nofile(10)
    assert connection_cap(512) == 16


def test_an_answer_never_holds_nan() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_response({"value": math.nan})
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_response({"value": math.inf})
