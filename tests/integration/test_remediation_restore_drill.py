"""`restore_drill` against backups `pg_backup` made: real pg_dump, psql, pg_restore and
PostgreSQL, moto's S3 server as a process. Corrupt, truncated and unrestorable backups are
written over the real ones (a new version in the versioned bucket), and the drill must fail
saying why, and drop its scratch database whatever happened.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.drill_report import render_markdown
from remediations.pg_backup import PgBackupConfig, PgBackupRemediation
from remediations.restore_drill import SCRATCH_PREFIX, RestoreDrillConfig, RestoreDrillRemediation
from tests.backups import (
    COUNTS,
    KEY_ID,
    PASSWORD,
    SECRET,
    Hold,
    assert_all_encrypted,
    databases,
    new_bucket,
    pending_uploads,
    put_object,
    read_object,
    s3_for,
    s3_proxy,
    source_database,
)
from tests.fakes import make_incident
from tests.moto_server import moto_server
from tests.pg import ADMIN_DSN, dsn_for

HOUR = 3600.0
CHECKS = ['SELECT count(*) = 6000 FROM "Task"', "SELECT bool_and(email LIKE '%@%') FROM \"User\""]


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


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = new_bucket(s3)
    yield name
    assert_all_encrypted(s3, name)
    assert pending_uploads(s3, name) == []
    assert not any(name.startswith(SCRATCH_PREFIX) for name in databases())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())  # moto stamps objects with the real time


def s3_fields(endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "prefix": "daily/",
        "endpoint_url": endpoint,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
    }


async def backup(
    ctx: RemediationContext, endpoint: str, bucket: str, dsn: str, **fields: Any
) -> str:
    config = {"type": "pg_backup", "dsn": dsn, "count_tables": list(COUNTS)}
    config |= s3_fields(endpoint, bucket) | fields
    result = await PgBackupRemediation("b", PgBackupConfig.model_validate(config)).execute(
        ctx, make_incident()
    )
    assert result.ok, result.detail
    key: str = result.data["key"]
    return key


def drill(endpoint: str, bucket: str, **fields: Any) -> RestoreDrillRemediation:
    dsn = dsn_for("postgres", ADMIN_DSN, password=PASSWORD)
    config = {"type": "restore_drill", "dsn": dsn, "checks": CHECKS} | s3_fields(endpoint, bucket)
    return RestoreDrillRemediation("drill", RestoreDrillConfig.model_validate(config | fields))


def assert_no_secrets(result: Any) -> None:
    shown = result.detail + json.dumps(result.data)
    assert PASSWORD not in shown
    assert SECRET not in shown


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["plain", "custom"])
async def test_backup_then_drill_restores_and_verifies(
    ctx: RemediationContext,
    endpoint: str,
    bucket: str,
    source: str,
    fmt: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await backup(ctx, endpoint, bucket, source, format=fmt)
    result = await drill(endpoint, bucket).execute(ctx, make_incident())

    assert result.ok, result.data["failures"]
    report = result.data
    assert report["key"] == key
    counts = {c["table"]: (c["expected"], c["restored"], c["ok"]) for c in report["row_counts"]}
    assert counts == {table: (count, count, True) for table, count in COUNTS.items()}
    assert [check["result"] for check in report["checks"]] == ["true", "true"]
    assert report["sha256"] == report["sha256_expected"]
    assert report["downloaded_bytes"] == report["backup_bytes"]
    assert report["restored_bytes"] >= report["downloaded_bytes"]  # gunzipped, or as is
    assert report["scratch_database"].startswith(SCRATCH_PREFIX)
    assert report["dropped"] is True
    assert 0 < report["restore_seconds"] <= report["time_to_recover_seconds"]
    assert (report["within_rto"], report["within_rpo"]) == (True, True)
    assert 0 <= report["backup_age_seconds"] < 60
    assert result.detail.startswith(f"restored {key} (")
    assert "time to recover" in result.detail
    assert "(RTO 4h, RPO 1d)" in result.detail
    markdown = render_markdown(report)
    assert markdown.startswith("# Restore drill: passed\n")
    assert "| User | 2000 | 2000 | ok |" in markdown
    assert_no_secrets(result)
    assert PASSWORD not in caplog.text
    assert SECRET not in caplog.text


async def test_the_newest_complete_backup_is_drilled(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source, format="custom")
    unfinished = "daily/backup-29991231-235959.sql.gz"  # newer, but without a manifest
    put_object(s3, bucket, unfinished, b"not finished")
    result = await drill(endpoint, bucket).execute(ctx, make_incident())
    assert result.ok, result.data["failures"]
    assert result.data["key"] == key
    assert result.data["skipped_newer"] == [unfinished]


# --- bad backups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["plain", "custom"])
async def test_a_corrupt_backup_fails_the_drill(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str, fmt: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source, format=fmt)
    body = bytearray(read_object(s3, bucket, key))
    middle = len(body) // 2
    body[middle : middle + 64] = bytes(b ^ 0x5A for b in body[middle : middle + 64])
    put_object(s3, bucket, key, bytes(body))  # same size, a new version

    result = await drill(endpoint, bucket).execute(ctx, make_incident())

    assert not result.ok
    failures = result.data["failures"]
    assert failures[0].startswith(f"checksum mismatch: {key} ({len(body)} bytes) has sha256 ")
    assert failures[0].endswith("the backup is corrupt")
    assert result.detail.startswith("restore drill failed: checksum mismatch")
    assert result.data["dropped"] is True
    assert result.data["row_counts"] == []  # nothing verified on a copy known to be bad
    assert "**sha256" in render_markdown(result.data)


async def test_a_truncated_backup_fails_the_drill(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source)
    whole = read_object(s3, bucket, key)
    put_object(s3, bucket, key, whole[: len(whole) // 2])

    result = await drill(endpoint, bucket).execute(ctx, make_incident())

    assert not result.ok
    assert not result.recoverable
    assert result.detail == (
        f"restore drill failed: {key} is {len(whole) // 2} bytes, its manifest says "
        f"{len(whole)}: truncated or replaced"
    )
    assert result.data["scratch_database"] is None  # known bad before anything was made


def forge(s3: Any, bucket: str, key: str, body: bytes) -> None:
    """Replace a backup and its manifest's checksum, as if the bad backup had been made so."""
    manifest = json.loads(read_object(s3, bucket, key + ".manifest.json"))
    manifest |= {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    put_object(s3, bucket, key, body)
    put_object(s3, bucket, key + ".manifest.json", json.dumps(manifest).encode())


async def test_a_psql_error_fails_the_drill(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source)
    forge(s3, bucket, key, gzip.compress(b"CREATE TABLE ok (id int);\nCREATE TABLE broken (;\n"))

    result = await drill(endpoint, bucket).execute(ctx, make_incident())

    assert not result.ok
    [failure] = result.data["failures"]
    assert failure == 'restore: psql exited with status 3: ERROR:  syntax error at or near ";"'
    assert result.data["dropped"] is True


async def test_a_gzip_stream_cut_short_fails_the_drill(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source)
    whole = read_object(s3, bucket, key)
    forge(s3, bucket, key, whole[: len(whole) - 100])
    result = await drill(endpoint, bucket).execute(ctx, make_incident())
    assert result.data["failures"] == ["restore: gzip: the stream ends early (a truncated backup)"]


async def test_no_complete_backup_fails(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str
) -> None:
    put_object(s3, bucket, "daily/backup-20240101-020000.sql.gz", b"no manifest")
    result = await drill(endpoint, bucket).execute(ctx, make_incident())
    assert result.detail == (
        f"restore drill failed: no complete backup (one with a manifest) under s3://{bucket}/daily/"
    )
    assert result.data["skipped_newer"] == ["daily/backup-20240101-020000.sql.gz"]
    assert "| Backup | none found |" in render_markdown(result.data)


# --- objectives and verifications ---------------------------------------------------------------


async def test_an_old_backup_is_over_the_rpo_and_still_verified(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, bucket: str, source: str
) -> None:
    await backup(ctx, endpoint, bucket, source)
    await clock.advance(25 * HOUR)
    result = await drill(endpoint, bucket).execute(ctx, make_incident())

    assert result.data["failures"] == ["the newest backup's data is 1d1h old: over the RPO of 1d"]
    assert result.data["within_rpo"] is False
    assert all(count["ok"] for count in result.data["row_counts"])
    assert result.data["backup_age_seconds"] == pytest.approx(25 * HOUR, abs=1)


async def test_a_slow_recovery_is_over_the_rto(
    ctx: RemediationContext, endpoint: str, bucket: str, source: str
) -> None:
    await backup(ctx, endpoint, bucket, source)
    result = await drill(endpoint, bucket, rto="1ms").execute(ctx, make_incident())
    [failure] = result.data["failures"]
    assert failure.startswith("recovery took ")
    assert failure.endswith(": over the RTO of 1ms")
    assert result.data["within_rto"] is False


async def test_counts_outside_the_tolerance_and_false_checks_fail(
    ctx: RemediationContext, s3: Any, endpoint: str, bucket: str, source: str
) -> None:
    key = await backup(ctx, endpoint, bucket, source)
    manifest = json.loads(read_object(s3, bucket, key + ".manifest.json"))
    manifest["row_counts"]["User"] = 2100  # as if 100 users were lost in the restore
    put_object(s3, bucket, key + ".manifest.json", json.dumps(manifest).encode())

    strict = drill(endpoint, bucket, checks=["SELECT false", "SELECT 1, 2", "SELECT nope"])
    result = await strict.execute(ctx, make_incident())
    assert result.data["failures"] == [
        "row count of User: 2000 rows restored, 2100 in the backup",
        "check 'SELECT false': false",
        "check 'SELECT 1, 2': 2 columns, not one boolean",
        "check 'SELECT nope': column \"nope\" does not exist",
    ]
    lenient = await drill(endpoint, bucket, tolerance="5%").execute(ctx, make_incident())
    assert lenient.ok, lenient.data["failures"]


# --- always dropped ------------------------------------------------------------------------------


def is_backup_download(request: web.Request) -> bool:
    return request.method == "GET" and request.path.endswith(".sql.gz")


async def test_cancelled_mid_restore_drops_the_scratch_database(
    ctx: RemediationContext, endpoint: str, bucket: str, source: str
) -> None:
    await backup(ctx, endpoint, bucket, source)
    hold = Hold(is_backup_download)
    async with s3_proxy(endpoint, hold) as proxy:
        task = asyncio.create_task(drill(proxy, bucket).execute(ctx, make_incident()))
        await asyncio.wait_for(hold.held.wait(), 30)
        assert any(name.startswith(SCRATCH_PREFIX) for name in databases())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The bucket fixture checks that no scratch database is left.


async def test_timed_out_mid_restore_drops_the_scratch_database(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, bucket: str, source: str
) -> None:
    await backup(ctx, endpoint, bucket, source)
    hold = Hold(is_backup_download)
    async with s3_proxy(endpoint, hold) as proxy:
        task = asyncio.create_task(drill(proxy, bucket, timeout="2h").execute(ctx, make_incident()))
        await asyncio.wait_for(hold.held.wait(), 30)
        await clock.advance(2 * HOUR)
        result = await asyncio.wait_for(task, 30)
    assert result.data["failures"] == ["timed out after 2h"]
    assert result.recoverable
    assert result.data["dropped"] is True
    assert_no_secrets(result)
