"""The `s3_backup` check against moto's S3 server, a real process on loopback.

moto stamps LastModified with the real time of the upload, so the clock starts at the real
time and tests move it forward ("30 hours pass") to age the backups.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from botocore.config import Config

from checks.base import CheckContext, CheckResult
from checks.s3_backup import VALUE_NAMES, S3BackupCheck, S3BackupCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.moto_server import enforce_auth, moto_server
from tests.utils import free_port, serve

KEY_ID = "AKIDRUNBOOKDTEST0001"
SECRET = "s3cr3t-never-in-a-reason"
HOUR = 3600.0
MANY = 120  # objects for the pagination tests: several pages at page_size 25, still quick


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _client(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET, service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return _client(endpoint)


def _new_bucket(s3: Any) -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3: Any) -> str:
    return _new_bucket(s3)


def put(s3: Any, bucket: str, key: str, size: int = 1000, *, sse: bool = True) -> None:
    extra = {"ServerSideEncryption": "AES256"} if sse else {}
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size, **extra)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


def make(endpoint: str, bucket: str, **fields: Any) -> S3BackupCheck:
    config = S3BackupCheckConfig.model_validate(
        {
            "type": "s3_backup",
            "bucket": bucket,
            "endpoint_url": endpoint,
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
            **fields,
        }
    )
    return S3BackupCheck("backups", config)


@asynccontextmanager
async def started(check: S3BackupCheck, ctx: CheckContext) -> AsyncIterator[S3BackupCheck]:
    await check.start(ctx)
    try:
        yield check
    finally:
        await check.stop()


async def run(ctx: CheckContext, endpoint: str, bucket: str, **fields: Any) -> CheckResult:
    async with started(make(endpoint, bucket, **fields), ctx) as check:
        return await check.run(ctx)


# --- verdicts ------------------------------------------------------------------------------


async def test_fresh_encrypted_backup_is_ok(ctx: CheckContext, endpoint: str, s3: Any) -> None:
    bucket = _new_bucket(s3)
    put(s3, bucket, "daily/2024-05-01.tar.gz", 1000)
    put(s3, bucket, "daily/2024-05-02.tar.gz", 900)
    result = await run(ctx, endpoint, bucket, prefix="daily/")
    assert result.status is Status.OK, result.reason
    values = result.values
    assert 0.0 <= values["backup_age_seconds"] < 60
    assert values["backup_size_bytes"] == 900
    assert values["previous_size_bytes"] == 1000
    assert values["size_ratio"] == pytest.approx(0.9)
    assert (values["backup_count"], values["encrypted"], values["fresh"]) == (2, 1, 1)
    assert set(values) == VALUE_NAMES


async def test_older_than_rpo_is_critical(
    ctx: CheckContext, clock: ManualClock, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "db.dump")
    await clock.advance(30.1 * HOUR)
    result = await run(ctx, endpoint, bucket)
    assert result.status is Status.CRITICAL
    assert result.reason == "newest backup is 30.1h old (RPO 24h)"
    assert result.values["backup_age_seconds"] > 30 * HOUR
    assert result.values["fresh"] == 0


async def test_rpo_is_configurable(
    ctx: CheckContext, clock: ManualClock, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "db.dump")
    await clock.advance(2 * HOUR)
    assert (await run(ctx, endpoint, bucket)).status is Status.OK
    result = await run(ctx, endpoint, bucket, rpo="90m")
    assert result.status is Status.CRITICAL
    assert result.reason == "newest backup is 2h old (RPO 1.5h)"


async def test_size_drop_is_warn(ctx: CheckContext, endpoint: str, bucket: str, s3: Any) -> None:
    put(s3, bucket, "b-01.tar", 1000)
    put(s3, bucket, "b-02.tar", 400)
    result = await run(ctx, endpoint, bucket)
    assert result.status is Status.WARN
    assert result.reason == "newest backup is 40% of the previous one (400 B vs 1000 B)"
    assert result.values["size_ratio"] == pytest.approx(0.4)
    assert result.values["fresh"] == 1
    # Half the size is still within the default 50% drop; a stricter setting warns.
    put(s3, bucket, "b-03.tar", 200)
    assert (await run(ctx, endpoint, bucket)).status is Status.OK
    assert (await run(ctx, endpoint, bucket, size_drop="10%")).status is Status.WARN


async def test_empty_newest_backup_is_critical(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "b-01.tar", 1000)
    put(s3, bucket, "b-02.tar", 0)
    result = await run(ctx, endpoint, bucket)
    assert result.status is Status.CRITICAL
    # The 100% size drop is reported too, after the critical problem.
    assert result.reason == (
        "newest backup is empty (0 bytes); newest backup is 0% of the previous one (0 B vs 1000 B)"
    )
    assert (result.values["backup_size_bytes"], result.values["fresh"]) == (0, 0)


async def test_small_newest_backup_is_critical(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "b-01.tar", 10)
    result = await run(ctx, endpoint, bucket, min_size=100)
    assert result.status is Status.CRITICAL
    assert result.reason == "newest backup is 10 bytes (min_size 100)"


async def test_unencrypted_newest_backup_is_warn(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "b-01.tar", sse=True)
    put(s3, bucket, "b-02.tar", sse=False)
    result = await run(ctx, endpoint, bucket)
    assert result.status is Status.WARN
    assert result.reason == "newest backup is not encrypted (no server-side encryption)"
    assert result.values["encrypted"] == 0
    relaxed = await run(ctx, endpoint, bucket, require_encryption=False)
    assert relaxed.status is Status.OK
    assert "encrypted" not in relaxed.values  # not asked, so not looked at (no HeadObject)


async def test_critical_reason_lists_every_problem(
    ctx: CheckContext, clock: ManualClock, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "b-01.tar", sse=False)
    await clock.advance(48 * HOUR)
    result = await run(ctx, endpoint, bucket)
    assert result.status is Status.CRITICAL
    assert result.reason == (
        "newest backup is 48h old (RPO 24h); newest backup is not encrypted"
        " (no server-side encryption)"
    )


async def test_prefix_filters_and_placeholders_are_ignored(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any
) -> None:
    put(s3, bucket, "daily/2024-05-01.tar", 1000)
    put(s3, bucket, "other/newer.tar", 5000)  # outside the prefix
    put(s3, bucket, "daily/archive/", 0)  # a "directory" placeholder, newest of all
    result = await run(ctx, endpoint, bucket, prefix="daily/")
    assert result.status is Status.OK, result.reason
    assert result.values["backup_count"] == 1
    assert result.values["backup_size_bytes"] == 1000
    assert "previous_size_bytes" not in result.values


async def test_a_manifest_is_not_a_backup(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any
) -> None:
    # pg_backup writes <key>.manifest.json after the backup: newer, and much smaller.
    put(s3, bucket, "daily/backup-20240501-020000.sql.gz", 1000)
    put(s3, bucket, "daily/backup-20240502-020000.sql.gz", 900)
    put(s3, bucket, "daily/backup-20240502-020000.sql.gz.manifest.json", 400)
    result = await run(ctx, endpoint, bucket, prefix="daily/")
    assert result.status is Status.OK, result.reason
    assert result.values["backup_size_bytes"] == 900
    assert result.values["backup_count"] == 2


@pytest.mark.parametrize("prefix", ["", "weekly/"])
async def test_no_backups_is_critical(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any, prefix: str
) -> None:
    if prefix:
        put(s3, bucket, "daily/2024-05-01.tar")
    put(s3, bucket, f"{prefix}empty-dir/", 0)  # placeholders are not backups
    result = await run(ctx, endpoint, bucket, prefix=prefix)
    assert result.status is Status.CRITICAL
    assert result.reason == f"no backups under s3://{bucket}/{prefix}"
    assert result.values == {"backup_count": 0, "fresh": 0}


async def test_missing_bucket_is_critical(ctx: CheckContext, endpoint: str) -> None:
    # S3 answered, authoritatively: there is nothing to restore from (see the check).
    result = await run(ctx, endpoint, "no-such-bucket-runbookd")
    assert result.status is Status.CRITICAL
    assert result.reason == "bucket no-such-bucket-runbookd does not exist"
    assert result.values == {"backup_count": 0, "fresh": 0}


# --- pagination ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(s3: Any) -> str:
    """A bucket of MANY backups; names sort like upload times, so the newest is listed last."""
    bucket = _new_bucket(s3)
    for i in range(MANY):
        put(s3, bucket, f"hourly/{i:04d}.tar", 2000 + i)
    return bucket


async def test_pagination_reaches_the_newest(ctx: CheckContext, endpoint: str, many: str) -> None:
    result = await run(ctx, endpoint, many, page_size=25)
    assert result.status is Status.OK, result.reason
    assert result.values["backup_count"] == MANY
    assert result.values["backup_size_bytes"] == 2000 + MANY - 1
    assert result.values["previous_size_bytes"] == 2000 + MANY - 2


async def test_listing_is_bounded(
    ctx: CheckContext, clock: ManualClock, endpoint: str, many: str
) -> None:
    result = await run(ctx, endpoint, many, page_size=25, max_keys=50)
    # A fresh backup among the keys seen proves freshness; the rest is uncertain.
    assert result.status is Status.WARN
    assert result.reason.endswith("; listing stopped at 50 keys, narrow the prefix")
    assert result.values["fresh"] == 1
    assert result.values["backup_count"] == 50
    await clock.advance(25 * HOUR)
    # Old among the keys seen says nothing: a newer one may be among the rest.
    result = await run(ctx, endpoint, many, page_size=25, max_keys=50)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("listing stopped at 50 keys, narrow the prefix; among")


# --- failures to look ----------------------------------------------------------------------


async def test_unreachable_endpoint_is_unknown(ctx: CheckContext) -> None:
    result = await run(ctx, f"http://127.0.0.1:{free_port()}", "backups")
    assert result.status is Status.UNKNOWN
    assert result.reason == "cannot reach the S3 endpoint: connection refused"
    assert SECRET not in result.reason
    assert KEY_ID not in result.reason


async def test_timeout_is_unknown(ctx: CheckContext, clock: ManualClock) -> None:
    release = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with started(make(f"http://127.0.0.1:{port}", "backups", timeout="5s"), ctx) as check:
            task = asyncio.create_task(check.run(ctx))
            await clock.advance(5)
            result = await task
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert result.status is Status.UNKNOWN
    assert result.reason == "timeout after 4.5s"


async def test_broken_environment_is_unknown_then_recovers(
    ctx: CheckContext, endpoint: str, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3, bucket, "b-01.tar")
    monkeypatch.setenv("AWS_PROFILE", "runbookd-no-such-profile")
    async with started(make(endpoint, bucket), ctx) as check:  # neither raises
        result = await check.run(ctx)
        assert result.status is Status.UNKNOWN
        assert result.reason == "S3 client failed: ProfileNotFound"
        monkeypatch.delenv("AWS_PROFILE")
        # start() could not create the client: run() tries again.
        assert (await check.run(ctx)).status is Status.OK


# --- credentials (moto enforcing IAM auth) -------------------------------------------------


@dataclass(frozen=True)
class AuthServer:
    endpoint: str
    bucket: str
    keys: dict[str, tuple[str, str]]  # user -> (access key id, secret)


def _policy(*actions: str) -> str:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture(scope="module")
def auth() -> Iterator[AuthServer]:
    """Its own server: enforcing auth is server-wide. Users are set up before it is on."""
    with moto_server() as endpoint:
        iam = _client(endpoint, service="iam")
        policies = {"reader": _policy("s3:*"), "lister": _policy("s3:ListBucket"), "nobody": ""}
        keys = {}
        for user, policy in policies.items():
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            if policy:
                iam.put_user_policy(UserName=user, PolicyName="backups", PolicyDocument=policy)
        s3 = _client(endpoint)
        bucket = _new_bucket(s3)
        put(s3, bucket, "b-01.tar")
        enforce_auth(endpoint)
        yield AuthServer(endpoint, bucket, keys)


async def _run_as(ctx: CheckContext, auth: AuthServer, key_id: str, secret: str) -> CheckResult:
    fields = {"access_key_id": key_id, "secret_access_key": secret}
    return await run(ctx, auth.endpoint, auth.bucket, **fields)


async def test_valid_credentials_are_ok(
    ctx: CheckContext, auth: AuthServer, tmp_path: Path
) -> None:
    key_id, secret = auth.keys["reader"]
    (tmp_path / "secret").write_text(secret)
    fields = {"access_key_id": key_id, "secret_access_key_file": str(tmp_path / "secret")}
    config = {"bucket": auth.bucket, "endpoint_url": auth.endpoint, **fields}
    check = S3BackupCheck("b", S3BackupCheckConfig.model_validate({"type": "s3_backup", **config}))
    async with started(check, ctx):
        result = await check.run(ctx)
    assert result.status is Status.OK, result.reason


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown key", "credentials rejected (InvalidAccessKeyId)"),
        ("wrong secret", "credentials rejected (SignatureDoesNotMatch)"),
        ("no permission", "access denied"),
    ],
)
async def test_refused_credentials_are_unknown(
    ctx: CheckContext, auth: AuthServer, case: str, reason: str
) -> None:
    key_id, secret = {
        "unknown key": ("AKIDNOSUCHKEY0000000", "whatever-secret"),
        "wrong secret": (auth.keys["reader"][0], "wrong-secret"),
        "no permission": auth.keys["nobody"],
    }[case]
    result = await _run_as(ctx, auth, key_id, secret)
    assert result.status is Status.UNKNOWN
    assert result.reason == reason
    assert secret not in result.reason
    assert key_id not in result.reason


async def test_unreadable_metadata_keeps_the_freshness(ctx: CheckContext, auth: AuthServer) -> None:
    # May list (s3:ListBucket) but not read objects: HeadObject is refused.
    result = await _run_as(ctx, auth, *auth.keys["lister"])
    assert result.status is Status.WARN
    assert result.reason == "cannot tell whether the newest backup is encrypted: access denied"
    assert result.values["fresh"] == 1
    assert "encrypted" not in result.values


# --- listings that leave fields out -----------------------------------------------------------


def _contents(key: str, now: float, age: float | None, size: int | None) -> str:
    """A ListObjectsV2 entry; its LastModified (whole seconds) is at least `age` before `now`."""
    parts = [f"<Key>{key}</Key>", '<ETag>"0"</ETag>', "<StorageClass>STANDARD</StorageClass>"]
    if age is not None:
        stamp = datetime.fromtimestamp(now - age, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        parts.append(f"<LastModified>{stamp}</LastModified>")
    if size is not None:
        parts.append(f"<Size>{size}</Size>")
    return f"<Contents>{''.join(parts)}</Contents>"


@asynccontextmanager
async def listing_server(*contents: str, more: bool = False) -> AsyncIterator[str]:
    """An S3-compatible store answering ListObjectsV2 with exactly these entries (and, with
    `more`, saying that more pages follow)."""
    truncated = "<IsTruncated>true</IsTruncated><NextContinuationToken>next</NextContinuationToken>"

    async def list_objects(request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{request.match_info['bucket']}</Name><Prefix></Prefix>"
            f"<KeyCount>{len(contents)}</KeyCount><MaxKeys>1000</MaxKeys>"
            + (truncated if more else "<IsTruncated>false</IsTruncated>")
            + f"{''.join(contents)}</ListBucketResult>"
        )
        return web.Response(text=body, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/{bucket}", list_objects)
    async with serve(app) as url:
        yield url


async def test_a_size_the_store_does_not_report_is_not_0_bytes(
    ctx: CheckContext, clock: ManualClock
) -> None:
    now = clock.now()
    entries = (_contents("b-01.tar", now, 25 * HOUR, 1000), _contents("b-02.tar", now, HOUR, None))
    async with listing_server(*entries) as url:
        result = await run(ctx, url, "backups", require_encryption=False)
    # Not "empty (0 bytes)", CRITICAL: the size is unknown, so fresh cannot be vouched for.
    assert result.status is Status.WARN
    assert result.reason == "the store did not report the newest backup's size"
    assert set(result.values) == {"backup_age_seconds", "backup_count", "previous_size_bytes"}
    assert result.values["previous_size_bytes"] == 1000

    # Too old is CRITICAL whatever the size.
    entries = (_contents("b-01.tar", now, 30 * HOUR, None),)
    async with listing_server(*entries) as url:
        result = await run(ctx, url, "backups", require_encryption=False)
    assert result.status is Status.CRITICAL
    assert result.reason == (
        "newest backup is 30h old (RPO 24h); the store did not report the newest backup's size"
    )
    assert result.values["fresh"] == 0
    assert "backup_size_bytes" not in result.values

    # A listing cut short: the age seen is an upper bound, the size still unknown.
    async with listing_server(_contents("b-01.tar", now, HOUR, None), more=True) as url:
        result = await run(ctx, url, "backups", require_encryption=False, max_keys=1)
    assert result.status is Status.WARN
    assert result.reason.startswith("newest backup seen is 1h old; listing stopped at 1 keys")
    assert set(result.values) == {"backup_age_seconds", "backup_count"}


async def test_a_previous_backup_without_size_gives_no_ratio(
    ctx: CheckContext, clock: ManualClock
) -> None:
    now = clock.now()
    entries = (_contents("b-01.tar", now, 25 * HOUR, None), _contents("b-02.tar", now, HOUR, 500))
    async with listing_server(*entries) as url:
        result = await run(ctx, url, "backups", require_encryption=False)
    assert (result.status, result.reason) == (Status.OK, "")
    assert result.values["backup_size_bytes"] == 500
    assert "previous_size_bytes" not in result.values
    assert "size_ratio" not in result.values


async def test_a_key_without_last_modified_is_unknown(
    ctx: CheckContext, clock: ManualClock
) -> None:
    now = clock.now()
    entries = (_contents("b-01.tar", now, HOUR, 1000), _contents("b-02.tar", now, None, 1000))
    async with listing_server(*entries) as url:
        result = await run(ctx, url, "backups", require_encryption=False)
    # Which backup is the newest cannot be told.
    assert result.status is Status.UNKNOWN
    assert result.reason == "the store did not report when 'b-02.tar' was written"


# --- lifecycle -----------------------------------------------------------------------------


async def test_start_run_stop(ctx: CheckContext, endpoint: str, bucket: str, s3: Any) -> None:
    put(s3, bucket, "b-01.tar")
    check = make(endpoint, bucket)
    await check.start(ctx)
    client = check._client
    assert client is not None
    assert (await check.run(ctx)).status is Status.OK
    assert check._client is client  # kept between runs
    await check.stop()
    assert check._client is None
    await check.stop()  # a second stop is harmless


async def test_start_with_unreachable_endpoint_does_not_raise(ctx: CheckContext) -> None:
    check = make(f"http://127.0.0.1:{free_port()}", "backups")
    await check.start(ctx)
    try:
        assert (await check.run(ctx)).status is Status.UNKNOWN
    finally:
        await check.stop()
