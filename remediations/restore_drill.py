"""`restore_drill`: the runbook's Test Recovery Procedure, run by the daemon.

It takes the newest complete backup under the prefix (one with a manifest: see
remediations.backups), creates a scratch database `test_recovery_db_<timestamp>`, streams the
backup into it (psql for .sql.gz, pg_restore for .dump; remediations.restore_stream) while
checking its sha256 against the manifest, then verifies it: the row counts of the manifest's
tables within `tolerance`, and each of `checks` (SQL returning one boolean) true. It measures
the time to recover against `rto` and the age of the backup's data against `rpo`. The
scratch database is dropped whatever happens: failure, timeout or cancellation.

The result's data is the report (remediations.drill_report: JSON; `render_markdown` for
people). `dsn` names a server where the role may create databases, and the database it
connects to for that (e.g. postgres); the roles the backup's objects belong to must exist
there, as on the server backed up.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from daemon.clients.postgres import checked_postgres_dsn, dsn_passwords, quote_ident, with_database
from daemon.clients.s3 import s3_client
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import PositiveDuration, Ratio, format_bytes, format_duration
from remediations.backups import BackupStoreConfig, Failed, Manifest, Redactor
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.drill_report import CheckOutcome, DrillReport
from remediations.pg_snapshot import message, pg_errors, session
from remediations.restoring import (
    count_against,
    count_failures,
    drop_database,
    find_manifest,
    restore_into,
)

SCRATCH_PREFIX = "test_recovery_db_"

Sql = Annotated[str, Field(min_length=1, max_length=10_000)]


class RestoreDrillConfig(BackupStoreConfig):
    """The runbook's Test Recovery Procedure: the newest backup under `prefix` is downloaded
    (streamed), checked against its manifest's sha256, restored into a scratch database
    `test_recovery_db_YYYYmmdd_HHMMSS` (psql for `.sql.gz`, pg_restore for `.dump`) and
    verified (row counts against the manifest, and `checks`); the time to recover is compared
    with `rto` and the backup's age with `rpo`. The scratch database is always dropped, also on
    failure, timeout or cancellation. The result carries a JSON report (and its Markdown)."""

    example: ClassVar[str] = """
        remediations:
          drill:
            type: restore_drill
            dsn: postgresql://drill@db.internal:5432/postgres
            bucket: acme-backups
            prefix: postgres/app/
            tolerance: 1%
            checks: ['SELECT count(*) > 0 FROM "User"']
        jobs:
          quarterly_drill:
            run: drill
            schedule: "0 4 1 1,4,7,10 *"
        """

    type: Literal["restore_drill"]
    dsn: SecretStr = Field(
        description="`postgresql://drill@db:5432/postgres`: a role that may CREATE DATABASE, "
        "on a server that has the roles owning the dumped objects; a secret."
    )
    tolerance: Ratio = Field(
        0.0,
        description="How far a restored table's row count may be from the manifest's, as a "
        "fraction of it.",
    )
    checks: list[Sql] = Field(
        default_factory=list,
        description="SQL run in the restored database; each must return one row of one "
        "boolean, true to pass.",
    )
    check_timeout: PositiveDuration = Field(
        300.0, description="Bounds each verification statement in the scratch database."
    )
    rto: PositiveDuration = Field(
        4 * 3600.0, description="Recovery time objective: a longer time to recover fails."
    )
    rpo: PositiveDuration = Field(
        24 * 3600.0, description="Recovery point objective: an older backup fails."
    )
    timeout: PositiveDuration = Field(
        6 * 3600.0,
        description="Longer than the RTO: a drill over it still finishes and reports how long "
        "it took.",
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)


def scratch_name(when: float) -> str:
    return SCRATCH_PREFIX + datetime.fromtimestamp(when, UTC).strftime("%Y%m%d_%H%M%S")


@REMEDIATIONS.register
class RestoreDrillRemediation(Hooks):
    type: ClassVar[str] = "restore_drill"
    Config: ClassVar[builtins.type[RemediationConfig]] = RestoreDrillConfig
    # Each run restores into a database of its own and drops it.
    idempotent: bool = True
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: RestoreDrillConfig) -> None:
        self.name = name
        self.config = config
        dsn = config.dsn.get_secret_value()
        self._redact = Redactor([*dsn_passwords(dsn), *config.s3_secrets()])

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        config = self.config
        report = DrillReport(ctx.clock.now(), config.rto, config.rpo, config.bucket)
        recoverable = False
        began = time.perf_counter()
        try:
            async with ctx.clock.timeout(config.timeout):
                await self._drill(ctx, report, began)
        except Failed as failed:
            report.fail(failed.detail)
            recoverable = failed.recoverable
        except TimeoutError:
            report.fail(f"timed out after {format_duration(config.timeout)}")
            recoverable = True
        report.finished_at = ctx.clock.now()
        data = self._redact.data(report.to_dict())
        return RemediationResult(report.ok, self._redact.text(_detail(report)), recoverable, data)

    async def _drill(self, ctx: RemediationContext, report: DrillReport, began: float) -> None:
        config = self.config
        async with s3_client(config, config.request_timeout) as client:
            manifest = await self._newest(client, report)
            report.backup_taken_at = manifest.started_at
            report.backup_age_seconds = max(0.0, ctx.clock.now() - manifest.started_at)
            report.within_rpo = report.backup_age_seconds <= config.rpo
            if not report.within_rpo:
                age = format_duration(round(report.backup_age_seconds))
                rpo = format_duration(config.rpo)
                report.fail(f"the newest backup's data is {age} old: over the RPO of {rpo}")
            name = scratch_name(ctx.clock.now())
            async with self._scratch(name, report):
                if await self._restore(client, manifest, name, report):
                    await self._verify(name, manifest, report)
                    # Recovered once verified: dropping the scratch copy is not part of it.
                    report.time_to_recover_seconds = round(time.perf_counter() - began, 3)
        if report.time_to_recover_seconds is not None:
            report.within_rto = report.time_to_recover_seconds <= config.rto
            if not report.within_rto:
                took = format_duration(round(report.time_to_recover_seconds, 1))
                report.fail(f"recovery took {took}: over the RTO of {format_duration(config.rto)}")

    async def _newest(self, client: Any, report: DrillReport) -> Manifest:
        """The newest complete backup's manifest (remediations.restoring.find_manifest)."""
        manifest = await find_manifest(client, self.config, skipped=report.skipped_newer)
        report.key = manifest.key
        report.format, report.backup_bytes = manifest.format, manifest.size
        report.sha256_expected = manifest.sha256
        return manifest

    @asynccontextmanager
    async def _scratch(self, name: str, report: DrillReport) -> AsyncIterator[None]:
        """The scratch database, dropped on the way out whatever happens."""
        dsn = self.config.dsn.get_secret_value()
        async with session(dsn, "connecting to create the scratch database") as conn:
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
            except pg_errors() as exc:
                reason = f"creating the scratch database {name}: {message(exc)}"
                raise Failed(reason, False) from None
        report.scratch_database, report.dropped = name, False
        try:
            yield
        finally:
            report.dropped = await self._drop(name, report)

    async def _drop(self, name: str, report: DrillReport) -> bool:
        reason = await drop_database(self.config.dsn.get_secret_value(), name)
        if reason is None:
            return True
        report.fail(f"the scratch database {name} was not dropped ({reason}): drop it by hand")
        return False

    async def _restore(
        self, client: Any, manifest: Manifest, name: str, report: DrillReport
    ) -> bool:
        """Stream the backup into the scratch database; False if it is not a faithful copy."""
        started = time.perf_counter()
        dsn = self.config.dsn.get_secret_value()
        done, failures = await restore_into(client, self.config, manifest, dsn, name)
        report.restore_seconds = round(time.perf_counter() - started, 3)
        report.sha256, report.downloaded_bytes = done.sha256, done.downloaded
        report.restored_bytes = done.restored
        for failure in failures:
            report.fail(failure)
        return not failures

    async def _verify(self, name: str, manifest: Manifest, report: DrillReport) -> None:
        config = self.config
        started = time.perf_counter()
        dsn = with_database(config.dsn.get_secret_value(), name)
        async with session(dsn, "connecting to the restored database") as conn:
            limit = f"{max(1, round(config.check_timeout * 1000))}ms"
            try:
                await conn.execute("SELECT set_config('statement_timeout', $1, false)", limit)
            except pg_errors() as exc:
                raise Failed(f"preparing the verification: {message(exc)}", True) from None
            report.row_counts += await count_against(conn, manifest, config.tolerance)
            for sql in config.checks:
                report.checks.append(await _run_check(conn, sql))
        report.verify_seconds = round(time.perf_counter() - started, 3)
        for failure in count_failures(report.row_counts):
            report.fail(failure)
        report.failures += [f"check {c.sql!r}: {c.result}" for c in report.checks if not c.ok]


async def _run_check(conn: Any, sql: str) -> CheckOutcome:
    """One row of one boolean, read only; anything else fails the check, saying what came."""
    try:
        async with conn.transaction(readonly=True):
            rows = await conn.fetch(sql)
    except pg_errors() as exc:
        return CheckOutcome(sql, False, message(exc))
    if len(rows) != 1 or len(rows[0]) != 1:
        shape = f"{len(rows)} rows" if len(rows) != 1 else f"{len(rows[0])} columns"
        return CheckOutcome(sql, False, f"{shape}, not one boolean")
    value = rows[0][0]
    if value is True:
        return CheckOutcome(sql, True, "true")
    if value is None or value is False:
        return CheckOutcome(sql, False, "NULL" if value is None else "false")
    return CheckOutcome(sql, False, f"{str(value)[:40]!r}, not a boolean")


def _detail(report: DrillReport) -> str:
    if not report.ok:
        more = len(report.failures) - 1
        tail = f" (and {more} more)" if more else ""
        return f"restore drill failed: {report.failures[0]}{tail}"
    size = format_bytes(report.backup_bytes or 0)
    ttr = format_duration(round(report.time_to_recover_seconds or 0.0, 1))
    age = format_duration(round(report.backup_age_seconds or 0.0))
    return (
        f"restored {report.key} ({size}, data {age} old) and verified {len(report.row_counts)} "
        f"table counts and {len(report.checks)} checks; time to recover {ttr} "
        f"(RTO {format_duration(report.rto_seconds)}, RPO {format_duration(report.rpo_seconds)})"
    )
