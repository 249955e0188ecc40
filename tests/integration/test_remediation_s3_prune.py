"""`s3_prune` against moto's S3 server (a process), on a moved clock.

moto stamps LastModified with the real time of the upload, so the clock starts at the real
time and tests move it forward ("31 days pass") to age the backups; backups written in one
test are equally old, and newest means the later name (the timestamp in it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.core.clock import ManualClock
from remediations.base import RemediationContext
from remediations.s3_prune import S3PruneConfig, S3PruneRemediation
from tests.backups import KEY_ID, SECRET, assert_all_encrypted, keys, new_bucket, put_object, s3_for
from tests.fakes import make_incident
from tests.moto_server import moto_server

DAY = 86400.0
STAMPS = [f"202401{day:02d}-020000" for day in range(1, 6)]  # five daily backups, oldest first
OTHERS = ["daily/notes.txt", "daily/backup-20240101-020000.sql.gz.tmp", "daily/old/"]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return s3_for(endpoint)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = new_bucket(s3)
    yield name
    assert_all_encrypted(s3, name)


def backups(s3: Any, bucket: str, stamps: list[str], *, manifests: bool = True) -> list[str]:
    """Backups named as pg_backup names them, each with its manifest; their keys."""
    made = []
    for stamp in stamps:
        key = f"daily/backup-{stamp}.sql.gz"
        put_object(s3, bucket, key, b"backup " + stamp.encode())
        if manifests:
            put_object(s3, bucket, key + ".manifest.json", b"{}")
        made.append(key)
    return made


def prune(endpoint: str, bucket: str, **fields: Any) -> S3PruneRemediation:
    config = {
        "type": "s3_prune",
        "bucket": bucket,
        "prefix": "daily/",
        "endpoint_url": endpoint,
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
    }
    return S3PruneRemediation("prune", S3PruneConfig.model_validate(config | fields))


async def test_old_backups_go_with_their_manifests_but_keep_min_stay(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    made = backups(s3, bucket, STAMPS)
    for key in OTHERS:
        put_object(s3, bucket, key, b"not a backup")
    await clock.advance(31 * DAY)

    result = await prune(endpoint, bucket).execute(ctx, make_incident())

    assert result.ok, result.detail
    assert result.detail == (
        "deleted 2 backups older than 30 days, manifests with them; "
        "kept 3, the oldest 31.0 days old"
    )
    assert [entry["key"] for entry in result.data["deleted"]] == made[1::-1]
    assert result.data["deleted"][0]["age_days"] == pytest.approx(31, abs=0.01)
    assert result.data["kept"] == made[:1:-1]
    assert result.data["ignored"] == 2  # the placeholder "daily/old/" is not listed at all
    kept = [key for key in made[2:] for key in (key, key + ".manifest.json")]
    assert keys(s3, bucket) == sorted(kept + OTHERS)


async def test_young_backups_are_kept(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    made = backups(s3, bucket, STAMPS)
    await clock.advance(29 * DAY)
    result = await prune(endpoint, bucket, keep_min=1).execute(ctx, make_incident())
    assert result.detail == "nothing older than 30 days to delete; kept 5, the oldest 29.0 days old"
    assert len(keys(s3, bucket)) == 2 * len(made)
    result = await prune(endpoint, bucket, keep_min=1, keep_days=28).execute(ctx, make_incident())
    assert len(result.data["deleted"]) == 4


async def test_the_only_backup_is_never_deleted(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    [only] = backups(s3, bucket, STAMPS[:1], manifests=False)
    await clock.advance(400 * DAY)
    result = await prune(endpoint, bucket, keep_min=1, keep_days=1).execute(ctx, make_incident())
    assert result.ok
    assert result.data["deleted"] == []
    assert keys(s3, bucket) == [only]


async def test_dry_run_lists_and_deletes_nothing(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    made = backups(s3, bucket, STAMPS)
    await clock.advance(40 * DAY)
    remediation = prune(endpoint, bucket, dry_run=True, keep_min=2)
    assert remediation.destructive is False
    result = await remediation.execute(ctx, make_incident())

    assert result.detail.startswith("would delete 3 backups older than 30 days")
    assert [entry["key"] for entry in result.data["would_delete"]] == made[2::-1]
    assert "deleted" not in result.data
    assert len(keys(s3, bucket)) == 2 * len(made)


async def test_deletes_leave_versions_in_a_versioned_bucket(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    made = backups(s3, bucket, STAMPS[:2])
    await clock.advance(31 * DAY)
    await prune(endpoint, bucket, keep_min=1).execute(ctx, make_incident())
    listed = s3.list_object_versions(Bucket=bucket)
    markers = sorted(marker["Key"] for marker in listed["DeleteMarkers"])
    assert markers == [made[0], made[0] + ".manifest.json"]
    assert {version["Key"] for version in listed["Versions"]} >= set(markers)


async def test_a_listing_cut_short_deletes_nothing(
    ctx: RemediationContext, clock: ManualClock, endpoint: str, s3: Any, bucket: str
) -> None:
    backups(s3, bucket, STAMPS)
    await clock.advance(31 * DAY)
    result = await prune(endpoint, bucket, max_keys=4).execute(ctx, make_incident())
    assert not result.ok
    assert result.detail == (
        "prune failed: listing stopped at 4 keys; nothing deleted (narrow the prefix or raise "
        "max_keys)"
    )
    assert len(keys(s3, bucket)) == 10


async def test_a_missing_bucket_fails_without_secrets(
    ctx: RemediationContext, endpoint: str
) -> None:
    result = await prune(endpoint, "no-such-bucket-runbookd").execute(ctx, make_incident())
    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail == "prune failed: S3 error NoSuchBucket"
    assert SECRET not in result.detail
