"""What the commands that talk to a daemon print: tables and details for people, through
daemon/cli/common.py's `text`, `when` and `shown` (a field missing or of the wrong type prints
"?", and no text can move the cursor or start a row of its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.cli.common import MISSING, field, instant, shown, table, text, when

if TYPE_CHECKING:
    from daemon.cli.client import Answer


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
    return table(["JOB", "SCHEDULE", "NEXT", "LAST", "LAST SUCCESS", "ACTION"], rows)


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
