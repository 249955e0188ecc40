"""`vercel_secret` (rotating a project's secret variables) against the Vercel fake: what it
refuses before changing anything, and its undo when it has nothing to put back. The whole
procedure, its failures and the search for leaked values: tests/e2e/test_procedure_rotate.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.vercel_secret import SecretConfig, VercelSecret
from tests.fakes import make_incident
from tests.fakes.vercel import TEAM, TOKEN, Env, FakeVercel, config, seed_storefront
from tests.utils import serve

OLD = "b2xkLXZhbHVlLW9mLXRoZS1zZXNzaW9uLXNlY3JldA=="


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake(clock: ManualClock) -> FakeVercel:
    fake = FakeVercel(teams={TEAM: "acme"}, now=clock.now)
    seed_storefront(fake, TEAM)
    return fake


@pytest.fixture
async def api_url(fake: FakeVercel) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield url


def make(api_url: str, **overrides: Any) -> VercelSecret:
    data = config(api_url, "vercel_secret", keys=["SESSION_SECRET"], **overrides)
    return VercelSecret("rotate", SecretConfig.model_validate(data))


def add(fake: FakeVercel, kind: str, target: list[str] | None = None) -> Env:
    env = Env("env_session", "SESSION_SECRET", OLD, kind, target or ["production"], 1)
    fake.projects["prj_store"].envs.append(env)
    return env


def edits(fake: FakeVercel) -> list[str]:
    return [c.path for c in fake.calls if c.method == "PATCH"]


async def test_a_sensitive_variable_is_refused_before_anything_changes(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    env = add(fake, "sensitive")
    result = await make(api_url).execute(ctx, make_incident())
    assert not result.ok
    assert "SESSION_SECRET cannot be read back (type sensitive)" in result.detail
    assert "nothing rotated" in result.detail
    assert edits(fake) == []
    assert env.value == OLD


async def test_a_missing_variable_is_refused_and_other_targets_are_not_ours(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    add(fake, "encrypted", ["preview"])  # the same key, for preview only
    result = await make(api_url).execute(ctx, make_incident())
    assert not result.ok
    assert result.detail == "no variable SESSION_SECRET for production: nothing rotated"
    assert edits(fake) == []


async def test_a_restore_with_nothing_kept_says_so_and_changes_nothing(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    add(fake, "encrypted")
    incident = make_incident()
    result = await make(api_url, restore=True).execute(ctx, incident)
    assert not result.ok
    assert f"no old values of SESSION_SECRET kept for {incident.id}" in result.detail
    assert "set them by hand" in result.detail
    assert edits(fake) == []


async def test_a_rotation_then_its_restore_for_the_same_run_put_the_value_back(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    env = add(fake, "encrypted")
    incident = make_incident()
    rotated = await make(api_url).execute(ctx, incident)
    assert rotated.ok, rotated.detail
    new = env.value
    assert new != OLD
    assert len(new) == 44  # base64 of 32 bytes
    other = await make(api_url, restore=True).execute(ctx, make_incident(id="run-another"))
    assert not other.ok  # another run's restore has nothing of this one's
    restored = await make(api_url, restore=True).execute(ctx, incident)
    assert restored.ok, restored.detail
    assert env.value == OLD
    for result in (rotated, other, restored):
        shown = repr(result)
        assert OLD[:12] not in shown
        assert new[:12] not in shown
        assert TOKEN not in shown
