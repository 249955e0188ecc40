"""The runbook's procedures as shipped in config/procedures/, each run by a real daemon against
local stand-ins: the Vercel fake (tests/fakes/vercel.py), a real PostgreSQL database with the
application's tables and `_prisma_migrations`, moto's S3 server for the real `pg_backup`
(pg_dump), the compose stand-in (tests/bin/docker), fake PagerDuty and Slack, and the
application itself, whose health and version follow what production serves.

Each file is loaded as shipped, its procedures untouched; only where it talks is changed:
settings it reads from the environment (APP_URL, VERCEL_PROJECT_ID...), secrets from
credential files, and the endpoints of Vercel, PagerDuty and S3, the database's DSN, the
migration command (a stand-in for `npx prisma migrate deploy` that writes
`_prisma_migrations` as Prisma does) and, where a test waits for a step to time out, that
step's timeout. Every run: the happy path with the exact Vercel calls in order, and a failure
at each step, which must leave maintenance mode off and page once (critical, naming the
step)."""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml
from aiohttp import web

from daemon.runtime.daemon import Daemon
from remediations.compose import LAST_HEALTHY
from tests.backups import APP_SCHEMA, KEY_ID, PSQL, SECRET, new_bucket, s3_for
from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.fakes.slack import WEBHOOK_PATH, FakeSlack
from tests.fakes.standin import StandIn
from tests.fakes.vercel import TEAM, TOKEN, FakeVercel, production, seed_storefront
from tests.moto_server import moto_server
from tests.paths import BIN, ROOT
from tests.pg import fresh_database
from tests.utils import run_daemon, serve

FOLDER = ROOT / "config" / "procedures"
PROJECT = "/v9/projects/prj_store"
ENV = "/v10/projects/prj_store/env"
BUILD = "/v13/deployments"
SHORT = "3s"  # a step whose timeout a test waits out
RUN_LIMIT = 25.0  # seconds a run may take here before the test fails

# `npx prisma migrate deploy` as far as the database sees it: a row in _prisma_migrations,
# finished when the migration applied, left unfinished (finished_at NULL) when it failed,
# which is what makes `prisma migrate status` (and the postgres check) call it failed.
MIGRATE = """\
import os, subprocess, sys, uuid
mode = os.environ["MIGRATE_MODE"]
name = "20261203120000_" + os.environ["RUNBOOKD_PARAM_VERSION"].replace(".", "_")
finished = "now()" if mode == "applies" else "NULL"
sql = (
    "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, "
    f"applied_steps_count) VALUES ('{uuid.uuid4()}', 'c0ffee', {finished}, '{name}', 1)"
)
subprocess.run([os.environ["PSQL"], "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1",
                os.environ["DATABASE_URL"], "-c", sql], check=True)
if mode == "fails":
    print(f"Error: P3018 A migration failed to apply: {name}", file=sys.stderr)
    sys.exit(1)
print(f"Applying migration `{name}`")
"""


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


# --- the world: the application, and what it is served by -----------------------------------


class App:
    """The storefront as its users see it: `/api/health` and `/api/version` of the release
    served now (`serving`), in maintenance while `maintenance()` says so."""

    def __init__(self, serving: Callable[[], str | None], maintenance: Callable[[], bool]) -> None:
        self.serving, self.maintenance = serving, maintenance
        self.broken: set[str] = set()  # releases whose health fails
        self.versionless: set[str] = set()  # releases whose /api/version fails
        self.app = web.Application()
        self.app.router.add_get("/api/health", self._health)
        self.app.router.add_get("/api/version", self._version)

    async def _health(self, request: web.Request) -> web.Response:
        release = self.serving()
        if self.maintenance():
            return web.json_response({"status": "maintenance"}, status=503)
        if release is None or release in self.broken:
            return web.json_response({"status": "error"}, status=500)
        return web.json_response({"status": "ok"})

    async def _version(self, request: web.Request) -> web.Response:
        release = self.serving()
        if release is None or release in self.versionless:
            return web.json_response({"error": "internal"}, status=500)
        return web.json_response({"version": release})


@dataclass
class World:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    vercel: FakeVercel
    pager: FakePagerDuty
    slack: FakeSlack
    app: App
    urls: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)

    def write_credentials(self) -> None:
        directory = self.tmp / "credentials"
        directory.mkdir(exist_ok=True)
        for name, value in self.credentials.items():
            (directory / f"runbookd_{name}").write_text(value + "\n")
        self.monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))

    def pages(self) -> list[dict[str, Any]]:
        return [e for e in self.pager.events if e["event_action"] == "trigger"]


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    vercel = FakeVercel(teams={TEAM: "acme"})
    seed_storefront(vercel, TEAM)

    def maintenance() -> bool:
        served = vercel.deployments.get(production(vercel) or "")
        return served is not None and served.env.get("MAINTENANCE_MODE") == "true"

    app = App(lambda: production(vercel), maintenance)
    built = World(tmp_path, monkeypatch, vercel, FakePagerDuty(), FakeSlack(), app)
    async with (
        serve(vercel.app) as vercel_url,
        serve(built.pager.app) as pager_url,
        serve(built.slack.app) as slack_url,
        serve(app.app) as app_url,
    ):
        built.urls = {"vercel": vercel_url, "pager": f"{pager_url}/v2/enqueue", "app": app_url}
        built.credentials = {
            "vercel": TOKEN,
            "pagerduty": ROUTING_KEY,
            "slack": slack_url + WEBHOOK_PATH,
        }
        monkeypatch.setenv("APP_URL", app_url)
        monkeypatch.setenv("VERCEL_PROJECT_ID", "prj_store")
        monkeypatch.setenv("VERCEL_TEAM_ID", TEAM)
        yield built


# --- the shipped config, pointed at the world ------------------------------------------------


def adapted(name: str, world: World, timeouts: dict[str, str] | None = None) -> Path:
    """config/procedures/NAME.yaml, talking to the world; its procedures as shipped but for
    the step `timeouts` given."""
    shipped = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    doc = copy.deepcopy(shipped)
    doc["runbookd"] = {"listen": "127.0.0.1:0", "state_dir": str(world.tmp / "state")}
    for remediation in doc["remediations"].values():
        kind = remediation["type"]
        if kind.startswith("vercel_"):
            remediation |= {"api_url": world.urls["vercel"], "poll_interval": "50ms"}
        elif kind == "pagerduty":
            remediation["events_url"] = world.urls["pager"]
    for procedure in doc["procedures"].values():
        for step in procedure["steps"]:
            if step["name"] in (timeouts or {}):
                step["timeout"] = (timeouts or {})[step["name"]]
    untimed = copy.deepcopy(doc["procedures"])
    for procedure_name, procedure in untimed.items():
        for step, as_shipped in zip(
            procedure["steps"], shipped["procedures"][procedure_name]["steps"], strict=True
        ):
            step["timeout"] = as_shipped.get("timeout")
            if step["timeout"] is None:
                del step["timeout"]
    assert untimed == shipped["procedures"]
    world.write_credentials()
    path = world.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- talking to the daemon ------------------------------------------------------------------


async def api(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{daemon.port}/api/v1/{path}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, json=body) as response,
    ):
        return response.status, await response.json()


async def checked(daemon: Daemon, *checks: str) -> None:
    """Each check has a run to read (a precondition reads the last one)."""
    for check in checks:
        daemon.observed.run_now(check)
    deadline = time.monotonic() + 10
    while any(daemon.observed.latest(c) is None for c in checks):
        assert time.monotonic() < deadline, "the checks did not run"
        await asyncio.sleep(0.02)


async def run_to_the_end(daemon: Daemon, procedure: str, params: dict[str, str]) -> dict[str, Any]:
    body = {"params": params, "by": "ana"}
    status, started = await api(daemon, "post", f"procedures/{procedure}/runs", body)
    assert status == 201, started
    deadline = time.monotonic() + RUN_LIMIT
    while True:
        status, run = await api(daemon, "get", f"procedure-runs/{started['id']}")
        assert status == 200, run
        if run["ended_at"] is not None:
            result: dict[str, Any] = run
            return result
        assert time.monotonic() < deadline, f"the run did not end: {run['steps']}"
        await asyncio.sleep(0.05)


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in run["steps"]}


def assert_paged_once(world: World, procedure: str, step: str) -> None:
    [page] = world.pages()
    assert page["payload"]["severity"] == "critical"
    summary = page["payload"]["summary"]
    assert summary.startswith(f"procedure {procedure} failed: {step} failed: "), summary


# --- Database migration deployment ----------------------------------------------------------


@dataclass
class Migration:
    world: World
    dsn: str
    connection: Any  # asyncpg, to the application's database
    bucket: str
    s3: Any
    seeded: set[str]  # Vercel deployments before the run

    async def migrations(self) -> list[tuple[str, bool]]:
        rows = await self.connection.fetch(
            "SELECT migration_name, finished_at IS NOT NULL AS finished "
            "FROM _prisma_migrations WHERE migration_name LIKE '20261203%'"
        )
        return [(row["migration_name"], row["finished"]) for row in rows]

    def builds(self) -> list[str]:
        """Deployments the run created (redeploys), oldest first."""
        made = [d for d in self.world.vercel.deployments.values() if d.id not in self.seeded]
        return [d.id for d in sorted(made, key=lambda d: d.created)]

    def backups(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(obj["Key"] for obj in listed)


@pytest.fixture
async def migration(world: World, s3_endpoint: str) -> AsyncIterator[Migration]:
    s3 = s3_for(s3_endpoint)
    bucket = new_bucket(s3)
    async with fresh_database() as database:
        connection = await database.connect()
        try:
            await connection.execute(APP_SCHEMA)
            world.credentials |= {
                "database_password": "unused-on-a-trusting-server",
                "backup_dsn": database.dsn,
                "backup_key_id": KEY_ID,
                "backup_secret_key": SECRET,
            }
            world.monkeypatch.setenv("BACKUP_BUCKET", bucket)
            world.monkeypatch.setenv("APP_DIR", str(world.tmp))
            seeded = set(world.vercel.deployments)
            yield Migration(world, database.dsn, connection, bucket, s3, seeded)
        finally:
            await connection.close()


def migration_config(
    m: Migration, mode: str, endpoint: str, timeouts: dict[str, str] | None = None
) -> Path:
    script = m.world.tmp / "prisma-migrate-deploy.py"
    script.write_text(MIGRATE)
    path = adapted("migration-deploy", m.world, timeouts)
    doc = yaml.safe_load(path.read_text())
    doc["checks"]["database"]["dsn"] = m.dsn
    doc["remediations"]["backup_db"]["endpoint_url"] = endpoint
    doc["remediations"]["migrate"] |= {
        "argv": [sys.executable, str(script)],
        "env": {"DATABASE_URL": m.dsn, "MIGRATE_MODE": mode, "PSQL": PSQL},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def turned_on(build: str) -> list[tuple[str, str]]:
    """vercel_env setting MAINTENANCE_MODE: upsert, redeploy production, watch it build
    (two reads) and serve."""
    return [
        ("POST", ENV),
        ("GET", PROJECT),
        ("POST", BUILD),
        ("GET", f"{BUILD}/{build}"),
        ("GET", f"{BUILD}/{build}"),
        ("GET", PROJECT),
    ]


def turned_off(env_id: str, build: str) -> list[tuple[str, str]]:
    """vercel_env with remove: true: find the variable by key, delete it, redeploy, watch."""
    deleted = f"/v9/projects/prj_store/env/{env_id}"
    return [("GET", ENV), ("DELETE", deleted), *turned_on(build)[1:]]


def vercel_calls(world: World) -> list[tuple[str, str]]:
    return [(call.method, call.path) for call in world.vercel.calls]


def assert_maintenance_off(m: Migration) -> None:
    vercel = m.world.vercel
    assert vercel.projects["prj_store"].envs == []
    served = vercel.deployments[production(vercel) or ""]
    assert "MAINTENANCE_MODE" not in served.env


async def test_migration_deployment_runs_every_step_in_order(
    migration: Migration, s3_endpoint: str
) -> None:
    m, world = migration, migration.world
    path = migration_config(m, "applies", s3_endpoint)
    async with run_daemon(path) as daemon:
        await checked(daemon, "database")
        started = time.monotonic()
        run = await run_to_the_end(daemon, "migration_deploy", {"version": "v1.4.0"})
        took = time.monotonic() - started

    assert run["status"] == "succeeded", run["timeline"][-1]
    assert set(statuses(run).values()) == {"succeeded"}
    [env] = world.vercel.created_envs
    on, off = m.builds()
    assert vercel_calls(world) == turned_on(on) + turned_off(env.id, off)
    assert world.vercel.deployments[on].env == {"MAINTENANCE_MODE": "true"}
    assert_maintenance_off(m)
    assert production(world.vercel) == off
    assert await m.migrations() == [("20261203120000_v1_4_0", True)]
    assert len(m.backups()) >= 2, "a backup is a dump and its manifest"
    assert world.pages() == []
    assert took < RUN_LIMIT


@dataclass(frozen=True)
class Breaks:
    """Where a migration deployment fails, and what must be left."""

    step: str
    mode: str = "applies"  # what the migration does
    maintenance_on_refused: bool = False
    no_bucket: bool = False
    app_broken: bool = False
    timeouts: dict[str, str] = field(default_factory=dict)


MIGRATION_FAILURES = [
    Breaks("backup", no_bucket=True),
    Breaks("maintenance_on", maintenance_on_refused=True),
    Breaks("migrate", mode="fails"),
    Breaks("migrations_applied", mode="leaves_unfinished", timeouts={"migrations_applied": SHORT}),
    Breaks("healthy", app_broken=True, timeouts={"healthy": SHORT}),
]
STEPS = ["backup", "maintenance_on", "migrate", "migrations_applied", "maintenance_off", "healthy"]


@pytest.mark.parametrize("breaks", MIGRATION_FAILURES, ids=lambda b: b.step)
async def test_a_migration_deployment_failing_at_a_step_leaves_maintenance_off_and_pages(
    migration: Migration, s3_endpoint: str, breaks: Breaks
) -> None:
    m, world = migration, migration.world
    if breaks.no_bucket:
        world.monkeypatch.setenv("BACKUP_BUCKET", "no-such-bucket")
    if breaks.maintenance_on_refused:
        world.vercel.fail_next(400, method="POST", path=ENV)
    path = migration_config(m, breaks.mode, s3_endpoint, breaks.timeouts)
    async with run_daemon(path) as daemon:
        await checked(daemon, "database")
        if breaks.app_broken:  # every release from now on fails its health check
            world.app.serving = lambda: "a release that fails"
            world.app.broken.add("a release that fails")
        run = await run_to_the_end(daemon, "migration_deploy", {"version": "v1.4.0"})

    assert run["status"] == "failed"
    failed_at = STEPS.index(breaks.step)
    expected = dict.fromkeys(STEPS[:failed_at], "succeeded") | {breaks.step: "failed"}
    expected |= dict.fromkeys(STEPS[failed_at + 1 :], "pending")
    if failed_at > STEPS.index("maintenance_on"):
        expected["maintenance_on"] = "undone"
    assert statuses(run) == expected
    assert_paged_once(world, "migration_deploy", breaks.step)
    assert world.slack.messages == []
    assert_maintenance_off(m)

    calls, builds, envs = vercel_calls(world), m.builds(), world.vercel.created_envs
    if breaks.step == "backup":
        assert calls == []
        assert m.backups() == []
    elif breaks.step == "maintenance_on":
        assert calls == [("POST", ENV)]  # refused: nothing set, nothing built
        assert builds == []
    elif breaks.step == "healthy":
        # maintenance_off ran as a step; its undo after the failure finds nothing to remove.
        [env], (on, off) = envs, builds
        assert calls == [*turned_on(on), *turned_off(env.id, off), ("GET", ENV)]
    else:  # the undo turned maintenance off
        [env], (on, off) = envs, builds
        assert calls == turned_on(on) + turned_off(env.id, off)
    ran = breaks.step not in ("backup", "maintenance_on")
    finished = breaks.mode == "applies"
    assert await m.migrations() == ([("20261203120000_v1_4_0", finished)] if ran else [])


# --- Application rollback (Vercel) ----------------------------------------------------------


ROLLBACK_STEPS = ["previous_deployment", "healthy", "version_served", "announce"]


def rollback_calls(target: str) -> list[tuple[str, str]]:
    """vercel_rollback: what production serves, the candidates, the rollback, then the
    project read until production serves the target (two reads in the fake)."""
    return [
        ("GET", PROJECT),
        ("GET", "/v6/deployments"),
        ("POST", f"/v1/projects/prj_store/rollback/{target}"),
        ("GET", PROJECT),
        ("GET", PROJECT),
    ]


@pytest.fixture
def storefront(world: World) -> dict[str, str]:
    """The storefront's releases by role: the one production serves is broken."""
    vercel = world.vercel
    ready = sorted((d for d in vercel.deployments.values() if d.served), key=lambda d: d.created)
    previous, current = ready[-2].id, ready[-1].id
    assert production(vercel) == current
    world.app.broken.add(current)
    return {"previous": previous, "current": current}


async def test_application_rollback_on_vercel_goes_back_checks_and_announces(
    world: World, storefront: dict[str, str]
) -> None:
    path = adapted("app-rollback", world)
    async with run_daemon(path) as daemon:
        run = await run_to_the_end(daemon, "app_rollback", {"reason": "checkout 500s"})

    assert run["status"] == "succeeded", run["timeline"][-1]
    assert list(statuses(run).values()) == ["succeeded"] * 4
    assert vercel_calls(world) == rollback_calls(storefront["previous"])
    [rollback] = world.vercel.requests(
        "POST", f"/v1/projects/prj_store/rollback/{storefront['previous']}"
    )
    assert rollback.query["description"] == f"runbookd: incident {run['id']} (rule app_rollback)"
    assert production(world.vercel) == storefront["previous"]
    [message] = world.slack.messages
    assert "Production rolled back to the previous deployment" in str(message)
    assert world.pages() == []


@pytest.mark.parametrize("step", ["previous_deployment", "healthy", "version_served"])
async def test_an_application_rollback_failing_at_a_step_pages_and_announces_nothing(
    world: World, storefront: dict[str, str], step: str
) -> None:
    target = storefront["previous"]
    if step == "previous_deployment":  # Vercel refuses the rollback
        world.vercel.fail_next(400, method="POST", path=f"/v1/projects/prj_store/rollback/{target}")
    elif step == "healthy":  # the previous release is broken too
        world.app.broken.add(target)
    else:
        world.app.versionless.add(target)
    path = adapted("app-rollback", world, {step: SHORT} if step != "previous_deployment" else {})
    async with run_daemon(path) as daemon:
        run = await run_to_the_end(daemon, "app_rollback", {"reason": "checkout 500s"})

    assert run["status"] == "failed"
    failed_at = ROLLBACK_STEPS.index(step)
    expected = dict.fromkeys(ROLLBACK_STEPS[:failed_at], "succeeded") | {step: "failed"}
    assert statuses(run) == expected | dict.fromkeys(ROLLBACK_STEPS[failed_at + 1 :], "pending")
    assert_paged_once(world, "app_rollback", step)
    assert world.slack.messages == []
    if step == "previous_deployment":
        assert vercel_calls(world) == rollback_calls(target)[:3]
        assert production(world.vercel) == storefront["current"]
    else:
        assert vercel_calls(world) == rollback_calls(target)
        assert production(world.vercel) == target


# --- Application rollback (docker compose) ----------------------------------------------------

GOOD, BAD = "example/web:1.4.2", "example/web:1.5.0-bad"
COMPOSE_STEPS = ["previous_image", "healthy", "version_served", "announce"]


@pytest.fixture
def shop(world: World, standin: StandIn) -> Path:
    """/srv/app of the compose variant: project `shop`, its web service on GOOD; the
    application serves whatever image `web` runs."""
    directory = world.tmp / "shop"
    directory.mkdir()
    (directory / "compose.yaml").write_text(
        f"services:\n  web:\n    image: {GOOD}\n    ports: ['8080:80']\n"
    )
    standin.run("web", GOOD)

    def serving() -> str | None:
        images = set(standin.images("web"))
        return images.pop() if len(images) == 1 else None

    world.app.serving = serving
    world.app.broken.add(BAD)
    return directory


def compose_config(world: World, shop: Path, standin: StandIn, timeouts: dict[str, str]) -> Path:
    path = adapted("app-rollback-compose", world, timeouts)
    doc = yaml.safe_load(path.read_text())
    doc["remediations"]["rollback"] |= {
        "project_directory": str(shop),
        "docker": str(BIN / "docker"),
        "env": standin.env,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def deploy(standin: StandIn, shop: Path, image: str) -> None:
    (shop / "compose.yaml").write_text(f"services:\n  web:\n    image: {image}\n")
    standin.run("web", image)


async def healthy_image_noted(daemon: Daemon) -> None:
    """The rule's check OK: the rule is inactive, so the rollback notes the image web runs."""
    await checked(daemon, "health")
    state = daemon.pipeline.actor.ctx_for("rollback").state
    deadline = time.monotonic() + 10
    while await state.get(LAST_HEALTHY) is None:
        assert time.monotonic() < deadline, "the healthy image was never noted"
        await asyncio.sleep(0.02)
    assert (await state.get(LAST_HEALTHY))["image"] == GOOD


@pytest.mark.parametrize("fails_at", [None, "previous_image", "healthy"])
async def test_application_rollback_on_compose(
    world: World, standin: StandIn, shop: Path, fails_at: str | None
) -> None:
    timeouts = {"healthy": SHORT} if fails_at == "healthy" else {}
    path = compose_config(world, shop, standin, timeouts)
    async with run_daemon(path) as daemon:
        if fails_at != "previous_image":  # nothing seen healthy: nothing to go back to
            await healthy_image_noted(daemon)
        deploy(standin, shop, BAD)
        if fails_at == "healthy":
            world.app.broken.add(GOOD)  # the last healthy image no longer is (its database?)
        run = await run_to_the_end(daemon, "app_rollback", {"reason": "checkout 500s"})

    if fails_at is None:
        assert run["status"] == "succeeded", run["timeline"][-1]
        assert list(statuses(run).values()) == ["succeeded"] * 4
        assert standin.images("web") == [GOOD]
        override = yaml.safe_load((shop / ".runbookd/rollback.override.yml").read_text())
        assert override == {"services": {"web": {"image": GOOD}}}
        [message] = world.slack.messages
        assert "web rolled back to the image last seen healthy" in str(message)
        assert world.pages() == []
        return
    assert run["status"] == "failed"
    failed_at = COMPOSE_STEPS.index(fails_at)
    expected = dict.fromkeys(COMPOSE_STEPS[:failed_at], "succeeded") | {fails_at: "failed"}
    assert statuses(run) == expected | dict.fromkeys(COMPOSE_STEPS[failed_at + 1 :], "pending")
    assert_paged_once(world, "app_rollback", fails_at)
    assert world.slack.messages == []
    if fails_at == "previous_image":
        assert "no healthy image recorded yet" in run["steps"][0]["detail"]
        assert standin.images("web") == [BAD]
