"""Tests that need a real service (PostgreSQL, Redis, Prometheus, Alertmanager, an S3 server,
Debian's monitoring plugins, systemd-analyze): missing, such a test is skipped on a developer's
machine, and fails under CI=true, where `make test` installed and started everything."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """The service this test needs is not there: fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)
