"""An incident's report in Markdown, from its timeline, in the order of the runbook's
post-incident steps: what happened, impact, timeline, actions, what was verified, and the
follow-ups people fill in. Facts come from the record; what only people know is left to fill."""

from __future__ import annotations

import re
import time
from typing import Any

from daemon.core import values
from daemon.core.models import Incident, Step, TimelineEntry
from daemon.core.text import one_line
from daemon.core.values import span, utc

ACTIONS = frozenset(
    {
        Step.ACKNOWLEDGED,
        Step.SILENCED,
        Step.CIRCUIT_OPEN,
        Step.DRY_RUN,
        Step.APPROVAL,
        Step.APPROVED,
        Step.REJECTED,
        Step.SKIPPED,
        Step.ACTION,
        Step.RESULT,
        Step.QUEUED,
        Step.INTERRUPTED,
        Step.ERROR,
        Step.ESCALATE,
    }
)
VERIFIED = frozenset({Step.VERIFY, Step.VERIFIED, Step.RESOLVED})
TO_FILL = "_(to fill in)_"


def inline(text: str) -> str:
    """One line of text as Markdown shows it: no line breaks, no table or markup syntax, its
    controls and direction overrides as escapes."""
    text = one_line(" ".join(str(text).split()))
    text = re.sub(r"([\\`*{}\[\]<>|])", r"\\\1", text)
    # `_` inside a word (min_samples) emphasises nothing: only one at a word's edge is escaped.
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def facts(data: dict[str, Any], measure: str | None = None) -> str:
    """An entry's data as `name=value` fields (daemon/core/values.py says how each reads)."""
    return "; ".join(f"{inline(k)}={inline(v)}" for k, v in values.pairs(data, measure))


def render(incident: Incident, *, now: float) -> str:
    end = incident.resolved_at if incident.resolved_at is not None else now
    lines = [
        f"# Incident report: {inline(incident.summary)}",
        "",
        f"- **Incident**: {inline(incident.id)}",
        f"- **Severity**: {inline(incident.severity)}",
        f"- **Status**: {incident.status.value}",
        f"- **Started**: {utc(incident.opened_at)}",
        f"- **Resolved**: {utc(incident.resolved_at)}"
        + (f" by {inline(incident.resolved_by)}" if incident.resolved_by else ""),
        f"- **Duration**: {span(end - incident.opened_at)}"
        + ("" if incident.resolved_at is not None else " (still open)"),
        "- **Acknowledged**: "
        + (
            f"{utc(incident.acknowledged_at)} by {inline(incident.acknowledged_by)}"
            if incident.acknowledged_by
            else "no"
        ),
        "",
        "## What happened",
        "",
        f"Rule `{incident.rule}` on check `{incident.check}`: {inline(incident.summary)}.",
    ]
    if incident.trigger:
        lines += ["", f"Trigger: {facts(incident.trigger)}."]
    lines += [
        "",
        "## Impact",
        "",
        f"From {utc(incident.opened_at)} for {span(end - incident.opened_at)}. "
        f"Who was affected, and how: {TO_FILL}",
        "",
        "## Timeline",
        "",
        "| Time (UTC) | Step | What | Values |",
        "|---|---|---|---|",
    ]
    measure = values.measure_of(incident.trigger)
    lines += [_row(e, measure) for e in incident.timeline] or ["| - | - | no entries | |"]
    lines += ["", "## Actions", ""]
    lines += _bullets(e for e in incident.timeline if _acted(e)) or ["- none"]
    lines += ["", "## What was verified", ""]
    lines += _bullets(e for e in incident.timeline if _verified(e)) or [
        "- nothing yet: the incident is open"
        if incident.is_open
        else "- nothing: it was resolved by hand, not seen to recover"
    ]
    lines += [
        "",
        "## Follow-ups",
        "",
        f"- [ ] Root cause: {TO_FILL}",
        f"- [ ] What would have caught it earlier (a check, a threshold): {TO_FILL}",
        f"- [ ] What makes it not happen again: {TO_FILL}",
        f"- [ ] Runbook changes: {TO_FILL}",
        "",
    ]
    return "\n".join(lines)


def _by_hand(entry: TimelineEntry) -> bool:
    """A resolution an operator made (it names who): an action, not a recovery seen."""
    return entry.kind == Step.RESOLVED and "by" in entry.data


def _acted(entry: TimelineEntry) -> bool:
    return entry.kind in ACTIONS or _by_hand(entry)


def _verified(entry: TimelineEntry) -> bool:
    return entry.kind in VERIFIED and not _by_hand(entry)


def _row(entry: TimelineEntry, measure: str | None) -> str:
    when = time.strftime("%H:%M:%S", time.gmtime(entry.ts))
    return f"| {when} | {entry.kind} | {inline(entry.message)} | {facts(entry.data, measure)} |"


def _bullets(entries: Any) -> list[str]:
    return [f"- {utc(e.ts)}: {inline(e.message)}" for e in entries]
