"""`s3_prune`: backup retention. Deletes the backups under the prefix older than `keep_days`,
but always keeps the newest `keep_min` (at least one), so backups that stopped coming are
never pruned away to nothing. A backup's manifest goes with it.

A type of its own, not part of `pg_backup`: it runs on its own schedule with its own
`dry_run`, it applies to backups made by other tools named the same way, and it needs the
right to delete, which the credentials that write backups had better not have (a leaked
backup key then cannot wipe the backups).

Only objects named like backups (`backup-YYYYmmdd-HHMMSS.sql.gz` or `.dump`) and their
manifests are considered; anything else under the prefix is left alone. Ages come from each
object's LastModified. In a versioned bucket a delete leaves the data as a noncurrent version:
the bucket's lifecycle rule (NoncurrentVersionExpiration) decides when that goes.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from daemon.clients.s3 import (
    StoredObject,
    describe_s3_failure,
    is_lasting,
    list_prefix,
    s3_client,
    s3_errors,
)
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import DAY, PositiveDuration, format_duration
from remediations.backups import (
    Backups,
    BackupStoreConfig,
    Failed,
    Redactor,
    is_backup_name,
    manifest_key,
)
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext

BATCH = 1000  # keys per DeleteObjects call (S3's maximum)


class S3PruneConfig(BackupStoreConfig):
    """Retention for the backups under `prefix` (the names `pg_backup` writes): those older
    than `keep_days` are deleted with their manifests, but never the newest `keep_min`, so the
    only backup is never deleted; a truncated listing deletes nothing. Destructive unless
    `dry_run`: an unattended schedule needs `require_approval: false`."""

    example: ClassVar[str] = """
        remediations:
          prune_backups:
            type: s3_prune
            bucket: acme-backups
            prefix: postgres/app/
            keep_days: 30
            require_approval: false
        jobs:
          daily_prune:
            run: prune_backups
            schedule: "30 3 * * *"
        """

    type: Literal["s3_prune"]
    keep_days: int = Field(
        30, ge=1, le=3660, description="Backups older than this many days are deleted."
    )
    keep_min: int = Field(
        3, ge=1, description="Never fewer backups than this, however old: at least one."
    )
    dry_run: bool = Field(False, description="List what would be deleted, delete nothing.")
    timeout: PositiveDuration = Field(600.0, description="How long a run may take.")


@dataclass(frozen=True, slots=True)
class Retention:
    keep: list[StoredObject]  # newest first
    delete: list[StoredObject]


def plan_retention(
    backups: Sequence[StoredObject], now: float, keep_days: int, keep_min: int
) -> Retention:
    """Keep the newest `keep_min` (at least one) and every backup younger than `keep_days`;
    the rest go. Newest means by LastModified, then by name."""
    cutoff = now - keep_days * DAY
    newest_first = sorted(backups, key=lambda obj: obj.order, reverse=True)
    keep: list[StoredObject] = []
    delete: list[StoredObject] = []
    for rank, obj in enumerate(newest_first):
        (keep if rank < max(1, keep_min) or obj.modified >= cutoff else delete).append(obj)
    return Retention(keep, delete)


@REMEDIATIONS.register
class S3PruneRemediation(Hooks):
    type: ClassVar[str] = "s3_prune"
    Config: ClassVar[builtins.type[RemediationConfig]] = S3PruneConfig
    idempotent: bool = True
    # Deletes backups: an instance follows its config (a dry run deletes nothing).
    destructive: bool = True
    notifier: bool = False

    def __init__(self, name: str, config: S3PruneConfig) -> None:
        self.name = name
        self.config = config
        self.destructive = not config.dry_run
        self._redact = Redactor(config.s3_secrets())

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        config = self.config
        data: dict[str, Any] = {
            "dry_run": config.dry_run,
            "keep_days": config.keep_days,
            "keep_min": config.keep_min,
        }
        try:
            async with ctx.clock.timeout(config.timeout):
                detail = await self._prune(ctx.clock.now(), data)
            ok, recoverable = True, False
        except Failed as failed:
            detail, ok, recoverable = f"prune failed: {failed.detail}", False, failed.recoverable
        except TimeoutError:
            detail = f"prune failed: timed out after {format_duration(config.timeout)}"
            ok, recoverable = False, True
        return RemediationResult(
            ok, self._redact.text(detail), recoverable, self._redact.data(data)
        )

    async def _prune(self, now: float, data: dict[str, Any]) -> str:
        config = self.config
        try:
            async with s3_client(config, config.request_timeout) as client:
                listing = await list_prefix(client, config.bucket, config.prefix, config.max_keys)
                if listing.truncated:
                    reason = f"listing stopped at {config.max_keys} keys; nothing deleted"
                    raise Failed(f"{reason} (narrow the prefix or raise max_keys)", False)
                found = Backups.of(listing)
                backups = [b for b in found.backups if is_backup_name(b.key, config.prefix)]
                plan = plan_retention(backups, now, config.keep_days, config.keep_min)
                doomed = [b.key for b in plan.delete]
                doomed += [manifest_key(key) for key in doomed if key in found.manifests]
                data |= {
                    "kept": [b.key for b in plan.keep],
                    "ignored": len(found.backups) - len(backups),
                    "would_delete" if config.dry_run else "deleted": [
                        {"key": b.key, "age_days": round((now - b.modified) / DAY, 2)}
                        for b in plan.delete
                    ],
                }
                if not config.dry_run and doomed:
                    await self._delete(client, doomed, data)
        except s3_errors() as exc:
            reason = describe_s3_failure(exc, config.request_timeout)
            raise Failed(reason, not is_lasting(exc)) from None
        return _summary(plan, config, now)

    async def _delete(self, client: Any, keys: list[str], data: dict[str, Any]) -> None:
        errors: list[str] = []
        for start in range(0, len(keys), BATCH):
            batch = [{"Key": key} for key in keys[start : start + BATCH]]
            answer = await client.delete_objects(
                Bucket=self.config.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            errors += [f"{e.get('Key')}: {e.get('Code')}" for e in answer.get("Errors", ())]
        if errors:
            data["errors"] = errors
            raise Failed(f"{len(errors)} of {len(keys)} deletions refused: {errors[0]}", False)


def _summary(plan: Retention, config: S3PruneConfig, now: float) -> str:
    count = len(plan.delete)
    kept = f"kept {len(plan.keep)}"
    if plan.keep:
        oldest = min(plan.keep, key=lambda obj: obj.order)
        kept += f", the oldest {max(0.0, now - oldest.modified) / DAY:.1f} days old"
    if not count:
        return f"nothing older than {config.keep_days} days to delete; {kept}"
    verb = "would delete" if config.dry_run else "deleted"
    noun = "backup" if count == 1 else "backups"
    return f"{verb} {count} {noun} older than {config.keep_days} days, manifests with them; {kept}"
