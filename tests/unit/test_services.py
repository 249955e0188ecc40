"""A test whose service is missing fails under CI=true and is skipped elsewhere."""

from __future__ import annotations

import pytest

from tests.services import missing


def test_a_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: a missing service fails the run"):
        missing("PostgreSQL not reachable")


def test_a_missing_service_is_skipped_on_a_developers_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL not reachable"):
        missing("PostgreSQL not reachable")
