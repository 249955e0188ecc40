"""`vercel_env` (maintenance mode) against a faithful local Vercel REST API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from daemon.core.clock import ManualClock
from daemon.core.models import RemediationResult
from remediations.base import RemediationContext
from remediations.vercel import VercelClient, VercelFailure
from remediations.vercel_env import ENV_ID, EnvConfig, VercelEnv, _created_id
from tests.fakes import make_incident
from tests.fakes.vercel import (
    TEAM,
    TOKEN,
    Deployment,
    FakeVercel,
    config,
    production,
    seed_storefront,
)
from tests.utils import serve

ENV = "/v10/projects/prj_store/env"
CREATE = "/v13/deployments"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake(clock: ManualClock) -> FakeVercel:
    return FakeVercel(teams={TEAM: "acme"}, now=clock.now)


@pytest.fixture
def deployments(fake: FakeVercel) -> dict[str, Deployment]:
    return seed_storefront(fake, TEAM)


@pytest.fixture
async def api_url(fake: FakeVercel) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield url


def make(api_url: str, **overrides: Any) -> VercelEnv:
    data = config(api_url, "vercel_env", **overrides)
    return VercelEnv("maintenance", EnvConfig.model_validate(data))


def newest(fake: FakeVercel) -> Deployment:
    return max(fake.deployments.values(), key=lambda d: d.created)


def variables(fake: FakeVercel) -> dict[str, str]:
    return {env.key: env.value for env in fake.projects["prj_store"].envs}


def assert_no_secret(result: RemediationResult | None) -> None:
    assert TOKEN not in repr(result)


async def test_maintenance_mode_sets_the_variable_and_redeploys_production(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    result = await make(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert variables(fake) == {"MAINTENANCE_MODE": "true"}
    rebuilt = newest(fake)
    assert rebuilt.state == "READY"
    assert rebuilt.env == {"MAINTENANCE_MODE": "true"}
    assert production(fake) == rebuilt.id
    assert result.data["redeploy"] == {
        "from": deployments["current"].id,
        "id": rebuilt.id,
        "url": rebuilt.url,
    }
    assert result.data["polls"] == 2
    assert result.data["ready_state"] == "READY"
    assert clock.slept == [5.0]
    env_id = fake.projects["prj_store"].envs[0].id
    assert result.data["env_id"] == env_id
    assert await ctx.state.get(ENV_ID) == env_id
    assert "true" not in repr(result.data)  # the value never goes to the timeline
    assert_no_secret(result)


async def test_maintenance_mode_sends_the_documented_requests(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    await make(api_url).execute(ctx, make_incident())

    [upsert] = fake.requests("POST", ENV)
    assert upsert.query == {"upsert": "true", "teamId": TEAM}
    assert upsert.body == {
        "key": "MAINTENANCE_MODE",
        "value": "true",
        "type": "encrypted",
        "target": ["production"],
    }
    [redeploy] = fake.requests("POST", CREATE)
    assert redeploy.query == {"forceNew": "1", "teamId": TEAM}
    assert redeploy.body == {
        "name": "storefront",
        "deploymentId": deployments["current"].id,
        "target": "production",
    }
    polled = fake.requests("GET", f"/v13/deployments/{newest(fake).id}")
    assert len(polled) == 2
    assert all(call.headers["Authorization"] == f"Bearer {TOKEN}" for call in fake.calls)


async def test_resolve_removes_the_variable_and_redeploys_again(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    remediation = make(api_url)
    await remediation.execute(ctx, make_incident())
    env_id = await ctx.state.get(ENV_ID)
    in_maintenance = newest(fake)

    result = await remediation.resolve(ctx, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert [c.path for c in fake.calls if c.method == "DELETE"] == [
        f"/v9/projects/prj_store/env/{env_id}"
    ]
    assert variables(fake) == {}
    rebuilt = newest(fake)
    assert rebuilt.env == {}
    assert production(fake) == rebuilt.id
    assert result.data["redeploy"]["from"] == in_maintenance.id
    assert await ctx.state.get(ENV_ID) is None
    assert_no_secret(result)


async def test_resolve_after_a_restart_finds_the_variable_by_its_key(
    ctx: RemediationContext,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    remediation = make(api_url)
    await remediation.execute(ctx, make_incident())
    forgotten = RemediationContext(session=session, clock=clock)

    result = await remediation.resolve(forgotten, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert len(fake.requests("GET", ENV)) == 1
    assert variables(fake) == {}


async def test_resolve_with_the_variable_already_gone_has_nothing_to_do(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    await ctx.state.put(ENV_ID, "env_deleted_by_hand")

    result = await make(api_url).resolve(ctx, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert result.detail == "MAINTENANCE_MODE is not set: nothing to undo"
    assert fake.requests("POST", CREATE) == []


async def test_remove_takes_maintenance_mode_off_as_a_remediation_of_its_own(
    ctx: RemediationContext,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    await make(api_url).execute(ctx, make_incident())
    in_maintenance = newest(fake)
    data = config(api_url, "vercel_env", remove=True)
    off = VercelEnv("maintenance_off", EnvConfig.model_validate(data))
    own = RemediationContext(session=session, clock=clock)  # its own state: found by key

    result = await off.execute(own, make_incident())

    assert result.ok, result.detail
    assert variables(fake) == {}
    rebuilt = newest(fake)
    assert rebuilt.env == {}
    assert production(fake) == rebuilt.id
    assert result.data["redeploy"]["from"] == in_maintenance.id
    deleted = [c.path for c in fake.calls if c.method == "DELETE"]
    assert deleted == [f"/v9/projects/prj_store/env/{await ctx.state.get(ENV_ID)}"]
    assert len(fake.requests("GET", ENV)) == 1
    # Run again (an undo after a step that already turned it off): nothing set, no build.
    builds = len(fake.requests("POST", CREATE))
    again = await off.execute(own, make_incident())
    assert again.ok, again.detail
    assert again.detail == "MAINTENANCE_MODE is not set: nothing to undo"
    assert len(fake.requests("POST", CREATE)) == builds
    assert await off.resolve(own, make_incident()) is None
    assert_no_secret(result)


async def test_an_existing_variable_is_updated_in_place(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    remediation = make(api_url, value="on", env_type="plain")
    await remediation.execute(ctx, make_incident())
    first = fake.projects["prj_store"].envs[0].id

    result = await make(api_url, value="again").execute(ctx, make_incident())

    assert result.ok, result.detail
    [env] = fake.projects["prj_store"].envs
    assert (env.id, env.value, env.type) == (first, "again", "encrypted")


async def test_a_failed_build_takes_the_variable_back(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    fake.build_outcome = "ERROR"

    result = await make(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == f"set MAINTENANCE_MODE, but the redeploy {newest(fake).id} ended ERROR"
    # Resolve never follows a failure, so nothing may be left for the next deploy to pick up.
    assert result.data["undo"] == {"variable_removed": True}
    assert variables(fake) == {}
    assert production(fake) == deployments["current"].id


async def test_a_build_not_ready_in_time_is_cancelled_and_the_variable_taken_back(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.ready_after = 10_000
    start = clock.now()

    result = await make(api_url, verify_timeout="1m").execute(ctx, make_incident())

    building = newest(fake)
    assert not result.ok
    assert result.recoverable
    assert result.detail == (
        f"set MAINTENANCE_MODE, but the redeploy {building.id} is BUILDING after 60s"
    )
    assert result.data["polls"] == 13
    assert clock.now() - start == 60.0
    assert building.state == "CANCELED"
    assert fake.requests("PATCH", f"/v12/deployments/{building.id}/cancel")
    assert result.data["undo"] == {"cancelled": building.id, "variable_removed": True}
    assert variables(fake) == {}


async def test_a_project_without_production_deployment_cannot_redeploy(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    project = fake.add_project("prj_store", "storefront", TEAM)
    fake.add_deployment(project, target=None)

    result = await make(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert "no production deployment to redeploy" in result.detail
    assert result.data["undo"] == {"variable_removed": True}
    assert variables(fake) == {}


async def test_a_rejected_token_changes_nothing(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await make(api_url, token="vcp_wrong").execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail.startswith("set variable: token rejected (HTTP 403")
    assert len(fake.calls) == 1
    assert variables(fake) == {}
    assert_no_secret(result)


async def test_5xx_and_429_on_the_way_are_retried(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.fail_next(502, count=2, method="GET")

    result = await make(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert len(fake.requests("POST", CREATE)) == 1
    assert len(clock.slept) >= 2


async def test_a_redeploy_that_may_have_started_a_build_is_not_sent_again(
    ctx: RemediationContext,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.fail_next(502, method="POST", path=CREATE)

    result = await make(api_url).execute(ctx, make_incident())

    # A 5xx may come after Vercel started the build: a second POST could start another.
    assert not result.ok
    assert not result.recoverable
    assert len(fake.requests("POST", CREATE)) == 1
    assert result.detail.endswith("not retried: Vercel may have started the build")
    assert result.data["undo"] == {"variable_removed": True}
    assert variables(fake) == {}


async def test_a_rate_limited_redeploy_is_sent_again_after_retry_after(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    """A 429 started nothing: the POST goes again once the wait Vercel asks for is over,
    which Vercel tells by its reset time (X-RateLimit-Reset), not by Retry-After."""
    fake.fail_next(429, reset_in=7, method="POST", path=CREATE)

    result = await make(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert len(fake.requests("POST", CREATE)) == 2
    assert clock.slept[0] == 7.0


async def test_a_cancel_that_fails_still_takes_the_variable_back(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    fake.ready_after = 10_000
    fake.fail_next(500, count=4, method="PATCH")

    result = await make(api_url, verify_timeout="10s").execute(ctx, make_incident())

    assert not result.ok
    assert result.data["undo"]["variable_removed"] is True
    assert result.data["undo"]["cancel_error"].startswith("cancel redeploy: gave up after 4")
    assert variables(fake) == {}


async def test_a_resolve_whose_redeploy_failed_redeploys_when_run_again(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    remediation = make(api_url)
    await remediation.execute(ctx, make_incident())
    in_maintenance = newest(fake)
    fake.build_outcome = "ERROR"

    failed = await remediation.resolve(ctx, make_incident())
    fake.build_outcome = "READY"
    again = await remediation.resolve(ctx, make_incident())

    assert failed is not None
    assert not failed.ok
    assert variables(fake) == {}
    # The variable is gone but production still runs the build that has it: build again.
    assert again is not None
    assert again.ok, again.detail
    assert production(fake) == newest(fake).id != in_maintenance.id
    assert newest(fake).env == {}


# -- the fake keeps Vercel's contract ---------------------------------------------------------


async def test_the_fake_refuses_a_missing_token_and_invalid_bodies(
    session: aiohttp.ClientSession, deployments: dict[str, Deployment], api_url: str
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    team = {"teamId": TEAM}

    async with session.get(f"{api_url}/v9/projects/prj_store", params=team) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["missingToken"] is True
    async with session.post(f"{api_url}{CREATE}", json={}, params=team, headers=auth) as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": {
                "code": "bad_request",
                "message": "Invalid request: missing required property `name`.",
            }
        }
    bad = {"key": "X", "value": "1", "type": "magic", "target": ["production"]}
    async with session.post(f"{api_url}{ENV}", json=bad, params=team, headers=auth) as resp:
        assert resp.status == 400
    async with session.get(
        f"{api_url}/v6/deployments", params={"limit": "x"}, headers=auth
    ) as resp:
        assert resp.status == 400


async def test_a_variable_vercel_lists_as_failed_is_a_refusal(
    ctx: RemediationContext, api_url: str
) -> None:
    client = VercelClient(ctx, make(api_url).config)
    failed = {"error": {"code": "ENV_ALREADY_EXISTS", "message": f"exists ({TOKEN})"}}

    with pytest.raises(VercelFailure) as caught:
        _created_id(client, {"created": [], "failed": [failed]})

    result = caught.value.result
    assert not result.ok
    assert not result.recoverable
    assert result.detail == "set variable: refused (ENV_ALREADY_EXISTS: exists (***))"


# -- what production really serves (issue 20) -------------------------------------------------


async def test_a_blocked_build_is_final_not_waited_for(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.build_outcome = "BLOCKED"

    result = await make(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail.endswith("ended BLOCKED")
    assert sum(clock.slept) < 30
    assert variables(fake) == {}


async def test_a_build_staged_after_a_rollback_is_not_maintenance_mode_on(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    # After a rollback Vercel no longer assigns production domains to new builds.
    fake.projects["prj_store"].auto_assign = False

    result = await make(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert "is staged, not served" in result.detail
    assert result.data["ready_substate"] == "STAGED"
    assert production(fake) == deployments["current"].id
    assert sum(clock.slept) < 30
    # Not live, so the variable is taken back: the next deploy must not turn it on unseen.
    assert variables(fake) == {}


async def test_success_means_production_serves_the_new_build(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await make(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert production(fake) == newest(fake).id
    assert result.detail.endswith(f"production serves {newest(fake).id}")


async def test_resolve_after_a_restart_follows_the_variable_list_pages(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    fake.env_page_size = 2
    remediation = make(api_url)
    assert (await remediation.execute(ctx, make_incident())).ok
    project = fake.projects["prj_store"]
    for index in range(5):  # newer variables push ours to the last page
        fake._put_env(
            project,
            None,
            {"key": f"OTHER_{index}", "value": "x", "type": "plain", "target": ["production"]},
        )
    await ctx.state.put("env_id", None)  # a restart forgot the id

    result = await remediation.resolve(ctx, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert "MAINTENANCE_MODE" not in variables(fake)
    listings = fake.requests("GET", "/v10/projects/prj_store/env")
    assert len(listings) == 3
    assert "until" in listings[-1].query


async def test_the_fake_refuses_a_sensitive_development_variable(
    fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    body = {"key": "K", "value": "v", "type": "sensitive", "target": ["development"]}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{api_url}/v10/projects/prj_store/env",
            params={"teamId": TEAM},
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert resp.status == 400
