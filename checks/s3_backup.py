"""`s3_backup` check: is there a recent, plausible, encrypted backup in the bucket?

The runbook asks for "backups within 24 hours". The newest object under the prefix (by
LastModified) must be younger than the RPO and at least `min_size` bytes (else CRITICAL), not
much smaller than the one before it, and encrypted at rest (else WARN). Works with AWS and
S3-compatible stores (MinIO, R2, moto) through `endpoint_url`.

aioboto3 and botocore are imported on first use (by `start`), not with the module: the config
model registers without them, and a daemon with no s3_backup check never loads them.

`fresh` (1/0) carries the CRITICAL verdict for rules, like `up` for the http check: it is 0
also when there is no backup at all, where age and size cannot be reported. A size the store
does not list is left out, never read as 0 bytes; `fresh` then too, unless the age alone
makes it 0.
"""

from __future__ import annotations

import builtins
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult
from daemon.clients.s3 import (
    MANIFEST_SUFFIX,
    S3Location,
    client_config,
    describe_s3_failure,
    is_no_bucket,
    new_session,
    s3_errors,
)
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status
from daemon.core.units import Duration, Ratio

VALUE_NAMES = frozenset(
    {
        "backup_age_seconds",
        "backup_size_bytes",
        "previous_size_bytes",
        "size_ratio",
        "backup_count",
        "encrypted",
        "fresh",
    }
)


class S3BackupCheckConfig(CheckConfig, S3Location):
    """The newest object under `prefix` (by LastModified) is the latest backup: older than
    `rpo`, smaller than `min_size` or missing is CRITICAL; much smaller than the one before it,
    or not encrypted at rest, is WARN. `fresh` (1/0) carries the CRITICAL verdict for rules,
    also when there is no backup at all. A manifest beside a backup (`*.manifest.json`, as
    `pg_backup` writes) is not a backup. AWS, or an S3-compatible store (MinIO, R2) through
    `endpoint_url`."""

    example: ClassVar[str] = """
        checks:
          backups:
            type: s3_backup
            bucket: acme-backups
            prefix: postgres/app/
            region: eu-west-1
            rpo: 24h
            interval: 1h
        """

    type: Literal["s3_backup"]
    rpo: Duration = Field(
        86400.0,
        gt=0,
        description="Recovery point objective: a newest backup older than this is CRITICAL.",
    )
    size_drop: Ratio = Field(
        0.5,
        description="A newest backup smaller than (1 - size_drop) x the previous one is WARN.",
    )
    require_encryption: bool = Field(
        True,
        description="Server-side encryption (AES256 or aws:kms) on the newest backup, else "
        "WARN. Turn off for backups encrypted client-side (restic, gpg), which S3 cannot see.",
    )
    min_size: int = Field(
        1, ge=0, description="A newest backup of fewer bytes is CRITICAL (default: an empty one)."
    )
    page_size: int = Field(
        1000, ge=1, le=1000, description="Keys per ListObjectsV2 page (S3's maximum is 1000)."
    )
    max_keys: int = Field(
        10_000,
        ge=1,
        description="Listing stops after this many keys, so a huge bucket cannot make a run "
        "unbounded.",
    )

    def value_names(self) -> frozenset[str]:
        return VALUE_NAMES if self.require_encryption else VALUE_NAMES - {"encrypted"}


class _UnreadableListing(Exception):
    """The listing lacks what the verdict needs; the message is the reason."""


@dataclass(frozen=True, slots=True)
class _Backup:
    key: str
    modified: float
    size: int | None  # None: the store did not say (never read as 0 bytes)

    @property
    def order(self) -> tuple[float, str]:
        # LastModified has one-second resolution: on a tie the later name (a timestamp) wins.
        return (self.modified, self.key)


@dataclass(slots=True)
class _Listing:
    newest: _Backup | None = None
    previous: _Backup | None = None
    count: int = 0  # backups, i.e. without "directory" placeholders
    listed: int = 0  # keys seen
    truncated: bool = False

    def add(self, obj: dict[str, Any]) -> None:
        self.listed += 1
        key = str(obj["Key"])
        if key.endswith(("/", MANIFEST_SUFFIX)):
            return  # a "directory" placeholder made by consoles and sync tools, or a manifest
        modified: datetime | None = obj.get("LastModified")
        if modified is None:  # which backup is the newest cannot be told
            raise _UnreadableListing(f"the store did not report when {key[:80]!r} was written")
        size = obj.get("Size")
        backup = _Backup(key, modified.timestamp(), None if size is None else int(size))
        self.count += 1
        if self.newest is None or backup.order > self.newest.order:
            self.previous, self.newest = self.newest, backup
        elif self.previous is None or backup.order > self.previous.order:
            self.previous = backup


def _span(seconds: float) -> str:
    """30.1h, 45.5m, 12s."""
    if seconds >= 3600:
        return f"{round(seconds / 3600, 1):g}h"
    if seconds >= 60:
        return f"{round(seconds / 60, 1):g}m"
    return f"{seconds:.0f}s"


def _bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@CHECKS.register
class S3BackupCheck:
    """Lists the backups under the prefix and judges the newest. A failure to look (endpoint
    down, access denied) is UNKNOWN: it says nothing about the backups themselves."""

    type: ClassVar[str] = "s3_backup"
    Config: ClassVar[builtins.type[CheckConfig]] = S3BackupCheckConfig
    bounded: ClassVar[bool] = False

    def __init__(self, name: str, config: S3BackupCheckConfig) -> None:
        self.name = name
        self.config = config
        self._where = f"s3://{config.bucket}/{config.prefix}"
        self._timeout_s = request_timeout(config.timeout)
        self._session: Any = None
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    def _new_session(self) -> Any:
        """E.g. AWS_PROFILE naming a missing profile raises here: start() lets it pass, and
        each run() tries again and says why."""
        return new_session(self.config)

    def _client_config(self) -> Any:
        # One retry rides over a pooled connection the store closed while idle between
        # runs; the next run is the retry for the rest.
        return client_config(self.config, self._timeout_s, retries=1)

    async def start(self, ctx: CheckContext) -> None:
        # Best effort: creating a client resolves credentials but makes no S3 call. If it
        # fails, run() tries again and reports the failure.
        with suppress(*s3_errors()):
            await self._open()

    async def stop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _open(self) -> Any:
        if self._client is not None:
            return self._client
        if self._session is None:
            self._session = self._new_session()
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                self._session.client(
                    "s3", endpoint_url=self.config.endpoint_url, config=self._client_config()
                )
            )
            self._stack, self._client = stack.pop_all(), client
        return client

    async def run(self, ctx: CheckContext) -> CheckResult:
        encryption: tuple[bool | None, str] = (None, "")
        try:
            async with ctx.clock.timeout(self._timeout_s):
                client = await self._open()
                listing = await self._list(client)
                newest = listing.newest
                if newest and self.config.require_encryption and not listing.truncated:
                    encryption = await self._encryption(client, newest)
        except TimeoutError:
            return CheckResult.unknown(f"timeout after {self._timeout_s:g}s")
        except _UnreadableListing as exc:
            return CheckResult.unknown(str(exc))
        except s3_errors() as exc:
            if is_no_bucket(exc):
                # CRITICAL, not UNKNOWN: S3 answered authoritatively that there is no such
                # bucket, so there is no backup to restore, whether it was deleted or never
                # existed (a typo fails loudly at deploy). We did look; the answer is bad.
                reason = f"bucket {self.config.bucket} does not exist"
                return CheckResult(Status.CRITICAL, {"backup_count": 0.0, "fresh": 0.0}, reason)
            return CheckResult.unknown(describe_s3_failure(exc, self._timeout_s))
        return self._verdict(listing, encryption, ctx.clock.now())

    async def _list(self, client: Any) -> _Listing:
        """ListObjectsV2 page by page, keeping the newest two; stops after `max_keys`."""
        listing = _Listing()
        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Prefix": self.config.prefix,
            "MaxKeys": self.config.page_size,
        }
        while True:
            page = await client.list_objects_v2(**params)
            for obj in page.get("Contents", ()):
                listing.add(obj)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return listing
            if listing.listed >= self.config.max_keys:
                listing.truncated = True
                return listing
            params["ContinuationToken"] = token

    async def _encryption(self, client: Any, newest: _Backup) -> tuple[bool | None, str]:
        """(encrypted, "") or (None, why we cannot tell): a HeadObject failure after a good
        listing is reported with the freshness we did measure, not as UNKNOWN."""
        try:
            head = await client.head_object(Bucket=self.config.bucket, Key=newest.key)
        except s3_errors() as exc:
            return None, describe_s3_failure(exc, self._timeout_s)
        return bool(head.get("ServerSideEncryption") or head.get("SSECustomerAlgorithm")), ""

    def _critical(self, newest: _Backup, age: float) -> str | None:
        if age > self.config.rpo:
            return f"newest backup is {_span(age)} old (RPO {_span(self.config.rpo)})"
        if newest.size is not None and newest.size < self.config.min_size:
            if newest.size == 0:
                return "newest backup is empty (0 bytes)"
            return f"newest backup is {newest.size} bytes (min_size {self.config.min_size})"
        return None

    def _verdict(
        self, listing: _Listing, encryption: tuple[bool | None, str], now: float
    ) -> CheckResult:
        newest = listing.newest
        if newest is None:
            reason = f"no backups under {self._where}"
            return CheckResult(Status.CRITICAL, {"backup_count": 0.0, "fresh": 0.0}, reason)
        age = max(0.0, now - newest.modified)  # clocks may disagree by a little
        critical = self._critical(newest, age)
        if listing.truncated:
            return self._truncated(listing, age, critical)
        values = {"backup_age_seconds": age, "backup_count": float(listing.count)}
        unsized = None
        if newest.size is not None:
            values["backup_size_bytes"] = float(newest.size)
        else:
            unsized = "the store did not report the newest backup's size"
        # Not fresh is known from the age alone; fresh needs the size too.
        if critical or newest.size is not None:
            values["fresh"] = 0.0 if critical else 1.0
        if encryption[0] is not None:
            values["encrypted"] = 1.0 if encryption[0] else 0.0
        warnings = [unsized, self._size_drop(listing, values), self._unencrypted(encryption)]
        problems = [p for p in (critical, *warnings) if p]
        if critical:
            return CheckResult(Status.CRITICAL, values, "; ".join(problems))
        if problems:
            return CheckResult(Status.WARN, values, "; ".join(problems))
        return CheckResult(Status.OK, values)

    def _size_drop(self, listing: _Listing, values: dict[str, float]) -> str | None:
        newest, previous = listing.newest, listing.previous
        if newest is None or previous is None or previous.size is None:
            return None
        values["previous_size_bytes"] = float(previous.size)
        if previous.size == 0 or newest.size is None:
            return None
        ratio = newest.size / previous.size
        values["size_ratio"] = ratio
        if newest.size >= (1 - self.config.size_drop) * previous.size:
            return None
        return (
            f"newest backup is {ratio:.0%} of the previous one "
            f"({_bytes(newest.size)} vs {_bytes(previous.size)})"
        )

    def _unencrypted(self, encryption: tuple[bool | None, str]) -> str | None:
        encrypted, why = encryption
        if not self.config.require_encryption or encrypted:
            return None
        if encrypted is None:
            return f"cannot tell whether the newest backup is encrypted: {why}"
        return "newest backup is not encrypted (no server-side encryption)"

    def _truncated(self, listing: _Listing, age: float, critical: str | None) -> CheckResult:
        """Only part of the keys were seen, in name order: a fresh backup among them proves
        freshness (WARN, to narrow the prefix), anything else may be wrong (UNKNOWN)."""
        stopped = f"listing stopped at {listing.listed} keys, narrow the prefix"
        if critical:
            return CheckResult.unknown(f"{stopped}; among the keys seen, {critical}")
        # The true newest may be among the keys not seen: this age is an upper bound.
        values = {"backup_age_seconds": age, "backup_count": float(listing.count)}
        if listing.newest is not None and listing.newest.size is not None:
            values["fresh"] = 1.0  # else its size is unknown: not vouched for
        reason = f"newest backup seen is {_span(age)} old; {stopped}"
        return CheckResult(Status.WARN, values, reason)
