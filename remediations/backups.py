"""What `pg_backup`, `s3_prune` and `restore_drill` share: where the backups are, how a backup
is named, its manifest, which objects under the prefix are backups, and keeping credentials
out of what they report.

A backup is an object named `backup-YYYYmmdd-HHMMSS.sql.gz` (plain SQL, gzip) or
`backup-YYYYmmdd-HHMMSS.dump` (pg_dump's custom format) under the prefix, and its manifest
the object `<key>.manifest.json` beside it. The manifest is written only once the backup is
complete, so a backup with a manifest is one that finished; it holds the sha256 and size of
the backup's bytes and the row counts of the tables named, counted in the dump's snapshot.
(Object metadata cannot hold these: it is fixed when a multipart upload starts, before the
checksum is known, and adding it later means copying the whole object.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.clients.s3 import MANIFEST_SUFFIX, Listing, S3Location, StoredObject
from daemon.core.redaction import redact_credentials
from daemon.core.units import PositiveDuration
from remediations.base import RemediationConfig

Format = Literal["plain", "custom"]
SUFFIXES: dict[str, str] = {"plain": ".sql.gz", "custom": ".dump"}
MANIFEST_VERSION = 1
MAX_MANIFEST = 1 << 20  # bytes: a manifest is a few hundred
BACKUP_NAME = re.compile(r"backup-\d{8}-\d{6}(\.sql\.gz|\.dump)")


class Failed(Exception):
    """A step of a run failed: `detail` says which and why, `recoverable` whether a later
    run may succeed."""

    def __init__(self, detail: str, recoverable: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.recoverable = recoverable


class BackupStoreConfig(RemediationConfig, S3Location):
    """Fields of every remediation that works on the backups under a prefix."""

    request_timeout: PositiveDuration = Field(
        120.0,
        description="Bounds connecting to the store and each request to it (one part's upload "
        "included).",
    )
    max_keys: int = Field(
        10_000,
        ge=1,
        description="Listing stops after this many keys; a run that needs the whole listing "
        "then refuses.",
    )


def backup_key(prefix: str, when: float, fmt: str) -> str:
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}backup-{stamp}{SUFFIXES[fmt]}"


def is_backup_name(key: str, prefix: str) -> bool:
    """Named like a backup, here or in a folder under the prefix."""
    return BACKUP_NAME.fullmatch(key.removeprefix(prefix).rpartition("/")[2]) is not None


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


def format_of(key: str) -> str | None:
    """The format a backup's name says, None for an object that is no backup of ours."""
    for fmt, suffix in SUFFIXES.items():
        if key.endswith(suffix):
            return fmt
    return None


class Manifest(BaseModel):
    """What pg_backup knows of a backup once it is complete. Unknown keys are ignored, so a
    newer runbookd's manifest still reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = MANIFEST_VERSION
    key: str
    format: Format
    size: int = Field(ge=0)  # bytes
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # When the dump's snapshot was taken (epoch seconds): the point the data is from, what
    # the RPO is measured against.
    started_at: float
    finished_at: float
    database: str
    row_counts: dict[str, int] = Field(default_factory=dict)
    # Whether row_counts were counted in the dump's own snapshot (exact), or not.
    counted_in_snapshot: bool
    pg_dump_version: str | None = None
    server_version: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """ValueError naming the first problem, for a result's detail."""
        if len(raw) > MAX_MANIFEST:
            raise ValueError(f"the manifest is larger than {MAX_MANIFEST} bytes")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "manifest"
            raise ValueError(f"the manifest is not valid: {where}: {error['msg']}") from None


@dataclass(frozen=True, slots=True)
class Backups:
    """The backups under a prefix, newest first, and which have a manifest."""

    backups: list[StoredObject]
    manifests: dict[str, StoredObject]  # backup key -> its manifest object
    truncated: bool

    @classmethod
    def of(cls, listing: Listing) -> Backups:
        manifests = {
            obj.key.removesuffix(MANIFEST_SUFFIX): obj
            for obj in listing.objects
            if obj.key.endswith(MANIFEST_SUFFIX)
        }
        backups = [obj for obj in listing.objects if not obj.key.endswith(MANIFEST_SUFFIX)]
        backups.sort(key=lambda obj: obj.order, reverse=True)
        return cls(backups, manifests, listing.truncated)

    def newest_complete(self) -> tuple[StoredObject | None, list[str]]:
        """The newest backup with a manifest, and the newer ones without (unfinished or
        not ours), which a drill skips and says so."""
        skipped: list[str] = []
        for obj in self.backups:
            if obj.key in self.manifests and format_of(obj.key) is not None:
                return obj, skipped
            skipped.append(obj.key)
        return None, skipped


# --- reporting ------------------------------------------------------------------------------

_ERROR_LINE = re.compile(r"\b(?:ERROR|FATAL|PANIC|error):")


def error_line(stderr: str) -> str:
    """What a PostgreSQL tool said went wrong: its first error line (psql and pg_dump add
    context after it: the statement, a caret, "detail: Query was"), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if _ERROR_LINE.search(line)), lines[-1] if lines else "")


def utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Redactor:
    """Every credential a run knows of (the DSN's password, the S3 keys) out of a text or
    a result's data, whatever a tool, a server or a library put in its messages."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [secret for secret in secrets if secret]

    def text(self, text: str) -> str:
        return redact_credentials(text, self.secrets)

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value
