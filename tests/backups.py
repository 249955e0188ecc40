"""The world of the backup tests: a source database with the application's tables (Prisma's
"User", "Task" and _prisma_migrations), moto with versioned buckets and encryption checked on
every object, and a proxy in front of moto that holds or refuses requests on demand.

The source database is made with psql (a real tool, no event loop), so a module can share
one across tests that each run in their own loop.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import boto3
import psutil
from aiohttp import web
from botocore.config import Config

from tests.pg import ADMIN_DSN, dsn_for
from tests.services import missing
from tests.utils import serve

KEY_ID = "AKIDRUNBOOKDBACKUP01"
SECRET = "s3cr3t-backup-key-never-shown"
PASSWORD = "pw-Backup-s3cret"  # the test server trusts loopback: sent, never checked
USERS, TASKS, MIGRATIONS = 2000, 6000, 12
COUNTS = {"User": USERS, "Task": TASKS, "_prisma_migrations": MIGRATIONS}

# Test constants only, formatted in.
APP_SCHEMA = f"""
CREATE TABLE "User" (
  id text PRIMARY KEY, email text NOT NULL UNIQUE, name text,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Task" (
  id text PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false,
  "userId" text NOT NULL REFERENCES "User"(id) ON DELETE CASCADE,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX "Task_userId_idx" ON "Task"("userId");
CREATE TABLE _prisma_migrations (
  id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, finished_at timestamptz,
  migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamptz,
  started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count integer NOT NULL DEFAULT 0);
INSERT INTO "User" (id, email, name)
  SELECT 'u' || g, 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, {USERS}) g;
INSERT INTO "Task" (id, title, done, "userId")
  SELECT 't' || g, 'Task ' || g, g % 3 = 0, 'u' || (1 + g % {USERS})
  FROM generate_series(1, {TASKS}) g;
INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count)
  SELECT md5(g::text)::uuid::text, md5('c' || g), now(), '2024010' || g || '_init', 1
  FROM generate_series(1, {MIGRATIONS}) g;
"""  # noqa: S608
# One MiB of md5 hex per row, decoded: bytes that do not compress, so a dump of N rows is
# about 2N MiB of SQL (bytea as hex) and still about N MiB gzipped.
BLOBS = """
CREATE TABLE blob (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blob SELECT i, (SELECT decode(string_agg(md5(i || ':' || g || random()), ''), 'hex')
  FROM generate_series(1, 65536) g) FROM generate_series(1, {rows}) i;
"""


PSQL = shutil.which("psql") or "psql"


def psql(dsn: str, sql: str) -> None:
    run = subprocess.run(
        [PSQL, "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={dsn}"],
        input=sql.encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"psql failed: {run.stderr.decode()[-500:]}")


def databases() -> set[str]:
    out = subprocess.run(
        [
            PSQL,
            "--no-psqlrc",
            "-At",
            f"--dbname={ADMIN_DSN}",
            "-c",
            "SELECT datname FROM pg_database",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return set(out.stdout.decode().split())


@contextmanager
def source_database(blob_mib: int = 0) -> Iterator[str]:
    """A database with the application's tables filled; yields its DSN (with a password the
    trusting test server ignores, so that it must not leak), drops it afterwards."""
    name = f"runbookd_backup_{secrets.token_hex(5)}"
    try:
        psql(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    except (OSError, RuntimeError) as exc:
        missing(f"PostgreSQL (psql) not usable at RUNBOOKD_TEST_PG_DSN: {exc}")
    try:
        psql(dsn_for(name), APP_SCHEMA + (BLOBS.format(rows=blob_mib) if blob_mib else ""))
        yield dsn_for(name, password=PASSWORD)
    finally:
        psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- S3 --------------------------------------------------------------------------------------


def s3_for(endpoint: str, service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )


def new_bucket(s3: Any, versioning: str | None = "Enabled") -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    if versioning is not None:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    return name


def versions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = s3.list_object_versions(Bucket=bucket).get("Versions", [])
    return listed


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def pending_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def assert_all_encrypted(s3: Any, bucket: str) -> None:
    """Every version of every object was written with server-side encryption."""
    for version in versions(s3, bucket):
        # An unversioned bucket lists its objects as version "null", which moto refuses.
        which = {} if version["VersionId"] == "null" else {"VersionId": version["VersionId"]}
        head = s3.head_object(Bucket=bucket, Key=version["Key"], **which)
        assert head.get("ServerSideEncryption") in ("AES256", "aws:kms"), version["Key"]


def put_object(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256")


def read_object(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


# --- a proxy in front of moto ---------------------------------------------------------------

# Decides about one request: None passes it on; a Response answers it instead. It may wait.
Gate = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
# Changes the body of moto's answer to a request before it goes back.
Rewrite = Callable[[web.Request, bytes], bytes]
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@asynccontextmanager
async def s3_proxy(endpoint: str, gate: Gate, rewrite: Rewrite | None = None) -> AsyncIterator[str]:
    """An endpoint that forwards everything to moto, each request first through `gate`, each
    answer's body through `rewrite`."""
    async with aiohttp.ClientSession(auto_decompress=False) as upstream:

        async def forward(request: web.Request) -> web.StreamResponse:
            answer = await gate(request)
            if answer is not None:
                return answer
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
            # A file object: aiohttp warns about a large body given as bytes.
            body = io.BytesIO(await request.read())
            url = endpoint + request.path_qs
            async with upstream.request(request.method, url, headers=headers, data=body) as resp:
                body = await resp.read()
                if rewrite is not None:
                    body = rewrite(request, body)
                back = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
                return web.Response(status=resp.status, headers=back, body=body)

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", forward)
        async with serve(app) as url:
            try:
                yield url
            finally:
                # A held request would keep the server from stopping.
                release = getattr(gate, "release", None)
                if release is not None:
                    release()


class Hold:
    """A gate holding the requests `matches` picks until `release()`; `held` is set once one
    is being held."""

    def __init__(self, matches: Callable[[web.Request], bool]) -> None:
        self.matches = matches
        self.held = asyncio.Event()
        self._release = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse | None:
        if self.matches(request):
            self.held.set()
            await self._release.wait()
        return None

    def release(self) -> None:
        self._release.set()


class Initiated:
    """A rewrite for the proxy: moto lists every multipart upload as begun in 2010; this makes
    ListMultipartUploads say, as S3 would, when each upload in `begun` (id -> epoch seconds)
    began. Uploads not in it keep moto's date."""

    _UPLOAD = re.compile(rb"<Upload>.*?</Upload>", re.DOTALL)
    _ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
    _AT = re.compile(rb"<Initiated>[^<]*</Initiated>")

    def __init__(self) -> None:
        self.begun: dict[str, float] = {}

    def __call__(self, request: web.Request, body: bytes) -> bytes:
        if request.method != "GET" or "uploads" not in request.query:
            return body
        return self._UPLOAD.sub(self._dated, body)

    def _dated(self, match: re.Match[bytes]) -> bytes:
        upload = match.group(0)
        found = self._ID.search(upload)
        when = self.begun.get(found.group(1).decode()) if found else None
        if when is None:
            return upload
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return self._AT.sub(f"<Initiated>{stamp}</Initiated>".encode(), upload)


def part_number(request: web.Request) -> int | None:
    number = request.query.get("partNumber")
    return int(number) if number is not None and request.method == "PUT" else None


def s3_error(code: str, status: int = 400) -> web.Response:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>refused</Message></Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def children_named(name: str) -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == name]
