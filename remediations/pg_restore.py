"""`pg_restore`: the runbook's Restore from Backup, into the application's own database.

The live database is not touched until the backup is proven: the chosen backup (a key, or
the newest complete one) is streamed into a new database beside it
(`<database>_restoring_<timestamp>`, with the live one's owner, encoding and collation) while
its sha256 is checked against the manifest, and the row counts of the manifest's tables are
compared with it. Only then are the two swapped in one transaction: the live database is
renamed `<database>_before_restore_<timestamp>` and kept (runbookd never drops it), the
restored one takes its name. The live database's sessions are ended for the swap (the
application should be in maintenance mode by then). A backup that fails any check leaves the
live database as it was, and the copy is dropped; so is a copy an interrupted run left.

`dsn` names a role that owns the database or a superuser, connected to another database of
the server (e.g. postgres); the server needs room for a second copy while it runs.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from daemon.clients.postgres import checked_postgres_dsn, dsn_passwords, quote_ident, with_database
from daemon.clients.s3 import s3_client
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import PositiveDuration, Ratio, format_bytes, format_duration
from remediations.backups import BackupStoreConfig, Failed, Manifest, Redactor, utc
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext, run_params
from remediations.drill_report import TableCount
from remediations.pg_snapshot import message, pg_errors, session
from remediations.restoring import (
    LATEST,
    count_against,
    count_failures,
    drop_database,
    find_manifest,
    restore_into,
)

PARAM = "backup"  # the procedure parameter that names the backup
# Room for the suffixes within PostgreSQL's 63-byte names.
NAME_ROOM = 30
SWAP_ATTEMPTS = 3


class PgRestoreConfig(BackupStoreConfig):
    """Restores a backup `pg_backup` made into the application's database `database`: into a
    copy beside it first, checked (sha256 against the manifest, row counts of its tables),
    then swapped in; the database it replaces is kept as
    `<database>_before_restore_<timestamp>`. A backup that fails a check changes nothing. In
    a procedure, the run's `backup` parameter (a key under `prefix`, or `latest`) chooses
    the backup. Destructive: it runs only once approved."""

    example: ClassVar[str] = """
        remediations:
          restore:
            type: pg_restore
            dsn: postgresql://postgres@db.internal:5432/postgres
            database: app
            bucket: acme-backups
            prefix: postgres/app/
        """

    type: Literal["pg_restore"]
    dsn: SecretStr = Field(
        description="`postgresql://postgres@db:5432/postgres`: the database's owner or a "
        "superuser, connected to another database of the same server; a secret."
    )
    database: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[^\x00]+$",
        description="The database restored into, by name: the application's.",
    )
    backup: str = Field(
        LATEST,
        min_length=1,
        description="The backup: its key under `prefix`, or `latest` for the newest complete "
        "one. A procedure run's `backup` parameter takes its place.",
    )
    tolerance: Ratio = Field(
        0.0,
        description="How far a restored table's row count may be from the manifest's, as a "
        "fraction of it.",
    )
    timeout: PositiveDuration = Field(
        6 * 3600.0, description="Bounds the whole restore: download, restore, checks and swap."
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)


@dataclass(slots=True)
class RestoreReport:
    database: str
    started_at: float
    finished_at: float | None = None
    key: str | None = None
    format: str | None = None
    backup_bytes: int | None = None
    backup_taken_at: float | None = None
    sha256_expected: str | None = None
    sha256: str | None = None
    downloaded_bytes: int | None = None
    restored_bytes: int | None = None
    restore_seconds: float | None = None
    copy: str | None = None  # the database restored into before the swap
    # Copies an interrupted run left (never live: only a swap makes a copy live), dropped.
    leftovers: list[str] = field(default_factory=list)
    row_counts: list[TableCount] = field(default_factory=list)
    swapped: bool = False
    previous: str | None = None  # the replaced database, kept under this name
    # Counted again under the database's own name, after the swap.
    counts_after_swap: list[TableCount] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.swapped and not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def suffixed(database: str, what: str, when: float) -> str:
    return f"{database[:NAME_ROOM]}_{what}_{datetime.fromtimestamp(when, UTC):%Y%m%d_%H%M%S}"


@REMEDIATIONS.register
class PgRestoreRemediation(Hooks):
    type: ClassVar[str] = "pg_restore"
    Config: ClassVar[builtins.type[RemediationConfig]] = PgRestoreConfig
    # Run twice, it replaces the database twice (keeping both predecessors).
    idempotent: bool = False
    destructive: bool = True
    notifier: bool = False

    def __init__(self, name: str, config: PgRestoreConfig) -> None:
        self.name = name
        self.config = config
        dsn = config.dsn.get_secret_value()
        self._redact = Redactor([*dsn_passwords(dsn), *config.s3_secrets()])

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        config = self.config
        report = RestoreReport(config.database, ctx.clock.now())
        key = run_params(incident).get(PARAM) or config.backup
        recoverable = False
        try:
            async with ctx.clock.timeout(config.timeout):
                await self._restore(ctx, key, report)
        except Failed as failed:
            report.failures.append(failed.detail)
            recoverable = failed.recoverable
        except TimeoutError:
            report.failures.append(f"timed out after {format_duration(config.timeout)}")
        report.finished_at = ctx.clock.now()
        data = self._redact.data(report.to_dict())
        return RemediationResult(report.ok, self._redact.text(_detail(report)), recoverable, data)

    async def _restore(self, ctx: RemediationContext, key: str, report: RestoreReport) -> None:
        config = self.config
        admin = config.dsn.get_secret_value()
        async with s3_client(config, config.request_timeout) as client:
            manifest = await find_manifest(client, config, key)
            report.key, report.format = manifest.key, manifest.format
            report.backup_bytes, report.backup_taken_at = manifest.size, manifest.started_at
            report.sha256_expected = manifest.sha256
            report.leftovers = await self._drop_leftovers(admin, report)
            now = ctx.clock.now()
            copy = suffixed(config.database, "restoring", now)
            await self._create_copy(admin, copy)
            report.copy = copy
            try:
                started = time.perf_counter()
                done, failures = await restore_into(client, config, manifest, admin, copy)
                report.restore_seconds = round(time.perf_counter() - started, 3)
                report.sha256, report.downloaded_bytes = done.sha256, done.downloaded
                report.restored_bytes = done.restored
                if not failures:
                    report.row_counts = await self._count(admin, copy, manifest)
                    failures = count_failures(report.row_counts)
                if failures:
                    report.failures += failures
                    report.failures.append(f"{config.database} left as it was")
                    return
                previous = suffixed(config.database, "before_restore", now)
                await self._swap(admin, copy, previous, report)
            finally:
                if not report.swapped and (why := await drop_database(admin, copy)):
                    report.failures.append(f"the copy {copy} was not dropped ({why}): drop it")
        report.counts_after_swap = await self._count(admin, config.database, manifest)
        report.failures += [
            f"after the swap, {f}" for f in count_failures(report.counts_after_swap)
        ]

    async def _drop_leftovers(self, admin: str, report: RestoreReport) -> list[str]:
        """Drop the copies of this database a run cut short left behind (runbookd stopped
        mid-restore): named as only a copy is, and never live, since the swap renames it."""
        named = re.compile(re.escape(self.config.database[:NAME_ROOM]) + r"_restoring_\d{8}_\d{6}")
        async with session(admin, "connecting to the server") as conn:
            try:
                names = [r[0] for r in await conn.fetch("SELECT datname FROM pg_database")]
            except pg_errors() as exc:
                raise Failed(f"listing databases: {message(exc)}", True) from None
        dropped = []
        for name in sorted(n for n in names if named.fullmatch(n)):
            if why := await drop_database(admin, name):
                report.failures.append(f"{name}, left by an interrupted restore: {why}")
            else:
                dropped.append(name)
        return dropped

    async def _create_copy(self, admin: str, copy: str) -> None:
        """A new database with the live one's owner, encoding, collation and locale provider."""
        database = self.config.database
        async with session(admin, "connecting to the server") as conn:
            try:
                # As JSON: the locale columns differ between server versions.
                raw = await conn.fetchval(
                    "SELECT to_jsonb(d) - 'datacl' || jsonb_build_object("
                    "'owner', pg_get_userbyid(datdba), 'encoding_name', "
                    "pg_encoding_to_char(encoding)) FROM pg_database d WHERE datname = $1",
                    database,
                )
                if raw is None:
                    raise Failed(f"the server has no database {database!r}", False)
                await conn.execute(f"CREATE DATABASE {quote_ident(copy)} {_like(json.loads(raw))}")
            except pg_errors() as exc:
                raise Failed(f"creating {copy}: {message(exc)}", False) from None

    async def _count(self, admin: str, database: str, manifest: Manifest) -> list[TableCount]:
        async with session(with_database(admin, database), f"connecting to {database}") as conn:
            return await count_against(conn, manifest, self.config.tolerance)

    async def _swap(self, admin: str, copy: str, previous: str, report: RestoreReport) -> None:
        """The restored copy takes the database's name, the database it replaces is kept as
        `previous`: in one transaction, so a crash leaves one or the other, never neither.
        The database's sessions are ended in it; a session opening meanwhile waits on the
        rename's lock and is then refused (its database was renamed), and reconnects."""
        live, copy_, previous_ = (
            quote_ident(self.config.database),
            quote_ident(copy),
            quote_ident(previous),
        )
        async with session(admin, "connecting to swap the databases") as conn:
            for attempt in range(1, SWAP_ATTEMPTS + 1):
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()",
                            self.config.database,
                        )
                        # Waits up to 5 s for the ended sessions to go.
                        await conn.execute(f"ALTER DATABASE {live} RENAME TO {previous_}")
                        await conn.execute(f"ALTER DATABASE {copy_} RENAME TO {live}")
                except pg_errors() as exc:
                    # A session that opened before the rename took its lock: once more.
                    if attempt == SWAP_ATTEMPTS or "being accessed" not in str(exc):
                        why = f"swapping in the restored database: {message(exc)}"
                        raise Failed(why, True) from None
                else:
                    report.swapped, report.previous = True, previous
                    return


def _like(row: dict[str, Any]) -> str:
    """CREATE DATABASE options that make a database like the one `row` of pg_database is."""
    options = [
        "TEMPLATE template0",
        f"OWNER {quote_ident(row['owner'])}",
        f"ENCODING {_literal(row['encoding_name'])}",
        f"LC_COLLATE {_literal(row['datcollate'])}",
        f"LC_CTYPE {_literal(row['datctype'])}",
    ]
    if row.get("datlocprovider") == "i":  # ICU (PostgreSQL 15+): its locale's column varies
        icu = row.get("daticulocale") or row.get("datlocale")
        options += ["LOCALE_PROVIDER icu", f"ICU_LOCALE {_literal(str(icu))}"]
    return " ".join(options)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _detail(report: RestoreReport) -> str:
    if not report.ok:
        more = len(report.failures) - 1
        tail = f" (and {more} more)" if more > 0 else ""
        first = report.failures[0] if report.failures else "not swapped"
        kept = f"; the replaced database is kept as {report.previous}" if report.swapped else ""
        return f"restore failed: {first}{tail}{kept}"
    counts = ", ".join(f"{c.table} {c.restored}" for c in report.row_counts)
    taken = utc(report.backup_taken_at) if report.backup_taken_at is not None else "?"
    left = f"; dropped {', '.join(report.leftovers)} (an interrupted restore's copy)"
    return (
        f"restored {report.key} ({format_bytes(report.backup_bytes or 0)}, data of {taken}) "
        f"into {report.database}; row counts match the manifest ({counts or 'none listed'}); "
        f"the replaced database is kept as {report.previous}" + (left if report.leftovers else "")
    )
