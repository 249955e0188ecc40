"""config/procedures/restore-from-backup.yaml, end to end: a real runbookd process runs the
shipped procedure against real PostgreSQL (the application's "User" and "Task" tables,
backed up by a real pg_dump and restored by real psql), moto's S3 server and the Vercel and
PagerDuty fakes. The live database is damaged after its backup; the run must bring it back,
or, when it fails at any step, leave it exactly as it was, turn maintenance mode off again
and page."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon.core.clock import SystemClock
from remediations.base import RemediationContext
from remediations.pg_backup import PgBackupConfig, PgBackupRemediation
from tests.backups import (
    KEY_ID,
    PASSWORD,
    PSQL,
    SECRET,
    TASKS,
    USERS,
    Hold,
    databases,
    new_bucket,
    psql,
    put_object,
    read_object,
    s3_for,
    s3_proxy,
    source_database,
)
from tests.fakes import make_incident
from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.fakes.vercel import TEAM, TOKEN, FakeVercel
from tests.leaks import find_leaks
from tests.moto_server import moto_server
from tests.pg import ADMIN_DSN, dsn_for
from tests.procedure_daemon import Runbookd, credentials, runbookd, shipped, state_files
from tests.utils import serve

PROCEDURE = "restore_from_backup"
MISSING = "postgres/backup-20000101-000000.sql.gz"
LOST = 500  # tasks deleted from the live database after its backup
DAMAGE = f'DELETE FROM "Task" WHERE id IN (SELECT id FROM "Task" LIMIT {LOST})'  # noqa: S608


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def live() -> Iterator[str]:
    """The application's database, filled; whatever a run left beside it is dropped after."""
    with source_database() as dsn:
        name = dsn.rsplit("/", 1)[1]
        yield name
        for other in databases():
            if other.startswith(name) and other != name:
                psql(ADMIN_DSN, f'DROP DATABASE "{other}" WITH (FORCE)')


def counts(database: str) -> dict[str, int]:
    sql = 'SELECT (SELECT count(*) FROM "User") || \',\' || (SELECT count(*) FROM "Task")'
    out = subprocess.run(
        [PSQL, "--no-psqlrc", "-At", f"--dbname={dsn_for(database)}", "-c", sql],
        capture_output=True,
        timeout=30,
        check=True,
    )
    users, tasks = out.stdout.decode().strip().split(",")
    return {"User": int(users), "Task": int(tasks)}


def beside(name: str, what: str) -> list[str]:
    return sorted(d for d in databases() if d.startswith(f"{name}_{what}_"))


class World:
    def __init__(self, vercel: FakeVercel, pager: FakePagerDuty, bucket: str) -> None:
        self.vercel, self.pager, self.bucket = vercel, pager, bucket
        self.daemon: Runbookd
        self.daemons: list[Runbookd] = []  # each process, a restart's too
        self.hold_downloads = False
        # The daemon's requests to S3 go through this: it holds the download of a backup
        # (not of its manifest) while hold_downloads is set.
        self.gate = Hold(
            lambda r: self.hold_downloads and r.method == "GET" and r.path.endswith(".sql.gz")
        )
        self.restart: Callable[[], AbstractAsyncContextManager[Runbookd]]

    def maintenance(self) -> str | None:
        """MAINTENANCE_MODE as production serves it (the build's), and as the project has it."""
        project = self.vercel.projects["prj_store"]
        set_to = {e.value for e in project.envs if e.key == "MAINTENANCE_MODE"}
        serving = self.vercel.deployments[project.production_id or ""].env.get("MAINTENANCE_MODE")
        assert set_to <= {serving}, (set_to, serving)  # what is set is what production serves
        return serving


@pytest.fixture
async def world(tmp_path: Path, endpoint: str, live: str) -> AsyncIterator[tuple[World, str]]:
    """The fakes, a backup of `live` in a fresh bucket, the live database then damaged, and
    runbookd running the shipped file; yields the world and the backup's key."""
    s3 = s3_for(endpoint)
    bucket = new_bucket(s3)
    async with aiohttp.ClientSession() as session:
        ctx = RemediationContext(session, SystemClock())
        config = {
            "type": "pg_backup",
            "dsn": dsn_for(live, password=PASSWORD),
            "count_tables": ["User", "Task"],
            "bucket": bucket,
            "prefix": "postgres/",
            "endpoint_url": endpoint,
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        }
        made = await PgBackupRemediation("backup", PgBackupConfig.model_validate(config)).execute(
            ctx, make_incident()
        )
        assert made.ok, made.detail
    psql(dsn_for(live), DAMAGE)
    assert counts(live) == {"User": USERS, "Task": TASKS - LOST}

    vercel = FakeVercel(teams={TEAM: "acme"}, ready_after=1)
    project = vercel.add_project("prj_store", "storefront", TEAM)
    vercel.add_deployment(project)
    w = World(vercel, FakePagerDuty(), bucket)
    health = web.Application()
    health.router.add_get("/api/health", healthy)
    async with (
        serve(vercel.app) as vercel_url,
        serve(w.pager.app) as pager_url,
        serve(health) as app_url,
        s3_proxy(endpoint, w.gate) as s3_url,
    ):
        maintenance = {"api_url": vercel_url, "poll_interval": "50ms", "verify_timeout": "10s"}
        changes: dict[str, Any] = {
            "checks.database.dsn": dsn_for(live),
            "remediations.restore_database.endpoint_url": s3_url,
            "remediations.restore_database.access_key_id": KEY_ID,
            "remediations.restore_database.secret_access_key": SECRET,
            "remediations.restore_database.database": live,
            "remediations.page_oncall.events_url": f"{pager_url}/v2/enqueue",
        }
        for name in ("maintenance_on", "maintenance_off"):
            changes |= {f"remediations.{name}.{k}": v for k, v in maintenance.items()}
        files = credentials(
            tmp_path / "credentials",
            {
                "vercel": TOKEN,
                "restore_dsn": dsn_for("postgres", password=PASSWORD),
                "database_password": PASSWORD,
                "pagerduty": ROUTING_KEY,
            },
        )
        env = {
            "CREDENTIALS_DIRECTORY": str(files),
            "APP_URL": app_url,
            "VERCEL_PROJECT_ID": "prj_store",
            "VERCEL_TEAM_ID": TEAM,
            "BACKUP_BUCKET": bucket,
        }
        config = shipped("restore-from-backup.yaml", changes)

        @asynccontextmanager
        async def start() -> AsyncIterator[Runbookd]:
            async with runbookd(config, tmp_path, env) as daemon:
                w.daemon = daemon
                w.daemons.append(daemon)
                yield daemon

        w.restart = start
        async with start() as daemon:
            yield w, str(made.data["key"])
        outputs = {"log": daemon.log.read_bytes()} | state_files(daemon.state)
        answers = [answer for d in w.daemons for answer in d.answers]
        outputs |= {f"answer {i}": answer for i, answer in enumerate(answers)}
        given = {"db": PASSWORD, "s3": SECRET, "vercel": TOKEN, "pd": ROUTING_KEY}
        assert find_leaks(given, outputs) == []


async def healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


AGAIN = {"by": "lead", "reason": "the copy was not swapped in: run it again"}


async def approve(daemon: Runbookd, run_id: str, verb: str = "approve") -> None:
    await daemon.at_step(run_id, "approve")
    body = {"by": "lead", "reason": "restoring last night's backup"}
    status, answer = await daemon.call("post", f"procedure-runs/{run_id}/{verb}", body)
    assert status in (200, 202), answer


async def test_a_run_restores_the_chosen_backup_into_the_live_database(
    world: tuple[World, str], live: str
) -> None:
    w, key = world
    leftover = f"{live}_restoring_20000101_000000"  # a copy a run cut short left behind
    psql(ADMIN_DSN, f'CREATE DATABASE "{leftover}"')
    began = time.monotonic()
    run_id = await w.daemon.start(PROCEDURE, {"backup": key})
    await w.daemon.at_step(run_id, "approve")
    assert w.maintenance() == "true"  # users see the maintenance page before anyone approves
    # A session the application's pool still holds: ended for the swap, not waited for.
    held = ["--no-psqlrc", f"--dbname={dsn_for(live)}", "-c", "SELECT pg_sleep(60)"]
    session = await asyncio.create_subprocess_exec(PSQL, *held, stderr=asyncio.subprocess.PIPE)
    try:
        await approve(w.daemon, run_id)
        run = await w.daemon.ended(run_id)
        _, said = await asyncio.wait_for(session.communicate(), 10)
    finally:
        if session.returncode is None:
            session.kill()
            await session.wait()
    assert session.returncode != 0
    assert b"terminat" in said

    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 6
    restored = run["steps"][2]["detail"]
    assert f"restored {key}" in restored
    assert "row counts match the manifest (Task 6000, User 2000)" in restored
    assert counts(live) == {"User": USERS, "Task": TASKS}
    (previous,) = beside(live, "before_restore")  # kept, never dropped
    assert f"kept as {previous}" in restored
    assert f"dropped {leftover} (an interrupted restore's copy)" in restored
    assert counts(previous) == {"User": USERS, "Task": TASKS - LOST}
    assert beside(live, "restoring") == []
    assert w.maintenance() is None  # the variable removed, and production rebuilt
    assert len(w.vercel.deployments) == 3  # the first, maintenance on, maintenance off
    assert w.pager.events == []
    print(f"restore procedure: {time.monotonic() - began:.1f}s")


def corrupt(endpoint: str, bucket: str, key: str) -> None:
    """The backup's bytes changed in the middle, its size kept: only its sha256 tells."""
    s3 = s3_for(endpoint)
    data = bytearray(read_object(s3, bucket, key))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    put_object(s3, bucket, key, bytes(data))


def miscount(endpoint: str, bucket: str, key: str) -> None:
    """The manifest says one more user than the backup holds."""
    s3 = s3_for(endpoint)
    manifest = json.loads(read_object(s3, bucket, key + ".manifest.json"))
    manifest["row_counts"]["User"] += 1
    put_object(s3, bucket, key + ".manifest.json", json.dumps(manifest).encode())


@pytest.mark.parametrize("failure", ["rejected", "missing", "checksum", "row_counts"])
async def test_a_failed_run_leaves_the_live_database_as_it_was_turns_maintenance_off_and_pages(
    world: tuple[World, str], live: str, endpoint: str, failure: str
) -> None:
    w, key = world
    if failure == "checksum":
        corrupt(endpoint, w.bucket, key)
    elif failure == "row_counts":
        miscount(endpoint, w.bucket, key)
    # `latest`, the backup made above; or one that is not there
    params = {"backup": MISSING} if failure == "missing" else {}
    run_id = await w.daemon.start(PROCEDURE, params)
    await approve(w.daemon, run_id, "reject" if failure == "rejected" else "approve")
    run = await w.daemon.ended(run_id)

    assert run["status"] == "failed", run
    statuses = [s["status"] for s in run["steps"]]
    if failure == "rejected":
        assert statuses == ["undone", "failed", "pending", "pending", "pending", "pending"]
        assert "rejected by lead" in run["steps"][1]["detail"]
    else:
        assert statuses == ["undone", "succeeded", "failed", "pending", "pending", "pending"]
        detail = run["steps"][2]["detail"]
        expected = {
            "missing": f"restore failed: {MISSING}: ",
            "checksum": f"restore failed: checksum mismatch: {key}",
            "row_counts": "restore failed: row count of User: 2000 rows restored, 2001 in the",
        }[failure]
        assert expected in detail, detail
    assert counts(live) == {"User": USERS, "Task": TASKS - LOST}  # untouched
    assert beside(live, "before_restore") == []
    assert beside(live, "restoring") == []  # the copy dropped
    assert w.maintenance() is None  # the variable removed, and production rebuilt
    assert len(w.vercel.deployments) == 3  # the first, maintenance on, maintenance off
    (page,) = w.pager.events
    assert page["event_action"] == "trigger"


async def test_killed_mid_restore_the_run_resumes_and_once_approved_restores_again(
    world: tuple[World, str], live: str
) -> None:
    """kill -9 while the backup streams into the copy: the live database is untouched; after
    the restart the restore's effect is unknown, so it runs again only once approved, and
    the copy the killed run left is dropped by the new one."""
    w, key = world
    w.hold_downloads = True
    run_id = await w.daemon.start(PROCEDURE, {"backup": key})
    await approve(w.daemon, run_id)
    await asyncio.wait_for(w.gate.held.wait(), 20)  # the copy made, the download under way
    (copy,) = beside(live, "restoring")
    await w.daemon.kill()
    assert counts(live) == {"User": USERS, "Task": TASKS - LOST}
    w.hold_downloads = False

    async with w.restart() as daemon:
        run = await daemon.at_step(run_id, "restore")
        deadline = time.monotonic() + 20
        while (await daemon.call("post", f"procedure-runs/{run_id}/approve", AGAIN))[0] >= 400:
            assert time.monotonic() < deadline, await daemon.run(run_id)
            await asyncio.sleep(0.05)
        run = await daemon.ended(run_id)

    assert run["status"] == "succeeded", run
    unknown = [e["message"] for e in run["timeline"] if e["kind"] == "unknown"]
    assert unknown == [
        "restore was running when runbookd stopped; its effect is unknown: approve to run it "
        "again, reject to stop here and undo"
    ]
    assert f"dropped {copy} (an interrupted restore's copy)" in run["steps"][2]["detail"]
    assert counts(live) == {"User": USERS, "Task": TASKS}
    assert beside(live, "restoring") == []
    assert w.maintenance() is None
