"""`kill -9` of `runbookd run` in the middle of a `pg_backup` upload, with the real pg_dump, a
real PostgreSQL, moto's S3 server (a process) and a proxy in front of moto that stalls the
second run's upload once it is under way.

What on-call must be able to trust afterwards: the bucket holds no object newer than the last
good backup (the multipart upload was never completed), the `s3_backup` check still reports
that good backup as the newest and fresh, and the restarted daemon records the run as
interrupted without running it again by itself. The upload nobody was left to abort is
aborted by a later run once it is older than the backup's timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from remediations.pg_backup import CLOCK_MARGIN
from tests.backups import (
    KEY_ID,
    SECRET,
    Initiated,
    assert_all_encrypted,
    keys,
    new_bucket,
    part_number,
    pending_uploads,
    s3_error,
    s3_for,
    s3_proxy,
    source_database,
    versions,
)
from tests.moto_server import moto_server
from tests.paths import ROOT
from tests.utils import free_port, wait_for

# ~20 MiB gzipped at level 1 (the blob rows do not compress): more than the 15 MiB runbookd
# takes in while part 2 is held (parts 1 and 2 sent, part 3 filled and waiting behind it), so
# pg_dump is surely still writing, blocked on its pipe, when the test looks (at ~14 MiB it
# could finish first on a loaded machine).
BLOB_MIB = 18
PREFIX = "daily/"
JOB = "nightly_backup"
TIMEOUT = 7200.0  # pg_backup's default

CONFIG = """
runbookd:
  listen: 127.0.0.1:{port}
  state_dir: {state}
checks:
  backups:
    type: s3_backup
    bucket: {bucket}
    prefix: {prefix}
    endpoint_url: {moto}
    access_key_id: {key_id}
    secret_access_key: {secret}
    rpo: 1h
    interval: 1h
remediations:
  backup_db:
    type: pg_backup
    dsn: {dsn}
    bucket: {bucket}
    prefix: {prefix}
    endpoint_url: {proxy}
    access_key_id: {key_id}
    secret_access_key: {secret}
    count_tables: ["User", "Task"]
    compression: 1
    part_size: 5MiB
jobs:
  {job}:
    run: backup_db
    schedule: "{schedule}"
    catch_up: 6h
"""


class Stall:
    """A gate for the proxy: once `armed`, holds every part upload from part 2 on, and sets
    `held` when it holds one. Released (the proxy stopping), it refuses them: the process that
    sent them is gone by then."""

    def __init__(self) -> None:
        self.armed = False
        self.held = asyncio.Event()
        self.creates = 0  # CreateMultipartUpload requests seen
        self._release = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse | None:
        if request.method == "POST" and "uploads" in request.query:
            self.creates += 1
        if self.armed and (part_number(request) or 0) >= 2:
            self.held.set()
            await self._release.wait()
            return s3_error("ServiceUnavailable", 503)
        return None

    def release(self) -> None:
        self._release.set()


def far_schedule() -> str:
    """A daily time twelve hours away: the schedule is real (a restart looks for a missed run
    to catch up) but never due while the test runs."""
    return f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"


@contextmanager
def daemon_process(config: Path, log: IO[str]) -> Iterator[subprocess.Popen[str]]:
    # Output into a file, not a pipe nobody drains while the test waits on S3.
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=15)


async def started(proc: subprocess.Popen[str], log: Path, count: int) -> None:
    """Until the log holds `count` start lines (one per daemon that wrote to it)."""

    def ready() -> bool:
        assert proc.poll() is None, f"runbookd exited:\n{log.read_text()[-3000:]}"
        return log.read_text().count('"event": "started"') >= count

    await wait_for(ready, within=30)


async def api(session: aiohttp.ClientSession, port: int, method: str, path: str) -> Any:
    async with session.request(method, f"http://127.0.0.1:{port}/api/v1{path}") as r:
        assert r.status < 300, (r.status, await r.text())
        return await r.json()


async def runs(session: aiohttp.ClientSession, port: int) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await api(session, port, "GET", f"/jobs/{JOB}/runs"))["runs"]
    return listed


def objects(s3: Any, bucket: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get(
        "Contents", []
    )
    return listed


def pg_dumps_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "pg_dump"]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


async def test_kill_9_mid_upload_leaves_the_last_good_backup_newest(
    tmp_path: Path, endpoint: str
) -> None:
    began = time.monotonic()
    s3 = s3_for(endpoint)
    bucket = new_bucket(s3)
    stall, dated = Stall(), Initiated()
    port = free_port()
    log = tmp_path / "runbookd.log"
    with source_database(blob_mib=BLOB_MIB) as dsn:
        async with s3_proxy(endpoint, stall, dated) as proxy, aiohttp.ClientSession() as session:
            config = tmp_path / "runbookd.yaml"
            config.write_text(
                CONFIG.format(
                    port=port,
                    state=tmp_path / "state",
                    bucket=bucket,
                    prefix=PREFIX,
                    moto=endpoint,
                    proxy=proxy,
                    key_id=KEY_ID,
                    secret=SECRET,
                    dsn=dsn,
                    job=JOB,
                    schedule=far_schedule(),
                )
            )
            with log.open("a") as out, daemon_process(config, out) as first:
                await started(first, log, 1)

                # One good backup, run to completion.
                await api(session, port, "POST", f"/jobs/{JOB}/run")
                good_run = await finished_run(session, port)
                assert good_run["outcome"] == "succeeded", good_run
                good_key = good_run["data"]["key"]
                assert keys(s3, bucket) == [good_key, good_key + ".manifest.json"]
                good = next(o for o in objects(s3, bucket) if o["Key"] == good_key)
                assert good["Size"] == good_run["data"]["bytes"] > 10 << 20

                # Backups are named by the second their dump starts: the next one must be
                # named as newer.
                ended_at = good_run["ended_at"]
                await wait_for(lambda: time.time() >= int(ended_at) + 1, within=2)

                # The second run, killed while its upload is under way.
                stall.armed = True
                await api(session, port, "POST", f"/jobs/{JOB}/run")
                await asyncio.wait_for(stall.held.wait(), timeout=30)
                (upload,) = await asyncio.to_thread(pending_uploads, s3, bucket)
                assert upload["Key"].startswith(PREFIX + "backup-")
                assert upload["Key"] > good_key  # the newer backup, in progress
                parts = await asyncio.to_thread(
                    s3.list_parts, Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                assert [p["PartNumber"] for p in parts["Parts"]] == [1]
                dumps = pg_dumps_of(first.pid)
                assert len(dumps) == 1  # still dumping, blocked behind the stalled part
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
                stall.armed = False
                stall.release()  # its sender is gone: the stalled part is refused
            # pg_dump, orphaned, dies on its broken pipe: nothing goes on writing.
            _, alive = await asyncio.to_thread(psutil.wait_procs, dumps, 10)
            assert alive == [], alive

            def assert_only_the_good_backup() -> None:
                listed = objects(s3, bucket)
                assert [o["Key"] for o in listed] == [good_key, good_key + ".manifest.json"]
                # No version of anything else either, not even a noncurrent one.
                assert sorted(v["Key"] for v in versions(s3, bucket)) == [
                    good_key,
                    good_key + ".manifest.json",
                ]
                assert s3.list_object_versions(Bucket=bucket).get("DeleteMarkers", []) == []
                assert_all_encrypted(s3, bucket)

            await asyncio.to_thread(assert_only_the_good_backup)
            # Nobody was left to abort the upload: its stored part stays until a later run
            # of pg_backup, or the bucket's lifecycle rule, aborts it.
            orphans = await asyncio.to_thread(pending_uploads, s3, bucket)
            assert [u["UploadId"] for u in orphans] == [upload["UploadId"]]

            # The s3_backup check, run by `runbookd once` against the same bucket and prefix.
            check = await asyncio.to_thread(once, config)
            assert check.returncode == 0, check.stdout
            row = next(line for line in check.stdout.splitlines() if line.startswith("backups"))
            assert row.split()[1] == "OK", row
            assert "backup_count=1 " in row
            assert f"backup_size_bytes={float(good['Size']):.4g} " in row
            assert "fresh=1" in row

            # Restarted: the cut-short run is recorded as interrupted, and not run again.
            creates = stall.creates
            with log.open("a") as out, daemon_process(config, out) as second:
                await started(second, log, 2)
                interrupted, succeeded = await runs(session, port)
                assert succeeded["id"] == good_run["id"]
                assert succeeded["outcome"] == "succeeded"
                assert interrupted["trigger"] == "manual"
                assert interrupted["outcome"] == "interrupted"
                assert "not repeated" in interrupted["detail"]
                (job,) = (await api(session, port, "GET", "/jobs"))["jobs"]
                assert job["running"] is False
                assert job["last_success_at"] == good_run["ended_at"]
                assert stall.creates == creates  # no new upload began
                await asyncio.to_thread(assert_only_the_good_backup)

                # The next run, as if it came after the timeout (S3 says when the upload
                # began): it aborts the upload left behind, then backs up.
                dated.begun[upload["UploadId"]] = time.time() - TIMEOUT - CLOCK_MARGIN - 1
                await api(session, port, "POST", f"/jobs/{JOB}/run")
                third = await finished_run(session, port, after=interrupted["id"])
                assert third["outcome"] == "succeeded", third
                assert third["data"]["aborted_uploads"] == [upload["Key"]]
                assert await asyncio.to_thread(pending_uploads, s3, bucket) == []
                assert keys(s3, bucket) == sorted(
                    [
                        good_key,
                        third["data"]["key"],
                        *(k + ".manifest.json" for k in (good_key, third["data"]["key"])),
                    ]
                )
                assert "aborted uploads a stopped run left behind" in log.read_text()
                second.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(second.wait, 15) == 0
    took = time.monotonic() - began
    assert took < 40, f"took {took:.1f}s"
    print(f"backup kill -9: {took:.1f}s end to end")


async def finished_run(session: aiohttp.ClientSession, port: int, after: int = 0) -> dict[str, Any]:
    """The newest run of the job, newer than run `after`, once it has ended (bounded)."""
    found: list[dict[str, Any]] = []

    async def ended() -> bool:
        found[:] = await runs(session, port)
        return bool(found) and found[0]["id"] > after and found[0]["ended_at"] is not None

    deadline = time.monotonic() + 30
    while not await ended():
        assert time.monotonic() < deadline, f"the run did not end: {found}"
        await asyncio.sleep(0.1)
    return found[0]


def once(config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "daemon.cli", "once", "--config", str(config), "backups"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
