"""`pg_backup`: pg_dump of a database streamed into S3, encrypted at rest, with a manifest.

pg_dump's output is read from its stdout in chunks and uploaded part by part (multipart
upload, daemon.clients.s3_upload): nothing is written to disk, and memory holds the part
being filled plus at most `parts_in_flight` parts uploading. `format: plain` is plain SQL
compressed by pg_dump itself (`--compress`, the same as `pg_dump | gzip`) into
`backup-YYYYmmdd-HHMMSS.sql.gz`; `format: custom` is pg_dump's custom format (`.dump`, for
pg_restore). Every object is written with server-side encryption (AES256, or aws:kms).

Before dumping, a transaction (REPEATABLE READ, READ ONLY) exports its snapshot and counts the
rows of `count_tables`; pg_dump then dumps that same snapshot (`--snapshot`), so the counts in
the manifest are exactly the rows in the backup, and the drill can compare them. The
transaction stays open until pg_dump is done, as the export requires.

A run that does not finish (pg_dump failing, an upload error, the timeout, a cancellation)
aborts the multipart upload: no partial object ever appears. The manifest is written only
after the backup object is complete. A process killed outright cannot abort, and S3 keeps
(and bills) the parts it stored: each run first aborts the uploads of backups under the
prefix begun longer than `timeout` ago (plus a margin for clocks), which no run can still be
writing, so another replica's run in progress is never touched. The DSN's password reaches
pg_dump through PGPASSWORD in its environment, never its command line.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import structlog
from pydantic import AfterValidator, ByteSize, Field, SecretStr, field_validator, model_validator

from daemon.clients.postgres import checked_postgres_dsn, dsn_passwords, libpq_target
from daemon.clients.processes import SpawnError, describe_exit, streaming_process
from daemon.clients.s3 import describe_s3_failure, is_lasting, s3_client, s3_errors
from daemon.clients.s3_upload import MIN_PART_SIZE, MultipartUpload, TooManyParts
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import PositiveDuration, format_bytes, format_duration
from remediations.backups import (
    BACKUP_NAME,
    BackupStoreConfig,
    Failed,
    Format,
    Manifest,
    Redactor,
    backup_key,
    error_line,
    manifest_key,
)
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.pg_snapshot import Snapshot, open_snapshot
from remediations.postgres_maintenance import TableName, describe_target

MAX_PART_SIZE = 5 * 1024**3  # S3's maximum part size
READ_CHUNK = 1 << 20  # bytes read from pg_dump's stdout at a time
# An upload is left behind once begun longer than `timeout` ago; this much more, because
# S3 stamps it with its own clock, not ours.
CLOCK_MARGIN = 300.0

log = structlog.get_logger("runbookd.remediations.pg_backup")


def _part_size(value: ByteSize) -> ByteSize:
    if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        raise ValueError("must lie within 5MiB and 5GiB (S3's part sizes)")
    return value


PartSize = Annotated[ByteSize, AfterValidator(_part_size)]


class PgBackupConfig(BackupStoreConfig):
    """`pg_dump` of a database streamed into an S3 multipart upload (nothing whole in memory
    or on disk), encrypted at rest, as `PREFIXbackup-YYYYmmdd-HHMMSS.sql.gz` (or `.dump`), with
    a manifest beside it (`KEY.manifest.json`: sha256, size, row counts taken in the dump's
    snapshot) written only once the backup is complete. A failed, timed-out or interrupted run
    aborts its upload: no partial object ever looks like the newest backup. A process killed
    outright cannot abort: the next run aborts the uploads of backups under the prefix begun
    more than `timeout` (and 5 minutes) before it; the bucket's lifecycle rule
    `AbortIncompleteMultipartUpload` does it where listing uploads is not allowed."""

    example: ClassVar[str] = """
        remediations:
          backup_db:
            type: pg_backup
            dsn: postgresql://backup@db.internal:5432/app   # or dsn_file: with a password
            bucket: acme-backups
            prefix: postgres/app/
            count_tables: ["User", "Task"]
        jobs:
          nightly_backup:
            run: backup_db
            schedule: "0 2 * * *"
            catch_up: 6h
        """

    type: Literal["pg_backup"]
    dsn: SecretStr = Field(
        description="`postgresql://backup@db:5432/app`: the database to dump; a secret (it may "
        "carry the password, which pg_dump gets through its environment, never its argv)."
    )
    format: Format = Field(
        "plain", description="`plain`: SQL through gzip (`.sql.gz`); `custom`: `.dump`."
    )
    compression: int = Field(
        6, ge=1, le=9, description="The gzip level (plain) or pg_dump's (custom)."
    )
    part_size: PartSize = Field(
        ByteSize(8 * 1024 * 1024),
        description="Each part is held in memory while it uploads; at most 10,000 parts make "
        "a backup (8MiB parts: up to 78GiB).",
    )
    parts_in_flight: int = Field(2, ge=1, le=8, description="Parts uploading at once.")
    encryption: Literal["AES256", "aws:kms"] = Field(
        "AES256", description="Server-side encryption of the backup and its manifest."
    )
    kms_key_id: str | None = Field(
        None, min_length=1, description="The KMS key, with `encryption: aws:kms`."
    )
    versioning: Literal["require", "warn"] = Field(
        "require",
        description="A bucket without versioning loses a backup to one overwrite or delete: "
        "refuse to back up into it, or back up and warn.",
    )
    count_tables: list[TableName] = Field(
        default_factory=list,
        description='Tables whose rows are counted in the dump\'s snapshot, e.g. ["User", '
        '"Task"]: the manifest keeps them, and `restore_drill` checks them.',
    )
    timeout: PositiveDuration = Field(
        7200.0,
        description="How long a backup may take. An upload of a backup under the prefix begun "
        "longer ago (and 5 minutes) is left behind by a killed process: a run aborts it.",
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)

    @model_validator(mode="after")
    def _kms_key(self) -> PgBackupConfig:
        if self.kms_key_id is not None and self.encryption != "aws:kms":
            raise ValueError("kms_key_id needs encryption: aws:kms")
        return self

    def encryption_args(self) -> dict[str, str]:
        args: dict[str, str] = {"ServerSideEncryption": self.encryption}
        if self.kms_key_id is not None:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


@REMEDIATIONS.register
class PgBackupRemediation(Hooks):
    type: ClassVar[str] = "pg_backup"
    Config: ClassVar[builtins.type[RemediationConfig]] = PgBackupConfig
    # A second run makes a second backup, newer: harmless.
    idempotent: bool = True
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: PgBackupConfig) -> None:
        self.name = name
        self.config = config
        dsn = config.dsn.get_secret_value()
        self._redact = Redactor([*dsn_passwords(dsn), *config.s3_secrets()])
        self._target = describe_target(dsn)

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        data: dict[str, Any] = {"database": self._target, "format": self.config.format}
        started = time.perf_counter()
        try:
            async with ctx.clock.timeout(self.config.timeout):
                detail = await self._backup(ctx, data)
            ok, recoverable = True, False
        except Failed as failed:
            detail, ok, recoverable = failed.detail, False, failed.recoverable
        except TimeoutError:
            detail = f"timed out after {format_duration(self.config.timeout)}; upload aborted"
            ok, recoverable = False, True
        data["duration_seconds"] = round(time.perf_counter() - started, 3)
        if not ok:
            detail = f"backup failed: {detail}"
        return RemediationResult(
            ok, self._redact.text(detail), recoverable, self._redact.data(data)
        )

    async def _backup(self, ctx: RemediationContext, data: dict[str, Any]) -> str:
        config = self.config
        warnings: list[str] = data.setdefault("warnings", [])
        try:
            async with s3_client(config, config.request_timeout) as client:
                await self._check_versioning(client, warnings)
                await self._abort_left_behind(client, ctx.clock.now(), data)
                async with open_snapshot(
                    config.dsn.get_secret_value(), config.count_tables
                ) as snapshot:
                    data["row_counts"] = snapshot.row_counts
                    started = ctx.clock.now()
                    key = backup_key(config.prefix, started, config.format)
                    data |= {"key": key, "bucket": config.bucket}
                    upload = await self._upload(client, key, snapshot)
                manifest = Manifest(
                    key=key,
                    format=config.format,
                    size=upload.bytes,
                    sha256=upload.sha256.hexdigest(),
                    started_at=started,
                    finished_at=ctx.clock.now(),
                    database=self._target,
                    row_counts=snapshot.row_counts,
                    counted_in_snapshot=True,
                    pg_dump_version=snapshot.pg_dump_version,
                    server_version=snapshot.server_version,
                )
                data |= self._facts(upload, manifest, warnings)
                await self._put_manifest(client, manifest)
        except s3_errors() as exc:
            reason = describe_s3_failure(exc, config.request_timeout)
            raise Failed(reason, not is_lasting(exc)) from None
        size = format_bytes(data["bytes"])
        detail = f"{config.where(data['key'])}: {size}, sha256 {data['sha256'][:12]}"
        return detail + "".join(f"; {warning}" for warning in warnings)

    async def _check_versioning(self, client: Any, warnings: list[str]) -> None:
        config = self.config
        try:
            status = (await client.get_bucket_versioning(Bucket=config.bucket)).get("Status")
        except s3_errors() as exc:
            failure = describe_s3_failure(exc, config.request_timeout)
            reason = f"cannot read the bucket's versioning: {failure}"
            if config.versioning == "require" or not is_lasting(exc):
                raise Failed(reason, not is_lasting(exc)) from None
            warnings.append(reason)
            return
        if status == "Enabled":
            return
        state = "suspended" if status == "Suspended" else "off"
        reason = f"bucket {config.bucket} has versioning {state}"
        if config.versioning == "require":
            raise Failed(f"{reason} (versioning: require)", False)
        warnings.append(f"{reason}: one overwrite or delete loses a backup")

    async def _abort_left_behind(self, client: Any, now: float, data: dict[str, Any]) -> None:
        """Abort the uploads a killed run left behind (see `left_behind`), from one listing
        page (the rest next run). Best effort: a store that refuses is a warning, not a
        failed backup."""
        config = self.config
        warnings: list[str] = data["warnings"]
        try:
            page = await client.list_multipart_uploads(Bucket=config.bucket, Prefix=config.prefix)
        except s3_errors() as exc:
            reason = describe_s3_failure(exc, config.request_timeout)
            warnings.append(f"cannot list unfinished uploads ({reason}): none aborted")
            return
        aborted: list[str] = []
        for key, upload_id in left_behind(
            page.get("Uploads", ()), config.prefix, now - config.timeout - CLOCK_MARGIN
        ):
            try:
                await client.abort_multipart_upload(
                    Bucket=config.bucket, Key=key, UploadId=upload_id
                )
            except s3_errors() as exc:
                reason = describe_s3_failure(exc, config.request_timeout)
                warnings.append(f"cannot abort the unfinished upload of {key} ({reason})")
                break  # the next would be refused the same way
            aborted.append(key)
        if aborted:
            data["aborted_uploads"] = aborted
            log.warning(
                "aborted uploads a stopped run left behind",
                remediation=self.name,
                bucket=config.bucket,
                keys=aborted,
            )

    async def _upload(self, client: Any, key: str, snapshot: Snapshot) -> MultipartUpload:
        config = self.config
        target, env = libpq_target(config.dsn.get_secret_value())
        argv = [
            "pg_dump",
            f"--dbname={target}",
            f"--format={config.format}",
            f"--compress={config.compression}",
            f"--snapshot={snapshot.snapshot_id}",
            "--no-password",
        ]
        extra = {"ContentType": "application/octet-stream", **config.encryption_args()}
        upload = MultipartUpload(
            client,
            config.bucket,
            key,
            part_size=int(config.part_size),
            in_flight=config.parts_in_flight,
            extra=extra,
        )
        try:
            async with upload, streaming_process(argv, env=env, stdout=True) as dump:
                while chunk := await dump.stdout.read(min(READ_CHUNK, upload.room())):
                    await upload.write(chunk)
                code = await dump.finish()
                if code != 0:
                    reason = error_line(dump.stderr)
                    raise Failed(f"pg_dump {describe_exit(code)}: {reason}", True)
                await upload.complete()
        except SpawnError as exc:
            raise Failed(str(exc), False) from None
        except TooManyParts as exc:
            raise Failed(f"{exc}: raise part_size", False) from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise Failed(f"reading pg_dump's output failed: {exc}", True) from None
        return upload

    def _facts(
        self, upload: MultipartUpload, manifest: Manifest, warnings: list[str]
    ) -> dict[str, Any]:
        completed = upload.completed or {}
        stored = completed.get("ServerSideEncryption")
        if stored != self.config.encryption:
            warnings.append(
                f"the store reported encryption {stored or 'none'}, not {self.config.encryption}"
            )
        return {
            "bytes": manifest.size,
            "sha256": manifest.sha256,
            "version_id": completed.get("VersionId"),
            "encryption": stored,
            "manifest": manifest_key(manifest.key),
            "pg_dump_version": manifest.pg_dump_version,
        }

    async def _put_manifest(self, client: Any, manifest: Manifest) -> None:
        try:
            await client.put_object(
                Bucket=self.config.bucket,
                Key=manifest_key(manifest.key),
                Body=manifest.to_bytes(),
                ContentType="application/json",
                **self.config.encryption_args(),
            )
        except s3_errors() as exc:
            # The backup is whole but unverifiable: drills skip it, so say so loudly.
            reason = describe_s3_failure(exc, self.config.request_timeout)
            detail = f"{manifest.key} stored, but its manifest could not be written: {reason}"
            raise Failed(detail, not is_lasting(exc)) from None


def left_behind(
    uploads: Iterable[Mapping[str, Any]], prefix: str, begun_before: float
) -> list[tuple[str, str]]:
    """(key, upload id) of the multipart uploads of backups (named as `pg_backup` names them,
    right under `prefix`) that S3 says began before `begun_before`: no run bounded by the
    timeout can still be writing them. Anything else under the prefix is not ours to abort."""
    found: list[tuple[str, str]] = []
    for upload in uploads:
        key, upload_id = upload.get("Key"), upload.get("UploadId")
        initiated = upload.get("Initiated")  # a datetime, as botocore parses it
        if not (isinstance(key, str) and isinstance(upload_id, str)):
            continue
        if not key.startswith(prefix) or BACKUP_NAME.fullmatch(key[len(prefix) :]) is None:
            continue
        if isinstance(initiated, datetime) and initiated.timestamp() < begun_before:
            found.append((key, upload_id))
    return found
