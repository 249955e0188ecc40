"""compose_rollback and compose_scale against tests/bin/docker, a stand-in for the compose
v2 plugin that checks its argv, logs each call and keeps the project's containers in a file.

The stand-ins start with `#!/usr/bin/env python3` and need PyYAML: the interpreter running
the tests (whose environment has it) goes on PATH right after tests/bin, so `env` finds it.
PATH is inherited; where the stand-in keeps its log and state comes in through the config's
`env:`, as DOCKER_HOST does in a real deployment.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from daemon.clients.processes import INHERITED_ENV
from daemon.core.clock import ManualClock, settle
from remediations.base import MemoryState, RemediationContext
from tests.fakes import make_incident
from tests.fakes.compose import project_directory, rollback, scale, write_compose
from tests.fakes.standin import StandIn
from tests.paths import BIN

GOOD = "example/web:1.4.2"
BAD = "example/web:1.5.0-bad"
DIGEST = "example/web@sha256:" + "ab" * 32
BASE = ["docker", "compose", "-f", "docker-compose.yml", "-p", "shop"]
OVERRIDE = ".runbookd/rollback.override.yml"


@pytest.fixture
def clock() -> ManualClock:
    # Sleeps (scale_in_after) move the clock at once; the tests read clock.slept.
    return ManualClock(autojump=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_directory(tmp_path, GOOD)


def values(ctx: RemediationContext) -> dict[str, Any]:
    assert isinstance(ctx.state, MemoryState)
    return ctx.state.values


PS = [*BASE, "ps", "--all", "--format", "json", "web"]


# --- healthy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy_array", [False, True])
async def test_healthy_records_the_running_image(
    ctx: RemediationContext, standin: StandIn, project: Path, legacy_array: bool
) -> None:
    standin.set(ps_json_array=legacy_array)

    await rollback(project, standin).healthy(ctx)

    assert values(ctx)["last_healthy"] == {"image": GOOD, "seen_at": ctx.clock.now()}
    assert standin.argvs() == [PS]
    assert standin.calls()[0]["cwd"] == str(project)


async def test_healthy_writes_only_when_the_image_changes(
    ctx: RemediationContext, standin: StandIn, project: Path, clock: ManualClock
) -> None:
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)
    first = clock.now()
    await clock.advance(60)
    await remediation.healthy(ctx)
    assert values(ctx)["last_healthy"] == {"image": GOOD, "seen_at": first}

    standin.run("web", "example/web:1.4.3")
    await clock.advance(60)
    await remediation.healthy(ctx)

    assert values(ctx)["last_healthy"] == {"image": "example/web:1.4.3", "seen_at": clock.now()}


@pytest.mark.parametrize(
    ("images", "state"),
    [((GOOD, BAD), "running"), ((GOOD,), "exited")],
    ids=["mid-rollout", "nothing-running"],
)
async def test_healthy_notes_nothing_without_one_running_image(
    ctx: RemediationContext, standin: StandIn, project: Path, images: tuple[str], state: str
) -> None:
    standin.run("web", *images, state=state)

    await rollback(project, standin).healthy(ctx)

    assert "last_healthy" not in values(ctx)


async def test_healthy_survives_a_failing_docker(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    standin.set(compose_plugin=False)

    await rollback(project, standin).healthy(ctx)

    assert "last_healthy" not in values(ctx)


# --- compose_rollback ------------------------------------------------------------------------


def deploy(standin: StandIn, project: Path, image: str) -> None:
    """What a deploy does: a new tag in the compose file, and containers running it."""
    write_compose(project, image)
    standin.run("web", image)


async def test_rollback_pins_the_last_healthy_image_in_an_override(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)
    seen_at = ctx.clock.now()
    deploy(standin, project, BAD)
    user_file = (project / "docker-compose.yml").read_bytes()

    result = await remediation.execute(ctx, make_incident())

    up = [*BASE[:4], "-f", OVERRIDE, "-p", "shop", "up", "-d", "--no-deps"]
    up += ["--scale", "web=1", "web"]
    assert result.ok, result.detail
    assert result.detail == f"rolled web back from {BAD} to {GOOD} (pinned in {OVERRIDE})"
    assert standin.argvs()[-3:] == [PS, up, PS]
    assert result.data["argv"] == up
    assert result.data["exit_code"] == 0
    assert result.data["replaced"] == [BAD]
    assert result.data["image"] == GOOD
    assert result.data["healthy_seen_at"] == seen_at
    assert result.data["running"] == [GOOD]
    # The user's file is untouched; the pin lives in runbookd's own override file.
    assert (project / "docker-compose.yml").read_bytes() == user_file
    override = yaml.safe_load((project / OVERRIDE).read_text())
    assert override == {"services": {"web": {"image": GOOD}}}
    assert yaml.safe_load(standin.calls()[-2]["files"][OVERRIDE]) == override
    assert standin.images() == [GOOD]


async def test_rollback_keeps_a_scaled_out_service_scaled(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)
    standin.run("web", BAD, BAD, BAD)

    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["argv"][-3:] == ["--scale", "web=3", "web"]
    assert standin.images() == [GOOD, GOOD, GOOD]


async def test_rollback_preserves_a_digest(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    write_compose(project, DIGEST)
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)
    assert values(ctx)["last_healthy"]["image"] == DIGEST
    deploy(standin, project, BAD)

    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    assert yaml.safe_load((project / OVERRIDE).read_text())["services"]["web"]["image"] == DIGEST
    assert standin.images() == [DIGEST]


async def test_rollback_when_already_on_the_healthy_image(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)

    result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == f"web is already running the last healthy image {GOOD}"
    assert standin.argvs() == [PS, PS]
    assert not (project / OVERRIDE).exists()


async def test_rollback_override_file_is_configurable_and_rewritten(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin, override_file="pins/web.yml")
    (project / "pins").mkdir()
    (project / "pins" / "web.yml").write_text("services: {web: {image: stale:0}}\n")
    await remediation.healthy(ctx)
    deploy(standin, project, BAD)

    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["argv"][4:6] == ["-f", "pins/web.yml"]
    assert yaml.safe_load((project / "pins/web.yml").read_text()) == {
        "services": {"web": {"image": GOOD}}
    }


async def test_rollback_cannot_write_the_override(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin)
    await remediation.healthy(ctx)
    deploy(standin, project, BAD)
    (project / ".runbookd").write_text("a file where the directory should be")

    result = await remediation.execute(ctx, make_incident())

    assert not result.ok
    assert result.detail.startswith(f"cannot write {project / OVERRIDE}: ")
    assert standin.images() == [BAD]
    assert standin.argvs()[-1] == PS  # never ran `up`


# --- compose_scale ---------------------------------------------------------------------------


def up_scale(n: int) -> list[str]:
    return [*BASE, "up", "-d", "--no-deps", "--no-recreate", "--scale", f"web={n}", "web"]


async def test_scale_out_by_one(ctx: RemediationContext, standin: StandIn, project: Path) -> None:
    standin.run("web", GOOD, GOOD)
    standin.run("db", "postgres:16")

    result = await scale(project, standin).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail == "scaled web out from 2 to 3 replicas"
    assert standin.argvs() == [PS, up_scale(3), PS]
    assert result.data["argv"] == up_scale(3)
    assert (result.data["replicas_before"], result.data["replicas_after"]) == (2, 3)
    assert standin.images() == [GOOD] * 3
    assert standin.images("db") == ["postgres:16"]
    assert values(ctx)["scale_in"] == {"replicas": 2, "since": ctx.clock.now()}


async def test_scale_step_stops_at_max(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    standin.run("web", GOOD, GOOD)

    result = await scale(project, standin, step=5, max=4).execute(ctx, make_incident())

    assert result.ok
    assert result.data["argv"] == up_scale(4)


async def test_scale_at_max_does_nothing(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    standin.run("web", GOOD, GOOD, GOOD)

    result = await scale(project, standin).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "web is already at max 3 replicas"
    assert standin.argvs() == [PS]
    assert "scale_in" not in values(ctx)


async def test_resolve_waits_then_scales_back(
    ctx: RemediationContext, standin: StandIn, project: Path, clock: ManualClock
) -> None:
    remediation = scale(project, standin, scale_in_after="10m")
    standin.run("web", GOOD, GOOD)
    await remediation.execute(ctx, make_incident())

    result = await remediation.resolve(ctx, make_incident())

    assert clock.slept == [600.0]
    assert result is not None
    assert result.ok, result.detail
    assert result.detail == "scaled web in from 3 to 2 replicas"
    assert standin.argvs()[-3:] == [PS, up_scale(2), PS]
    assert standin.images() == [GOOD, GOOD]
    assert values(ctx)["scale_in"] is None
    assert await remediation.resolve(ctx, make_incident()) is None


async def test_resolve_never_goes_below_min(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = scale(project, standin, min=2, max=4, step=2)
    standin.run("web", GOOD)
    await remediation.execute(ctx, make_incident())
    assert standin.images() == [GOOD] * 3

    result = await remediation.resolve(ctx, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert result.data["argv"] == up_scale(2)
    assert standin.images() == [GOOD] * 2


async def test_fired_again_keeps_the_original_count(
    session: aiohttp.ClientSession, standin: StandIn, project: Path
) -> None:
    # A clock that only moves when told: resolve() is still waiting when the rule fires again.
    clock = ManualClock()
    ctx = RemediationContext(session=session, clock=clock)
    remediation = scale(project, standin, max=4)
    standin.run("web", GOOD, GOOD)
    await remediation.execute(ctx, make_incident())
    waiting = asyncio.create_task(remediation.resolve(ctx, make_incident()))
    await settle()

    waiting.cancel()  # what the pipeline does when the rule fires again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await remediation.execute(ctx, make_incident())
    assert standin.images() == [GOOD] * 4

    resolving = asyncio.create_task(remediation.resolve(ctx, make_incident()))
    await clock.advance(900)
    result = await resolving

    assert result is not None
    assert result.ok, result.detail
    assert result.detail == "scaled web in from 4 to 2 replicas"


async def test_scale_in_when_someone_already_did(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = scale(project, standin)
    standin.run("web", GOOD, GOOD)
    await remediation.execute(ctx, make_incident())
    standin.run("web", GOOD)

    result = await remediation.resolve(ctx, make_incident())

    assert result is not None
    assert result.ok, result.detail
    assert result.detail == "web is at 1 replicas already; nothing to scale in"
    assert standin.argvs()[-1] == PS


# --- failures --------------------------------------------------------------------------------


async def test_tool_error_reaches_the_result(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    # A misconfigured service name: compose says so on stderr.
    result = await scale(project, standin, service="api").execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "docker compose ps exited with status 1: no such service: api"
    assert result.data["stderr"] == "no such service: api\n"
    assert result.data["exit_code"] == 1


async def test_docker_without_the_compose_plugin(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin)
    values(ctx)["last_healthy"] = {"image": GOOD, "seen_at": 0.0}
    standin.set(compose_plugin=False)

    result = await remediation.execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == (
        "docker compose ps exited with status 2: docker: unknown command: docker compose"
    )
    assert "Run 'docker --help'" in result.data["stderr"]


async def test_missing_docker_executable(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    result = await scale(project, standin, docker="docker-not-installed").execute(
        ctx, make_incident()
    )

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "executable not found: docker-not-installed"
    assert result.data["argv"][:2] == ["docker-not-installed", "compose"]


async def test_a_hanging_docker_times_out_recoverably(
    ctx: RemediationContext, standin: StandIn, project: Path
) -> None:
    remediation = rollback(project, standin, timeout="500ms")
    await remediation.healthy(ctx)
    deploy(standin, project, BAD)
    standin.set(hang=["up"])

    result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert result.detail == "docker compose up timed out after 0.5s"
    assert result.data["timed_out"] is True
    assert result.data["replaced"] == [BAD]


async def test_docker_gets_its_env_and_never_the_daemons_environment(
    ctx: RemediationContext, standin: StandIn, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "the daemon's own")
    env = {"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}

    await rollback(project, standin, env=env).healthy(ctx)

    assert values(ctx)["last_healthy"]["image"] == GOOD
    seen = set(standin.calls()[0]["env"])
    assert "SECRET_TOKEN" not in seen
    assert {"DOCKER_HOST", "STANDIN_LOG", "PATH"} <= seen
    # Nothing but the minimal inherited set and what `env:` names.
    inherited = {name for name in seen if not name.startswith("LC_")} - set(standin.env) - set(env)
    assert inherited <= INHERITED_ENV


# --- the stand-in itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compose", "-p", "shop", "up", "--bogus"], "unknown flag: --bogus"),
        (["compose", "-p", "shop", "up", "-d", "-f", "x.yml"], "unknown shorthand flag: 'f'"),
        (["compose", "-p", "shop", "frob"], 'unknown docker command: "compose frob"'),
        (["compose", "-p", "shop", "up", "-d", "--scale", "web"], 'invalid argument "web"'),
        (["compose", "-p", "shop", "ps", "--format"], "flag needs an argument: --format"),
        (["compose", "-f"], "flag needs an argument: -f"),
        (["ps"], "unknown command: docker ps"),
    ],
)
def test_standin_rejects_what_docker_rejects(
    standin: StandIn, project: Path, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [str(BIN / "docker"), *args], cwd=project, capture_output=True, text=True, check=False
    )

    assert done.returncode == 2
    assert message in done.stderr
