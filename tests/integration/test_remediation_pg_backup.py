"""`pg_backup` with the real pg_dump, a real PostgreSQL and moto's S3 server (a process).

Every bucket is versioned unless a test says otherwise, and after each test every object
version in it must be encrypted and no multipart upload may be pending. Failures midway are
made real: pg_dump killed, a part refused, the run cancelled or timed out while a proxy in
front of moto holds a part.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp import web

import remediations.pg_backup as pg_backup
from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.pg_backup import PgBackupConfig, PgBackupRemediation
from tests.backups import (
    COUNTS,
    KEY_ID,
    PASSWORD,
    SECRET,
    Hold,
    Initiated,
    assert_all_encrypted,
    children_named,
    keys,
    new_bucket,
    part_number,
    pending_uploads,
    read_object,
    s3_error,
    s3_for,
    s3_proxy,
    source_database,
    versions,
)
from tests.fakes import make_incident
from tests.moto_server import moto_server
from tests.utils import free_port

TABLES = list(COUNTS)
BLOB_MIB = 20  # the big database: ~22 MiB gzipped, several 5 MiB parts


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return s3_for(endpoint)


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    with source_database() as dsn:
        yield dsn


@pytest.fixture(scope="module")
def big() -> Iterator[str]:
    with source_database(blob_mib=BLOB_MIB) as dsn:
        yield dsn


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = new_bucket(s3)
    yield name
    assert_all_encrypted(s3, name)
    assert pending_uploads(s3, name) == []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())  # moto stamps objects with the real time


def make(endpoint: str, bucket: str, dsn: str, **fields: Any) -> PgBackupRemediation:
    config = {
        "type": "pg_backup",
        "dsn": dsn,
        "bucket": bucket,
        "prefix": "daily/",
        "endpoint_url": endpoint,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "count_tables": TABLES,
    }
    return PgBackupRemediation("backup", PgBackupConfig.model_validate(config | fields))


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert SECRET not in text


def shown(result: Any) -> str:
    return result.detail + json.dumps(result.data)


def copied_rows(sql: str, table: str) -> int:
    """Rows in a plain dump's COPY block for `table`."""
    lines = sql.splitlines()
    name = table if table.islower() else f'"{table}"'  # as pg_dump quotes it
    start = next(i for i, line in enumerate(lines) if line.startswith(f"COPY public.{name} "))
    return lines.index("\\.", start) - start - 1


# --- backups ---------------------------------------------------------------------------------


async def test_plain_backup_is_gzipped_sql_with_a_manifest(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str, source: str
) -> None:
    result = await make(endpoint, bucket, source).execute(ctx, make_incident())

    assert result.ok, result.detail
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock.now()))
    key = f"daily/backup-{stamp}.sql.gz"
    assert keys(s3, bucket) == [key, key + ".manifest.json"]
    body = read_object(s3, bucket, key)
    sql = gzip.decompress(body).decode()
    assert sql.startswith("--\n-- PostgreSQL database dump")
    assert {table: copied_rows(sql, table) for table in TABLES} == COUNTS

    manifest = json.loads(read_object(s3, bucket, key + ".manifest.json"))
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest() == result.data["sha256"]
    assert manifest["size"] == len(body) == result.data["bytes"]
    assert manifest["row_counts"] == COUNTS == result.data["row_counts"]
    assert (manifest["format"], manifest["counted_in_snapshot"]) == ("plain", True)
    assert manifest["started_at"] == clock.now()
    assert manifest["pg_dump_version"].startswith("15.")
    assert result.data["key"] == key
    assert result.data["encryption"] == "AES256"
    assert result.data["duration_seconds"] > 0
    assert result.detail.startswith(f"s3://{bucket}/{key}: ")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["VersionId"] == result.data["version_id"]
    assert_no_secrets(shown(result))


async def test_custom_format_backup_reads_with_pg_restore(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, source: str, tmp_path: Any
) -> None:
    result = await make(endpoint, bucket, source, format="custom").execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["key"].endswith(".dump")
    dump = tmp_path / "b.dump"
    dump.write_bytes(read_object(s3, bucket, result.data["key"]))
    listing = await asyncio.create_subprocess_exec(
        "pg_restore", "--list", str(dump), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await listing.communicate()
    assert listing.returncode == 0
    data = [line.split()[-2] for line in out.decode().splitlines() if " TABLE DATA " in line]
    assert sorted(data) == ["Task", "User", "_prisma_migrations"]


async def test_counts_and_dump_share_one_snapshot(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, source: str, monkeypatch: Any
) -> None:
    """Rows committed after the counts, before pg_dump starts, are in neither."""
    real = pg_backup.open_snapshot

    @asynccontextmanager
    async def then_insert(dsn: str, tables: list[str]) -> AsyncIterator[Any]:
        async with real(dsn, tables) as snapshot:
            conn = await asyncpg.connect(source)
            await conn.execute(
                """INSERT INTO "User" (id, email) SELECT 'late' || g, 'late' || g
                FROM generate_series(1, 5) g"""
            )
            await conn.close()
            yield snapshot

    monkeypatch.setattr(pg_backup, "open_snapshot", then_insert)
    try:
        result = await make(endpoint, bucket, source).execute(ctx, make_incident())
    finally:
        conn = await asyncpg.connect(source)
        assert await conn.execute("""DELETE FROM "User" WHERE id LIKE 'late%'""") == "DELETE 5"
        await conn.close()
    assert result.ok, result.detail
    sql = gzip.decompress(read_object(s3, bucket, result.data["key"])).decode()
    assert copied_rows(sql, "User") == result.data["row_counts"]["User"] == COUNTS["User"]


async def test_sse_kms_with_a_key_id(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, source: str
) -> None:
    key_id = s3_for(endpoint, "kms").create_key()["KeyMetadata"]["KeyId"]
    remediation = make(endpoint, bucket, source, encryption="aws:kms", kms_key_id=key_id)
    result = await remediation.execute(ctx, make_incident())

    assert result.ok, result.detail
    for key in keys(s3, bucket):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]


# --- versioning ------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "said"), [(None, "off"), ("Suspended", "suspended")])
async def test_unversioned_bucket_is_refused(
    ctx: RemediationContext, endpoint: str, s3: Any, source: str, state: str | None, said: str
) -> None:
    bucket = new_bucket(s3, versioning=state)
    result = await make(endpoint, bucket, source).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == (
        f"backup failed: bucket {bucket} has versioning {said} (versioning: require)"
    )
    assert not result.recoverable
    assert keys(s3, bucket) == []
    assert pending_uploads(s3, bucket) == []


async def test_unversioned_bucket_warns_when_told_to(
    ctx: RemediationContext, endpoint: str, s3: Any, source: str
) -> None:
    bucket = new_bucket(s3, versioning=None)
    result = await make(endpoint, bucket, source, versioning="warn").execute(ctx, make_incident())

    assert result.ok, result.detail
    warning = f"bucket {bucket} has versioning off: one overwrite or delete loses a backup"
    assert result.data["warnings"] == [warning]
    assert result.detail.endswith(f"; {warning}")
    assert len(keys(s3, bucket)) == 2
    assert_all_encrypted(s3, bucket)


# --- uploads a run killed outright left behind -------------------------------------------------


async def passes(request: web.Request) -> None:
    return None


def uploading(s3: Any, bucket: str, key: str) -> str:
    """A multipart upload with one part stored, never completed nor aborted; its id."""
    upload_id: str = s3.create_multipart_upload(
        Bucket=bucket, Key=key, ServerSideEncryption="AES256"
    )["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"partial")
    return upload_id


def abort_all(s3: Any, bucket: str) -> None:
    for upload in pending_uploads(s3, bucket):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


async def test_uploads_a_killed_run_left_behind_are_aborted_and_no_other(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str, source: str
) -> None:
    now, timeout = clock.now(), 7200.0  # the default timeout
    dated = Initiated()
    stale = now - timeout - pg_backup.CLOCK_MARGIN - 1
    left = "daily/backup-20240101-020000.sql.gz"
    killed = uploading(s3, bucket, left)
    running = uploading(s3, bucket, "daily/backup-20240102-020000.sql.gz")
    foreign = uploading(s3, bucket, "daily/export-20240101.tar")
    elsewhere = uploading(s3, bucket, "weekly/backup-20240101-020000.sql.gz")
    dated.begun = {killed: stale, running: now - 60, foreign: stale, elsewhere: stale}

    with structlog.testing.capture_logs() as logs:
        async with s3_proxy(endpoint, passes, dated) as proxy:
            result = await make(proxy, bucket, source).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.data["aborted_uploads"] == [left]
    assert result.data["warnings"] == []
    # Another replica's run going on, another tool's upload, another prefix: untouched.
    assert {u["UploadId"] for u in pending_uploads(s3, bucket)} == {running, foreign, elsewhere}
    (said,) = [e for e in logs if e["event"] == "aborted uploads a stopped run left behind"]
    assert (said["bucket"], said["keys"], said["log_level"]) == (bucket, [left], "warning")
    assert keys(s3, bucket) == [result.data["key"], result.data["manifest"]]
    abort_all(s3, bucket)


async def test_a_store_refusing_to_list_or_abort_uploads_only_warns(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str, source: str
) -> None:
    async def deny_listing(request: web.Request) -> web.Response | None:
        listing = request.method == "GET" and "uploads" in request.query
        return s3_error("AccessDenied", 403) if listing else None

    async with s3_proxy(endpoint, deny_listing) as proxy:
        result = await make(proxy, bucket, source).execute(ctx, make_incident())
    assert result.ok, result.detail
    warning = "cannot list unfinished uploads (access denied): none aborted"
    assert result.data["warnings"] == [warning]
    assert "aborted_uploads" not in result.data

    left = "daily/backup-20240101-020000.sql.gz"
    dated = Initiated()
    dated.begun[uploading(s3, bucket, left)] = clock.now() - 86400

    async def deny_abort(request: web.Request) -> web.Response | None:
        aborting = request.method == "DELETE" and "uploadId" in request.query
        return s3_error("AccessDenied", 403) if aborting else None

    await clock.advance(1)  # a second backup, under a name of its own
    async with s3_proxy(endpoint, deny_abort, dated) as proxy:
        result = await make(proxy, bucket, source).execute(ctx, make_incident())
    assert result.ok, result.detail
    assert result.data["warnings"] == [
        f"cannot abort the unfinished upload of {left} (access denied)"
    ]
    assert "aborted_uploads" not in result.data
    assert [u["Key"] for u in pending_uploads(s3, bucket)] == [left]
    abort_all(s3, bucket)


# --- failures before any byte is stored --------------------------------------------------------


async def test_a_table_that_cannot_be_counted_fails_before_uploading(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, source: str
) -> None:
    result = await make(endpoint, bucket, source, count_tables=["User", "Nope"]).execute(
        ctx, make_incident()
    )
    assert not result.ok
    assert result.detail == 'backup failed: counting rows of Nope: relation "Nope" does not exist'
    assert versions(s3, bucket) == []


async def test_no_pg_dump_aborts_the_upload(
    ctx: RemediationContext,
    endpoint: str,
    s3: Any,
    bucket: str,
    source: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # tools run with the daemon's PATH
    result = await make(endpoint, bucket, source).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == "backup failed: executable not found: pg_dump"
    assert versions(s3, bucket) == []  # the bucket fixture checks no upload is pending


async def test_unreachable_store_and_database_say_so_without_secrets(
    ctx: RemediationContext,
    endpoint: str,
    bucket: str,
    source: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = await make(nowhere, bucket, source, request_timeout="2s").execute(ctx, make_incident())
    assert not result.ok
    assert result.recoverable
    assert result.detail.startswith("backup failed: cannot read the bucket's versioning: cannot ")

    dead_db = source.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    failed = await make(endpoint, bucket, dead_db).execute(ctx, make_incident())
    assert failed.detail == (
        "backup failed: connecting to the database: cannot connect: connection refused"
    )
    assert_no_secrets(shown(result), shown(failed), caplog.text)


# --- failures midway: nothing stored, no upload left pending -----------------------------------


def big_backup(endpoint: str, bucket: str, dsn: str, **fields: Any) -> PgBackupRemediation:
    # One part uploading at a time, so holding part 2 soon stops reading pg_dump's output.
    small = {"part_size": "5MiB", "parts_in_flight": 1, "compression": 1, "count_tables": []}
    return make(endpoint, bucket, dsn, **(small | fields))


async def held_at_part_2(
    ctx: RemediationContext, endpoint: str, bucket: str, dsn: str, hold: Hold, **fields: Any
) -> asyncio.Task[Any]:
    """The backup running with part 1 stored and part 2 held; pg_dump blocked, still alive."""
    backup = big_backup(endpoint, bucket, dsn, **fields)
    task = asyncio.create_task(backup.execute(ctx, make_incident()))
    held = asyncio.create_task(hold.held.wait())
    await asyncio.wait([task, held], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    held.cancel()
    assert hold.held.is_set(), task.result() if task.done() else "part 2 never came"
    return task


async def test_pg_dump_killed_midway_leaves_nothing(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, big: str
) -> None:
    hold = Hold(lambda request: (part_number(request) or 0) >= 2)
    async with s3_proxy(endpoint, hold) as proxy:
        task = await held_at_part_2(ctx, proxy, bucket, big, hold)
        [dump] = children_named("pg_dump")
        # The password reaches pg_dump through its environment, never its command line.
        assert PASSWORD not in " ".join(dump.cmdline())
        assert dump.environ()["PGPASSWORD"] == PASSWORD
        assert len(pending_uploads(s3, bucket)) == 1
        os.kill(dump.pid, signal.SIGKILL)
        hold.release()
        result = await asyncio.wait_for(task, 60)

    assert not result.ok
    assert result.recoverable
    assert result.detail.startswith("backup failed: pg_dump was killed by SIGKILL")
    assert versions(s3, bucket) == []


async def test_a_refused_part_aborts_the_upload(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, big: str
) -> None:
    async def refuse_part_2(request: web.Request) -> web.Response | None:
        return s3_error("BadDigest") if part_number(request) == 2 else None

    async with s3_proxy(endpoint, refuse_part_2) as proxy:
        result = await big_backup(proxy, bucket, big).execute(ctx, make_incident())

    assert not result.ok
    assert result.detail == "backup failed: S3 error BadDigest"
    assert versions(s3, bucket) == []
    assert children_named("pg_dump") == []


async def test_cancelled_midway_kills_pg_dump_and_aborts(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, big: str
) -> None:
    hold = Hold(lambda request: (part_number(request) or 0) >= 2)
    async with s3_proxy(endpoint, hold) as proxy:
        task = await held_at_part_2(ctx, proxy, bucket, big, hold)
        assert children_named("pg_dump")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert children_named("pg_dump") == []
        assert pending_uploads(s3, bucket) == []
    assert versions(s3, bucket) == []


async def test_timeout_midway_aborts(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str, big: str
) -> None:
    hold = Hold(lambda request: (part_number(request) or 0) >= 2)
    async with s3_proxy(endpoint, hold) as proxy:
        task = await held_at_part_2(ctx, proxy, bucket, big, hold, timeout="1h")
        await clock.advance(3600)
        result = await asyncio.wait_for(task, 60)
    assert not result.ok
    assert result.recoverable
    assert result.detail == "backup failed: timed out after 1h; upload aborted"
    assert versions(s3, bucket) == []
    assert children_named("pg_dump") == []


async def test_big_backup_uploads_in_parts(
    ctx: RemediationContext, endpoint: str, s3: Any, bucket: str, big: str
) -> None:
    result = await big_backup(endpoint, bucket, big, parts_in_flight=2).execute(
        ctx, make_incident()
    )
    assert result.ok, result.detail
    head = s3.head_object(Bucket=bucket, Key=result.data["key"])
    assert head["ETag"].rstrip('"').rpartition("-")[2] == str(-(-result.data["bytes"] // (5 << 20)))
    assert head["ContentLength"] == result.data["bytes"] > 4 * (5 << 20)
