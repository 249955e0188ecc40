"""The backup remediations without a server: config (problems name file, line and field),
registration and flags, retention planning, gzip streaming, manifests, the drill report's
Markdown, and the DSN handed to the PostgreSQL tools."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.clients.postgres import libpq_target, with_database
from daemon.clients.s3 import Listing, StoredObject
from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError
from remediations.backups import Backups, Manifest, Redactor, backup_key, error_line
from remediations.base import REMEDIATIONS
from remediations.drill_report import DrillReport, TableCount, render_markdown
from remediations.pg_backup import PgBackupConfig, PgBackupRemediation, left_behind
from remediations.restore_drill import RestoreDrillRemediation, scratch_name
from remediations.restore_stream import INFLATE_STEP, GunzipStream
from remediations.s3_prune import S3PruneConfig, S3PruneRemediation, is_backup_name, plan_retention

DAY = 86400.0
NOW = 1_800_000_000.0
PASSWORD = "pw-secret-in-dsn"


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text("remediations:\n" + body, "c.yaml")
    return [str(problem) for problem in info.value.problems]


# --- config ------------------------------------------------------------------------------------


def test_bad_fields_are_named_with_file_and_line() -> None:
    found = problems(
        f"""  backup:
    type: pg_backup
    dsn: postgresql://backup:{PASSWORD}@db/app
    bucket: backups
    part_size: 1MiB
    versioning: maybe
    count_tables: ['User', 'a;b']
    compression: 10
  drill:
    type: restore_drill
    dsn: mysql://root:{PASSWORD}@db/app
    bucket: backups
    tolerance: 150%
    checks: ['']
    rto: 4
  prune:
    type: s3_prune
    bucket: back/ups
    keep_min: 0
    keep_days: 0
"""
    )
    assert found == [
        "c.yaml:6 remediations.backup.part_size: must lie within 5MiB and 5GiB (S3's part sizes)",
        "c.yaml:7 remediations.backup.versioning: input should be 'require' or 'warn'",
        "c.yaml:8 remediations.backup.count_tables.1: not a table name: use table or "
        "schema.table, each a letter or _ followed by letters, digits, _ or $",
        "c.yaml:9 remediations.backup.compression: input should be less than or equal to 9",
        "c.yaml:12 remediations.drill.dsn: not a PostgreSQL URL (use e.g. "
        "postgresql://user@db:5432/app)",
        "c.yaml:14 remediations.drill.tolerance: not a ratio: '150%' (use e.g. 0.05 or 5%)",
        "c.yaml:15 remediations.drill.checks.0: string should have at least 1 character",
        "c.yaml:16 remediations.drill.rto: not a duration: 4 (use e.g. 500ms, 30s, 5m, 1h)",
        "c.yaml:19 remediations.prune.bucket: string should match pattern '^[^/\\s]+$'",
        "c.yaml:20 remediations.prune.keep_min: input should be greater than or equal to 1",
        "c.yaml:21 remediations.prune.keep_days: input should be greater than or equal to 1",
    ]
    assert not any(PASSWORD in problem for problem in found)


def test_rules_across_fields_name_the_remediation() -> None:
    assert problems(
        """  backup:
    type: pg_backup
    dsn: postgresql://backup@db/app
    bucket: backups
    kms_key_id: key-1
  prune:
    type: s3_prune
    bucket: backups
    access_key_id: AKIDONLY
"""
    ) == [
        "c.yaml:2 remediations.backup: kms_key_id needs encryption: aws:kms",
        "c.yaml:7 remediations.prune: give both access_key_id and secret_access_key, or neither",
    ]


def test_defaults_and_units() -> None:
    config = PgBackupConfig.model_validate(
        {"type": "pg_backup", "dsn": "postgresql://b@db/app", "bucket": "b", "part_size": "16MiB"}
    )
    assert config.part_size == 16 << 20
    assert (config.format, config.compression, config.parts_in_flight) == ("plain", 6, 2)
    assert (config.encryption, config.versioning, config.timeout) == ("AES256", "require", 7200)
    assert config.encryption_args() == {"ServerSideEncryption": "AES256"}
    kms = config.model_copy(update={"encryption": "aws:kms", "kms_key_id": "k"})
    assert kms.encryption_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k"}
    prune = S3PruneConfig.model_validate({"type": "s3_prune", "bucket": "b"})
    assert (prune.keep_days, prune.keep_min, prune.dry_run) == (30, 3, False)


@pytest.mark.parametrize(
    ("kind", "cls", "destructive"),
    [
        ("pg_backup", PgBackupRemediation, False),
        ("restore_drill", RestoreDrillRemediation, False),
        ("s3_prune", S3PruneRemediation, True),
    ],
)
def test_registered(kind: str, cls: type, destructive: bool) -> None:
    assert REMEDIATIONS.get(kind) is cls
    config: dict[str, Any] = {"type": kind, "bucket": "b"}
    if kind != "s3_prune":
        config["dsn"] = "postgresql://u@db/app"
    remediation = cls("x", cls.Config.model_validate(config))
    assert (remediation.destructive, remediation.idempotent) == (destructive, True)
    if kind == "s3_prune":
        dry = cls("x", cls.Config.model_validate(config | {"dry_run": True}))
        assert dry.destructive is False  # a dry run needs no approval


# --- retention ---------------------------------------------------------------------------------


def aged(*days: float) -> list[StoredObject]:
    return [StoredObject(f"backup-{i:02d}.sql.gz", NOW - d * DAY, 10) for i, d in enumerate(days)]


def test_retention_keeps_young_and_the_newest_keep_min() -> None:
    backups = aged(40, 35, 31, 29, 1)
    plan = plan_retention(backups, NOW, keep_days=30, keep_min=3)
    assert [b.key for b in plan.delete] == ["backup-01.sql.gz", "backup-00.sql.gz"]
    assert [b.key for b in plan.keep] == [
        "backup-04.sql.gz",
        "backup-03.sql.gz",
        "backup-02.sql.gz",
    ]
    # Young backups are kept beyond keep_min.
    assert len(plan_retention(aged(1, 2, 3, 4, 5), NOW, 30, 1).keep) == 5
    # Backups that stopped coming: the newest keep_min stay however old.
    assert [b.key for b in plan_retention(aged(400, 300, 200), NOW, 30, 2).keep] == [
        "backup-02.sql.gz",
        "backup-01.sql.gz",
    ]
    # Never the only one, even if keep_min were 0.
    assert len(plan_retention(aged(400), NOW, 1, 0).keep) == 1
    assert plan_retention([], NOW, 30, 3).delete == []


def test_only_backup_names_are_pruned() -> None:
    assert is_backup_name("daily/backup-20240101-020000.sql.gz", "daily/")
    assert is_backup_name("backup-20240101-020000.dump", "")
    for key in ("daily/backup-20240101-020000.sql.gz.tmp", "daily/notes.txt", "daily/backup-1.sql"):
        assert not is_backup_name(key, "daily/")


def test_only_backup_uploads_begun_before_the_cutoff_are_left_behind() -> None:
    def upload(key: str, begun: float | None, upload_id: str = "u") -> dict[str, Any]:
        found: dict[str, Any] = {"Key": key, "UploadId": upload_id}
        if begun is not None:
            found["Initiated"] = datetime.fromtimestamp(begun, UTC)
        return found

    old, cutoff = NOW - 3 * 3600, NOW - 7200
    uploads = [
        upload("daily/backup-20240101-020000.sql.gz", old, "a"),
        upload("daily/backup-20240101-020001.dump", old, "b"),
        upload("daily/backup-20240102-020000.sql.gz", cutoff + 1, "young"),  # may be running
        upload("daily/backup-20240102-020000.sql.gz", cutoff, "at-the-cutoff"),
        upload("daily/backup-20240103-020000.sql.gz", None, "undated"),  # age unknown: kept
        upload("daily/other-tool.tar", old),  # not ours
        upload("daily/nested/backup-20240101-020000.sql.gz", old),  # not where pg_backup writes
        upload("weekly/backup-20240101-020000.sql.gz", old),  # another prefix
        {"Key": "daily/backup-20240101-030000.sql.gz"},  # no id: nothing to abort
    ]
    assert left_behind(uploads, "daily/", cutoff) == [
        ("daily/backup-20240101-020000.sql.gz", "a"),
        ("daily/backup-20240101-020001.dump", "b"),
    ]
    assert left_behind([upload("backup-20240101-020000.sql.gz", old)], "", cutoff) == [
        ("backup-20240101-020000.sql.gz", "u")
    ]


def test_backups_pair_with_their_manifests() -> None:
    listing = Listing(
        [
            StoredObject("p/backup-20240101-020000.sql.gz", NOW - 10, 5),
            StoredObject("p/backup-20240101-020000.sql.gz.manifest.json", NOW - 9, 1),
            StoredObject("p/backup-20240102-020000.dump", NOW, 5),  # newest, unfinished
        ],
        truncated=False,
    )
    newest, skipped = Backups.of(listing).newest_complete()
    assert newest is not None
    assert newest.key == "p/backup-20240101-020000.sql.gz"
    assert skipped == ["p/backup-20240102-020000.dump"]
    assert backup_key("p/", 1_704_074_400, "custom") == "p/backup-20240101-020000.dump"
    assert scratch_name(1_704_074_400) == "test_recovery_db_20240101_020000"


# --- gzip streaming ----------------------------------------------------------------------------


def gunzip(data: bytes, chunk: int) -> tuple[bytes, GunzipStream, int]:
    stream = GunzipStream()
    out, largest = bytearray(), 0
    for start in range(0, len(data), chunk):
        for piece in stream.feed(data[start : start + chunk]):
            largest = max(largest, len(piece))
            out += piece
    return bytes(out), stream, largest


def test_gzip_is_inflated_in_bounded_steps() -> None:
    sql = b"INSERT INTO t VALUES (1);\n" * 1_000_000  # ~26 MB, compresses ~1000x
    data = gzip.compress(sql)
    out, stream, largest = gunzip(data, len(data))  # one chunk in
    assert out == sql
    assert stream.ended
    assert largest <= INFLATE_STEP


def test_gzip_members_corruption_and_truncation() -> None:
    two = gzip.compress(b"first;\n") + gzip.compress(b"second;\n")
    out, stream, _ = gunzip(two, 3)
    assert (out, stream.ended) == (b"first;\nsecond;\n", True)

    whole = gzip.compress(b"x" * 10_000)
    out, stream, _ = gunzip(whole[:-20], 7)
    assert stream.ended is False  # truncated: the caller reports it

    with pytest.raises(zlib.error):
        gunzip(b"not gzip at all", 4)
    with pytest.raises(zlib.error):
        gunzip(whole + b"trailing garbage", 64)


# --- manifests, redaction, tool messages --------------------------------------------------------


def test_manifest_round_trip_and_bad_manifests() -> None:
    manifest = Manifest(
        key="k",
        format="plain",
        size=3,
        sha256="a" * 64,
        started_at=NOW,
        finished_at=NOW + 1,
        database="db:5432/app",
        row_counts={"User": 2},
        counted_in_snapshot=True,
    )
    assert Manifest.parse(manifest.to_bytes()) == manifest
    with pytest.raises(ValueError, match=r"^the manifest is not valid: sha256: String should"):
        Manifest.parse(manifest.to_bytes().replace(b"a" * 64, b"nope"))
    with pytest.raises(ValueError, match=r"not valid: manifest: Invalid JSON"):
        Manifest.parse(b"{")


def test_redactor_and_error_lines() -> None:
    redact = Redactor([PASSWORD, "AWS-SECRET-KEY"])
    data = {"a": [f"postgresql://u:{PASSWORD}@db/x", {"b": "key AWS-SECRET-KEY"}], "n": 1}
    assert redact.data(data) == {"a": ["postgresql://u:***@db/x", {"b": "key ***"}], "n": 1}
    stderr = 'ERROR:  syntax error at or near ";"\nLINE 1: CREATE TABLE broken (;\n   ^\n'
    assert error_line(stderr) == 'ERROR:  syntax error at or near ";"'
    dump = "pg_dump: error: query failed: ERROR:  permission denied\npg_dump: detail: Query was"
    assert error_line(dump).startswith("pg_dump: error: query failed")
    assert error_line("just this\n") == "just this"


def test_libpq_target_moves_the_password_to_the_environment() -> None:
    assert libpq_target(f"postgresql://u:{PASSWORD}@db:5432/app?sslmode=require") == (
        "postgresql://u@db:5432/app?sslmode=require",
        {"PGPASSWORD": PASSWORD},
    )
    assert libpq_target(f"postgresql://u@h1,h2/app?password={PASSWORD}") == (
        "postgresql://u@h1,h2/app",
        {"PGPASSWORD": PASSWORD},
    )
    assert libpq_target("postgresql:///app?host=/run/postgresql") == (
        "postgresql:///app?host=%2Frun%2Fpostgresql",
        {},
    )
    assert with_database("postgresql://u:p@db/app?x=1", "scratch") == (
        "postgresql://u:p@db/scratch?x=1"
    )


# --- the drill report ----------------------------------------------------------------------------


def test_a_failed_report_renders_what_is_unknown_as_unknown() -> None:
    report = DrillReport(NOW, 4 * 3600, 24 * 3600, "backups", key="d/backup-x.sql.gz")
    report.row_counts.append(TableCount("User", 10, None, False, "relation missing"))
    report.fail("restore: psql exited with status 3: ERROR: a | b")
    markdown = render_markdown(report.to_dict())
    assert markdown.startswith("# Restore drill: FAILED\n")
    assert "| Time to recover | unknown (unknown against the RTO of 4h) |" in markdown
    assert "| Scratch database | not created |" in markdown
    assert "| User | 10 | unknown | **relation missing** |" in markdown
    assert "- restore: psql exited with status 3: ERROR: a | b" in markdown
    assert report.to_dict()["time_to_recover_seconds"] is None  # unknown, never 0
