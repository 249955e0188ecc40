"""What `restore_drill` and `pg_restore` share: finding a backup's manifest (the newest
complete one, or one named), streaming the backup into a database with the right tool while
its sha256 is checked, counting the restored rows against the manifest, and dropping a
database of their own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon.clients.postgres import libpq_target, quote_ident, with_database
from daemon.clients.s3 import describe_s3_failure, is_lasting, list_prefix, s3_errors
from remediations.backups import (
    MAX_MANIFEST,
    Backups,
    BackupStoreConfig,
    Failed,
    Manifest,
    format_of,
    is_backup_name,
    manifest_key,
)
from remediations.drill_report import TableCount
from remediations.pg_snapshot import count_rows, message, pg_errors, session
from remediations.restore_stream import Restored, stream_restore

DROP_TIMEOUT = 120.0
LATEST = "latest"


async def find_manifest(
    client: Any, config: BackupStoreConfig, key: str = LATEST, skipped: list[str] | None = None
) -> Manifest:
    """The manifest of the backup `key` (a key under the prefix), or of the newest complete
    backup for `latest`, the newer keys passed over (no manifest yet) added to `skipped`. The
    object must be the size its manifest says: a truncated or replaced backup fails here."""
    try:
        if key == LATEST:
            listing = await list_prefix(client, config.bucket, config.prefix, config.max_keys)
            backups = Backups.of(listing)
            if backups.truncated:
                raise Failed(f"listing stopped at {config.max_keys} keys: narrow the prefix", False)
            newest, passed_over = backups.newest_complete()
            if skipped is not None:
                skipped += passed_over
            if newest is None:
                where = config.where()
                raise Failed(f"no complete backup (one with a manifest) under {where}", False)
            key, size = newest.key, newest.size
        else:
            if not key.startswith(config.prefix) or not is_backup_name(key, config.prefix):
                raise Failed(f"{key!r} is not a backup under {config.where()}", False)
            if format_of(key) is None:
                raise Failed(f"{key!r} is not a backup runbookd can restore", False)
            head = await client.head_object(Bucket=config.bucket, Key=key)
            size = head.get("ContentLength")
        raw = await read_small(client, config.bucket, manifest_key(key))
    except s3_errors() as exc:
        reason = describe_s3_failure(exc, config.request_timeout)
        raise Failed(f"{key}: {reason}", not is_lasting(exc)) from None
    try:
        manifest = Manifest.parse(raw)
    except ValueError as exc:
        raise Failed(f"{manifest_key(key)}: {exc}", False) from None
    if manifest.key != key:
        raise Failed(f"{manifest_key(key)} describes another backup: {manifest.key}", False)
    if size is not None and size != manifest.size:
        raise Failed(
            f"{key} is {size} bytes, its manifest says {manifest.size}: truncated or replaced",
            False,
        )
    return manifest


async def read_small(client: Any, bucket: str, key: str) -> bytes:
    """An object of at most MAX_MANIFEST bytes (one more is read, for Manifest.parse to
    refuse); its body is read until the end or that bound."""
    body = (await client.get_object(Bucket=bucket, Key=key))["Body"]
    raw = bytearray()
    async with body:
        while len(raw) <= MAX_MANIFEST and (chunk := await body.read(MAX_MANIFEST + 1)):
            raw += chunk
    return bytes(raw)


async def restore_into(
    client: Any, config: BackupStoreConfig, manifest: Manifest, dsn: str, database: str
) -> tuple[Restored, list[str]]:
    """Stream the backup into `database` (on `dsn`'s server): psql for plain SQL, pg_restore
    for the custom format. Returns what was done and why it is not a faithful copy (none:
    it is); the checksum mismatch, the cause, comes before its symptoms."""
    target, env = libpq_target(with_database(dsn, database))
    if manifest.format == "plain":
        argv = ["psql", "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1"]
    else:
        argv = ["pg_restore", "--exit-on-error", "--no-password"]
    done = await stream_restore(
        client,
        config.bucket,
        manifest.key,
        [*argv, f"--dbname={target}"],
        env,
        gzipped=manifest.format == "plain",
        request_timeout=config.request_timeout,
    )
    failures: list[str] = []
    if done.sha256 != manifest.sha256 or done.downloaded != manifest.size:
        failures.append(
            f"checksum mismatch: {manifest.key} ({done.downloaded} bytes) has sha256 "
            f"{done.sha256[:16]}…, its manifest says {manifest.sha256[:16]}… "
            f"({manifest.size} bytes): the backup is corrupt"
        )
    failures += [f"restore: {failure}" for failure in done.failures]
    return done, failures


async def count_against(conn: Any, manifest: Manifest, tolerance: float) -> list[TableCount]:
    """Each manifest table's rows in `conn`'s database, against the manifest's count."""
    counts = []
    for table, expected in manifest.row_counts.items():
        count = TableCount(table, expected)
        try:
            count.restored = (await count_rows(conn, [table]))[table]
        except (Failed, ValueError) as exc:
            count.error = exc.detail if isinstance(exc, Failed) else f"not a table name: {exc}"
        else:
            count.ok = abs(count.restored - expected) <= tolerance * expected
        counts.append(count)
    return counts


def count_failures(counts: list[TableCount]) -> list[str]:
    failures = []
    for count in counts:
        if not count.ok:
            restored = "unknown" if count.restored is None else count.restored
            why = count.error or f"{restored} rows restored, {count.expected} in the backup"
            failures.append(f"row count of {count.table}: {why}")
    return failures


async def drop_database(dsn: str, name: str) -> str | None:
    """Drop a database this run made; None once gone, else why not."""
    try:
        async with asyncio.timeout(DROP_TIMEOUT):
            async with session(dsn, "dropping") as conn:
                # FORCE: a restore tool still connected is ended, not waited for.
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    except Failed as exc:
        return exc.detail
    except TimeoutError:
        return f"timeout after {DROP_TIMEOUT:g}s"
    except pg_errors() as exc:
        return message(exc)
    return None
