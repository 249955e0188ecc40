"""What the commands that talk to a daemon print: tables and details for people.

Whatever the daemon (or whatever answers at its address) says is printed through `text`,
`when` and `shown`: a field that is missing prints "?", one of the wrong type or out of range
too, and no text can move the cursor, retitle the terminal or start a row of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from daemon.cli.client import Answer


class Unexpected(Exception):
    """The answer lacks what a command prints; the message says what."""


MISSING = object()
# C0 and C1 controls, DEL, and the line separators and direction overrides of Unicode, which
# would break or reorder a line: shown as \xNN or \uNNNN, the rest of Unicode as it is.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """`value` as one line of printable text: strings as they are, controls escaped."""
    try:
        line = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # too deep, or an int too long to write
        return "?"
    return _CONTROLS.sub(_escaped, line)


def field(doc: object, key: str) -> object:
    """`doc[key]`, or MISSING when `doc` is not an object or lacks it."""
    return doc.get(key, MISSING) if isinstance(doc, dict) else MISSING


def text(doc: object, key: str) -> str:
    """A field to print: "?" if missing, "-" if null."""
    value = field(doc, key)
    return "?" if value is MISSING else "-" if value is None else shown(value)


def entries(doc: object, key: str) -> list[object]:
    found = field(doc, key)
    if not isinstance(found, list):
        raise Unexpected(f"no list {key!r} in it")
    return found


def instant(ts: object) -> datetime | None:
    """Epoch seconds as a UTC time; None for what is not one a calendar holds."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):  # NaN, or beyond the years datetime knows
        return None


def when(ts: object) -> str:
    """An epoch time as ISO 8601 UTC; "-" for null, "?" for what is not a printable time."""
    if ts is None:
        return "-"
    moment = instant(ts)
    if moment is None:
        return "?"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last one runs free."""
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def incident_table(incidents: list[object]) -> str:
    if not incidents:
        return "no incidents"
    columns = ("id", "status", "rule", "severity")
    rows = [
        [*(text(i, c) for c in columns), when(field(i, "opened_at")), text(i, "summary")]
        for i in incidents
    ]
    return table(["ID", "STATUS", "RULE", "SEVERITY", "OPENED", "SUMMARY"], rows)


def source(incident: object) -> str:
    """What an incident came from, after its rule: " (check NAME)" for a check's rule; for a
    pushed alert's, " (alert NAME from SOURCE, N alerts)", N counting the alerts that joined its
    episode (a rule episode is one incident, whatever number of fingerprints fire in it)."""
    check = field(incident, "check")
    if isinstance(check, str) and check:
        return f" (check {shown(check)})"
    trigger = field(incident, "trigger")
    if field(trigger, "alert") is MISSING:
        return ""
    timeline = field(incident, "timeline")
    joins = (
        [e for e in timeline if field(e, "kind") == "alert"] if isinstance(timeline, list) else []
    )
    count = 1 + sum(_joined(field(e, "data")) for e in joins)
    alerts = "1 alert" if count == 1 else f"{count} alerts"
    return f" (alert {text(trigger, 'alert')} from {text(trigger, 'source')}, {alerts})"


def _joined(data: object) -> int:
    """Alerts an "alert" timeline entry adds: one with its fingerprint, several with a count."""
    count = field(data, "count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    return 1 if field(data, "fingerprint") is not MISSING else 0


def incident_detail(incident: Answer) -> str:
    found = field(incident, "trigger")
    given = found.items() if isinstance(found, dict) else []
    trigger = " ".join(f"{shown(k)}={shown(v)}" for k, v in given if v is not None)
    timeline = field(incident, "timeline")
    steps = timeline if isinstance(timeline, list) else []
    lines = [
        f"{text(incident, 'id')}  {text(incident, 'status')}  {text(incident, 'severity')}",
        f"rule:     {text(incident, 'rule')}{source(incident)}",
        f"summary:  {text(incident, 'summary')}",
        f"opened:   {when(field(incident, 'opened_at'))}",
        f"resolved: {when(field(incident, 'resolved_at'))}",
        f"trigger:  {trigger or '-'}",
        "",
        table(
            ["TIME", "STEP", "WHAT"],
            [[when(field(e, "ts")), text(e, "kind"), text(e, "message")] for e in steps],
        ),
    ]
    return "\n".join(lines)


def job_table(jobs: list[object]) -> str:
    if not jobs:
        return "no jobs"
    rows = []
    for job in jobs:
        last = field(job, "last_run")
        state = "running" if field(job, "running") is True else text(last, "outcome")
        if field(job, "enabled") is False:
            state += " (disabled)"
        rows.append(
            [
                text(job, "name"),
                f"{text(job, 'schedule')} {text(job, 'timezone')}",
                when(field(job, "next_at")),
                state if last is not None else "never ran",
                when(field(job, "last_success_at")),
                text(job, "run"),
            ]
        )
    return table(["JOB", "SCHEDULE", "NEXT", "LAST", "LAST SUCCESS", "RUNS"], rows)


def run_table(runs: list[object]) -> str:
    if not runs:
        return "no runs"
    rows = [
        [
            text(r, "id"),
            text(r, "trigger"),
            when(field(r, "scheduled_at")),
            when(field(r, "started_at")),
            when(field(r, "ended_at")),
            "running" if field(r, "outcome") is None else text(r, "outcome"),
            text(r, "detail"),
        ]
        for r in runs
    ]
    return table(["RUN", "TRIGGER", "DUE", "STARTED", "ENDED", "OUTCOME", "DETAIL"], rows)


def silence_state(silence: object, now: float) -> str:
    active, ends = field(silence, "active"), instant(field(silence, "ends_at"))
    if active is True:
        return "active"
    if active is not False or ends is None:
        return "?"
    return "ended" if ends.timestamp() <= now else "scheduled"


def silence_created(silence: Answer, now: float) -> str:
    state, ends = silence_state(silence, now), when(field(silence, "ends_at"))
    created = f"created {text(silence, 'id')}"
    if state == "scheduled":
        return f"{created}: scheduled from {when(field(silence, 'starts_at'))} until {ends}"
    return f"{created}: {state} until {ends}"


def matchers(silence: object) -> str:
    labels = field(silence, "labels")
    given = {"rule": field(silence, "rule"), "check": field(silence, "check")}
    given |= labels if isinstance(labels, dict) else {}
    return " ".join(
        f"{shown(k)}={shown(v)}" for k, v in given.items() if v is not None and v is not MISSING
    )


def silence_table(silences: list[object], now: float) -> str:
    if not silences:
        return "no silences"
    rows = [
        [
            text(s, "id"),
            silence_state(s, now),
            when(field(s, "starts_at")),
            when(field(s, "ends_at")),
            matchers(s),
            text(s, "created_by"),
            text(s, "comment"),
        ]
        for s in silences
    ]
    return table(["ID", "STATE", "STARTS", "ENDS", "MATCHERS", "BY", "COMMENT"], rows)
