"""`vercel_rollback` and `vercel_promote` against a faithful local Vercel REST API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.core.clock import ManualClock
from daemon.core.models import RemediationResult
from remediations.base import RemediationContext
from remediations.retry import EXCERPT_CHARS
from remediations.vercel import (
    ROLLED_BACK_FROM,
    PromoteConfig,
    Reply,
    RollbackConfig,
    VercelClient,
    VercelPromote,
    VercelRollback,
)
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

LIST = "/v6/deployments"
PROJECT = "/v9/projects/prj_store"
DESCRIPTION = "runbookd: incident inc-20270115-0001 (rule high_error_rate)"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake(clock: ManualClock) -> FakeVercel:
    return FakeVercel(teams={TEAM: "acme", "team_other": "other"}, now=clock.now)


@pytest.fixture
def deployments(fake: FakeVercel) -> dict[str, Deployment]:
    return seed_storefront(fake, TEAM)


@pytest.fixture
async def api_url(fake: FakeVercel) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield url


def rollback(api_url: str, **overrides: Any) -> VercelRollback:
    data = config(api_url, "vercel_rollback", **overrides)
    return VercelRollback("rollback-web", RollbackConfig.model_validate(data))


def promote(api_url: str, **overrides: Any) -> VercelPromote:
    data = config(api_url, "vercel_promote", **overrides)
    return VercelPromote("promote-web", PromoteConfig.model_validate(data))


def assert_no_secret(result: RemediationResult | None) -> None:
    assert TOKEN not in repr(result)


def rollback_path(deployment: Deployment) -> str:
    return f"/v1/projects/prj_store/rollback/{deployment.id}"


# -- rollback -------------------------------------------------------------------------------


async def test_rollback_moves_production_to_the_previous_ready_production_deployment(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    current, previous = deployments["current"], deployments["previous"]

    result = await rollback(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert production(fake) == previous.id
    assert result.data["from_deployment"] == {"id": current.id, "url": current.url}
    assert result.data["to_deployment"] == {"id": previous.id, "url": previous.url}
    # The fake switches on the second read of the project: one 5 s wait between the polls.
    assert result.data["polls"] == 2
    assert clock.slept == [5.0]
    assert await ctx.state.get(ROLLED_BACK_FROM) == {
        "id": current.id,
        "url": current.url,
        "incident": "inc-20270115-0001",
        "to": previous.id,
    }
    assert_no_secret(result)


async def test_rollback_sends_the_documented_requests(
    ctx: RemediationContext,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    await rollback(api_url).execute(ctx, make_incident())

    [listing] = fake.requests("GET", LIST)
    assert listing.query == {
        "projectId": "prj_store",
        "target": "production",
        "state": "READY",
        "limit": "20",
        "rollbackCandidate": "true",
        "teamId": TEAM,
    }
    [post] = fake.requests("POST", rollback_path(deployments["previous"]))
    # `description` is a query parameter of this endpoint; it has no request body.
    assert post.query == {"description": DESCRIPTION, "teamId": TEAM}
    assert post.body is None
    assert all(call.headers["Authorization"] == f"Bearer {TOKEN}" for call in fake.calls)
    # What production serves, then two polls.
    assert [call.query for call in fake.requests("GET", PROJECT)] == [{"teamId": TEAM}] * 3


async def test_a_slug_scopes_every_call_instead_of_a_team_id(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await rollback(api_url, team_id=None, slug="acme").execute(ctx, make_incident())

    assert result.ok, result.detail
    assert all(call.query.get("slug") == "acme" for call in fake.calls)
    assert all("teamId" not in call.query for call in fake.calls)


async def test_production_not_switching_within_verify_timeout_is_a_recoverable_failure(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.switch_after = 10_000
    start = clock.now()

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert "does not serve" in result.detail
    assert "after 300s" in result.detail
    # Polls at 0, 5, ..., 300 s: 61 of them, then it gives up at the deadline.
    assert result.data["polls"] == 61
    assert clock.now() - start == 300.0
    # Where it came from is kept even so: the rollback was accepted.
    assert (await ctx.state.get(ROLLED_BACK_FROM))["id"] == deployments["current"].id


async def test_no_previous_ready_production_deployment_is_not_recoverable(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    project = fake.add_project("prj_store", "storefront", TEAM)
    fake.add_deployment(project, "ERROR")
    fake.add_deployment(project, target=None)
    fake.add_deployment(project)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail.startswith("no rollback candidate older than dpl_0003")
    assert result.data["rollback_candidates"] == 1
    assert [call.method for call in fake.calls] == ["GET", "GET"]


async def test_a_rerun_after_production_already_moved_succeeds(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    project = fake.projects["prj_store"]
    # A candidate older than both: where a second step back would go.
    older = fake.add_deployment(project)
    older.created = 0
    project.production_id = deployments["current"].id
    fake.switch_after = 10_000
    first = await rollback(api_url).execute(ctx, make_incident())
    assert not first.ok
    assert first.recoverable
    # The switch completes after runbookd gave up waiting.
    fake.switch_after = 2
    project.switching = None
    project.production_id = deployments["previous"].id

    result = await rollback(api_url).execute(ctx, make_incident())

    # The rerun keeps its target rather than rolling back one step further; Vercel answers
    # 409 to a rollback to what production serves, and that is the goal reached.
    assert fake.requests("POST", rollback_path(older)) == []
    assert len(fake.requests("POST", rollback_path(deployments["previous"]))) == 2
    assert result.ok, result.detail
    assert result.data["polls"] == 1
    assert production(fake) == deployments["previous"].id


async def test_a_conflict_is_reported_with_vercels_reason(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    # Someone else's rollback to the same deployment is still switching.
    fake.projects["prj_store"].switching = (deployments["previous"].id, 10_000)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (
        "rollback: conflict (HTTP 409 conflict: Production already serves, or is switching "
        "to, this deployment)"
    )
    assert result.data["status"] == 409
    assert result.data["error_code"] == "conflict"
    assert_no_secret(result)


async def test_a_rejected_token_is_not_retried(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await rollback(api_url, token="vcp_wrong").execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail.startswith(
        "read project: token rejected (HTTP 403 forbidden: Not authorized"
    )
    assert result.data["attempts"] == 1
    assert len(fake.calls) == 1
    assert_no_secret(result)


async def test_a_team_the_token_may_not_act_for_is_a_rejected_token(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await rollback(api_url, team_id="team_stranger").execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail.startswith("read project: token rejected (HTTP 403 forbidden:")


@pytest.mark.parametrize(
    "overrides",
    [{"project_id": "prj_missing"}, {"team_id": None}],
    ids=["unknown project", "team project asked for without its team"],
)
async def test_an_unknown_project_is_not_found(
    ctx: RemediationContext,
    deployments: dict[str, Deployment],
    api_url: str,
    overrides: dict[str, Any],
) -> None:
    result = await rollback(api_url, **overrides).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (
        "read project: project or deployment not found (HTTP 404 not_found: Project not found)"
    )
    assert result.data["project"] == overrides.get("project_id", "prj_store")


async def test_429_is_retried_after_the_time_vercel_asks_for(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.fail_next(429, retry_after=7, path=LIST)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert len(fake.requests("GET", LIST)) == 2
    assert clock.slept[0] == 7.0


async def test_a_429_telling_only_its_reset_time_is_waited_out_in_full(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    """Vercel's 429 says when the window resets (X-RateLimit-Reset, epoch seconds); a wait
    beyond the call's max_delay is handed to the caller instead of asking again sooner."""
    fake.fail_next(429, reset_in=120, path=LIST)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert result.retry_after == 120.0
    assert len(fake.requests("GET", LIST)) == 1
    assert clock.slept == []


async def test_5xx_is_retried_with_backoff(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.fail_next(500, count=2, method="POST", path=rollback_path(deployments["previous"]))

    result = await rollback(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert len(fake.requests("POST", rollback_path(deployments["previous"]))) == 3
    assert clock.slept[:2] == [1.0, 2.0]


async def test_5xx_that_persists_gives_up_recoverably(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    fake.fail_next(503, count=4, path=rollback_path(deployments["previous"]))

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert result.detail == (
        "rollback: gave up after 4 attempts, last: HTTP 503 internal_server_error: "
        "An unexpected error occurred"
    )
    assert result.data["backoff_seconds"] == [1.0, 2.0, 4.0]
    assert production(fake) == deployments["current"].id


async def test_whole_responses_are_read_not_send_json_excerpt(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    project = fake.add_project("prj_store", "storefront", TEAM)
    history = [fake.add_deployment(project) for _ in range(12)]
    listed = json.dumps({"deployments": [d.list_json() for d in history]})
    assert len(listed) > 5 * EXCERPT_CHARS

    result = await rollback(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["to_deployment"]["id"] == history[-2].id


async def test_a_server_echoing_the_token_never_gets_it_into_a_result(
    ctx: RemediationContext, api_url: str
) -> None:
    client = VercelClient(ctx, RollbackConfig.model_validate(config(api_url, "vercel_rollback")))
    echo = {"error": {"code": f"bad_{TOKEN}", "message": f"token {TOKEN} is invalid"}}

    result = client.failure("rollback", Reply(status=401, body=echo))

    assert not result.ok
    assert "***" in result.detail
    assert_no_secret(result)


# -- promote --------------------------------------------------------------------------------


async def test_promote_undoes_a_rollback(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    await rollback(api_url).execute(ctx, make_incident())
    fake.calls.clear()

    result = await promote(api_url).execute(ctx, make_incident())

    current = deployments["current"]
    assert result.ok, result.detail
    assert production(fake) == current.id
    assert result.data["to_deployment"] == {"id": current.id, "url": current.url}
    assert result.data["polls"] == 2
    [post] = fake.requests("POST", f"/v10/projects/prj_store/promote/{current.id}")
    assert post.query == {"teamId": TEAM}
    assert post.body is None
    assert_no_secret(result)


async def test_promote_a_configured_deployment(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    target = deployments["previous"]

    result = await promote(api_url, deployment_id=target.id).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert production(fake) == target.id
    assert fake.requests("GET", LIST) == []


async def test_promote_with_production_on_the_newest_deployment_does_nothing(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await promote(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert "already serves the newest READY deployment" in result.detail
    assert [call.method for call in fake.calls] == ["GET", "GET"]


async def test_promote_refuses_to_guess_when_production_is_not_in_the_list(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    fake.projects["prj_store"].production_id = deployments["preview"].id

    result = await promote(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert "set deployment_id" in result.detail


async def test_promoting_a_deployment_that_is_not_ready_is_refused(
    ctx: RemediationContext, fake: FakeVercel, deployments: dict[str, Deployment], api_url: str
) -> None:
    failed = deployments["failed"]

    result = await promote(api_url, deployment_id=failed.id).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (
        "promote: HTTP 400 bad_request: Invalid request: the deployment is ERROR, not READY."
    )


async def test_promoting_an_unknown_deployment_is_not_found(
    ctx: RemediationContext, deployments: dict[str, Deployment], api_url: str
) -> None:
    result = await promote(api_url, deployment_id="dpl_gone").execute(ctx, make_incident())

    assert not result.ok
    assert result.detail.startswith("promote: project or deployment not found (HTTP 404")


# -- what production really serves (issue 20) -------------------------------------------------


def storefront_rolled_back(fake: FakeVercel) -> dict[str, Deployment]:
    """oldest -> good -> bad, all having served; an earlier rollback moved production from
    bad back to good, so the newest READY production deployment is not what serves."""
    project = fake.add_project("prj_store", "storefront", TEAM)
    found = {
        "oldest": fake.add_deployment(project),
        "good": fake.add_deployment(project),
        "bad": fake.add_deployment(project),
    }
    project.production_id, project.auto_assign = found["good"].id, False
    return found


async def test_after_an_earlier_rollback_it_rolls_back_from_what_production_serves(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    found = storefront_rolled_back(fake)

    result = await rollback(api_url).execute(ctx, make_incident())

    # Not "from bad to good" (a 409 taken for success while nothing moved): from good to the
    # candidate before it.
    assert fake.requests("POST", rollback_path(found["good"])) == []
    assert result.ok, result.detail
    assert production(fake) == found["oldest"].id
    assert result.data["from_deployment"]["id"] == found["good"].id
    assert result.data["to_deployment"]["id"] == found["oldest"].id


async def test_a_newer_staged_build_is_neither_current_nor_a_target(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    project = fake.add_project("prj_store", "storefront", TEAM)
    previous, current = fake.add_deployment(project), fake.add_deployment(project)
    staged = fake.add_deployment(project, staged=True)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert production(fake) == previous.id
    assert result.data["from_deployment"]["id"] == current.id
    assert fake.requests("POST", rollback_path(staged)) == []
    assert fake.requests("POST", rollback_path(current)) == []


async def test_only_deployments_that_served_production_are_rollback_targets(
    ctx: RemediationContext, fake: FakeVercel, api_url: str
) -> None:
    project = fake.add_project("prj_store", "storefront", TEAM)
    never_served = fake.add_deployment(project, staged=True)
    current = fake.add_deployment(project)

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (
        f"no rollback candidate older than {current.id}, which production serves"
    )
    assert fake.requests("POST", rollback_path(never_served)) == []


async def test_a_failed_alias_switch_ends_the_wait_at_once(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.switch_after = 10_000
    original = fake._switch

    def failing(project: Any, deployment: Deployment, kind: str) -> None:
        original(project, deployment, kind)
        project.last_alias_request["jobStatus"] = "failed"

    fake._switch = failing  # type: ignore[method-assign]

    result = await rollback(api_url).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (f"Vercel's alias switch to {deployments['previous'].id} ended failed")
    assert clock.slept == []


async def test_a_promote_queued_behind_a_rolling_release_is_reported_at_once(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeVercel,
    deployments: dict[str, Deployment],
    api_url: str,
) -> None:
    fake.projects["prj_store"].rolling_release = True
    target = deployments["previous"]

    result = await promote(api_url, deployment_id=target.id).execute(ctx, make_incident())

    # 202: queued; production does not move until the rolling release ends, so neither
    # 300 s of polling nor a retry would change anything.
    assert not result.ok
    assert not result.recoverable
    assert result.data["queued"] is True
    assert "queued behind an active rolling release (HTTP 202)" in result.detail
    assert clock.slept == []
    assert production(fake) == deployments["current"].id
    assert fake.requests("GET", PROJECT) == []
