"""A restore drill's report: what was restored, how long it took against the RTO, how old the
data was against the RPO, what was verified and what failed. Kept as JSON (`to_dict`, the
result's data) and rendered as Markdown for people (`render_markdown`, which takes the JSON
form, so a stored report renders the same).

A figure the drill could not measure is None (null), never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.core.units import format_bytes, format_duration
from remediations.backups import utc


@dataclass(slots=True)
class TableCount:
    table: str
    expected: int  # in the manifest: counted in the dump's snapshot
    restored: int | None = None
    ok: bool = False
    error: str | None = None


@dataclass(slots=True)
class CheckOutcome:
    sql: str
    ok: bool
    result: str  # "true", "false", "NULL", "2 rows", or the error


@dataclass(slots=True)
class DrillReport:
    started_at: float
    rto_seconds: float
    rpo_seconds: float
    bucket: str
    finished_at: float | None = None
    key: str | None = None
    format: str | None = None
    # Newer backups without a manifest (unfinished, or not ours): passed over.
    skipped_newer: list[str] = field(default_factory=list)
    backup_bytes: int | None = None  # the manifest's size
    backup_taken_at: float | None = None
    backup_age_seconds: float | None = None
    within_rpo: bool | None = None
    sha256_expected: str | None = None
    sha256: str | None = None  # of the bytes downloaded
    downloaded_bytes: int | None = None
    restored_bytes: int | None = None  # fed to psql / pg_restore (uncompressed for .sql.gz)
    scratch_database: str | None = None
    dropped: bool | None = None
    restore_seconds: float | None = None  # download and restore, streamed together
    verify_seconds: float | None = None
    time_to_recover_seconds: float | None = None
    within_rto: bool | None = None
    row_counts: list[TableCount] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def _seconds(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:.2f}s" if value < 60 else format_duration(round(value))


def _verdict(flag: bool | None) -> str:
    return {True: "within", False: "**over**", None: "unknown against"}[flag]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """The report (`DrillReport.to_dict()`) as Markdown."""
    lines = [f"# Restore drill: {'passed' if report['ok'] else 'FAILED'}", ""]
    key = report.get("key")
    size = report.get("backup_bytes")
    backup = "none found" if key is None else f"`s3://{report['bucket']}/{key}`"
    if size is not None:
        backup += f" ({format_bytes(size)})"
    taken = report.get("backup_taken_at")
    rows = [
        ("Started", utc(report["started_at"])),
        ("Backup", backup),
        ("Data from", "unknown" if taken is None else utc(taken)),
        (
            "Backup age",
            f"{_seconds(report.get('backup_age_seconds'))} "
            f"({_verdict(report.get('within_rpo'))} the RPO of {_seconds(report['rpo_seconds'])})",
        ),
        ("Checksum", _checksum(report)),
        ("Scratch database", _scratch(report)),
        ("Download and restore", _seconds(report.get("restore_seconds"))),
        ("Verification", _seconds(report.get("verify_seconds"))),
        (
            "Time to recover",
            f"{_seconds(report.get('time_to_recover_seconds'))} "
            f"({_verdict(report.get('within_rto'))} the RTO of {_seconds(report['rto_seconds'])})",
        ),
    ]
    lines += ["| | |", "|---|---|", *(f"| {name} | {_cell(value)} |" for name, value in rows)]
    if report.get("skipped_newer"):
        skipped = ", ".join(f"`{key}`" for key in report["skipped_newer"])
        lines += ["", f"Newer objects without a manifest, passed over: {skipped}"]
    if report.get("row_counts"):
        lines += [
            "",
            "## Row counts",
            "",
            "| table | in the backup | restored | |",
            "|---|--:|--:|---|",
        ]
        for count in report["row_counts"]:
            restored = count.get("restored")
            mark = "ok" if count["ok"] else f"**{_cell(count.get('error') or 'differs')}**"
            shown = "unknown" if restored is None else restored
            lines.append(f"| {_cell(count['table'])} | {count['expected']} | {shown} | {mark} |")
    if report.get("checks"):
        lines += ["", "## Checks", "", "| SQL | result |", "|---|---|"]
        for check in report["checks"]:
            result = check["result"] if check["ok"] else f"**{check['result']}**"
            lines.append(f"| `{_cell(check['sql'])}` | {_cell(result)} |")
    if report.get("failures"):
        lines += ["", "## What failed", "", *(f"- {failure}" for failure in report["failures"])]
    return "\n".join(lines) + "\n"


def _checksum(report: dict[str, Any]) -> str:
    expected, actual = report.get("sha256_expected"), report.get("sha256")
    if expected is None or actual is None:
        return "not verified"
    if expected == actual:
        return f"sha256 {actual[:16]}… matches the manifest"
    return f"**sha256 {actual[:16]}… differs from the manifest's {expected[:16]}…**"


def _scratch(report: dict[str, Any]) -> str:
    name = report.get("scratch_database")
    if name is None:
        return "not created"
    dropped = report.get("dropped")
    return f"`{name}` ({'dropped' if dropped else '**not dropped**'})"
