"""The console's sessions (expiry, tokens removed or demoted by a reload, the cap) and its
incident report (sections, escaping), on numbers and objects: no server."""

from __future__ import annotations

from pydantic import SecretStr

from daemon.api import openapi, routes
from daemon.config.settings import ApiToken
from daemon.core.models import Incident, IncidentStatus, Step, TimelineEntry
from daemon.ui import report, sessions, status
from daemon.ui.sessions import Sessions, same_csrf

OPS = ApiToken(name="ops", token=SecretStr("w-0123456789abcdef"), scope="write")
VIEWER = ApiToken(name="viewer", token=SecretStr("r-0123456789abcdef"), scope="read")
TTL = 12 * 3600.0


def test_a_session_lasts_its_ttl_and_not_a_second_more() -> None:
    table = Sessions()
    s = table.create(OPS, now=1000.0, ttl=TTL)
    assert table.get(s.id, [OPS], now=1000.0 + TTL - 1) is s
    assert table.get(s.id, [OPS], now=1000.0 + TTL) is None
    assert len(table) == 0  # an expired session is forgotten
    assert table.get(s.id, [OPS], now=1000.0) is None  # for good


def test_a_session_holds_no_token_and_follows_the_tokens_of_the_moment() -> None:
    table = Sessions()
    s = table.create(OPS, now=0.0, ttl=TTL)
    assert OPS.token.get_secret_value() not in repr(s)
    assert (s.name, s.scope) == ("ops", "write")
    demoted = ApiToken(name="ops", token=OPS.token, scope="read")
    assert table.get(s.id, [demoted], now=1.0) is s
    assert s.scope == "read"  # a reload demoted the token: its buttons go
    assert table.get(s.id, [VIEWER], now=2.0) is None  # a reload removed it: the session ends


def test_an_open_api_session_ends_when_tokens_appear() -> None:
    table = Sessions()
    s = table.create(None, now=0.0, ttl=TTL)
    assert (s.name, s.scope) == (sessions.LOCAL, "write")
    assert table.get(s.id, [], now=1.0) is s
    assert table.get(s.id, [OPS], now=2.0) is None


def test_unknown_ids_csrf_and_the_cap() -> None:
    table = Sessions()
    first = table.create(OPS, now=0.0, ttl=TTL)
    assert table.get("", [OPS], now=0.0) is None
    assert table.get(first.id + "x", [OPS], now=0.0) is None
    assert same_csrf(first, first.csrf)
    assert not same_csrf(first, first.csrf[:-1])
    assert first.id != first.csrf
    for _ in range(sessions.MAX_SESSIONS):
        table.create(VIEWER, now=0.0, ttl=TTL)
    assert len(table) == sessions.MAX_SESSIONS
    assert table.get(first.id, [OPS, VIEWER], now=0.0) is None  # the oldest went first


def test_ui_routes_are_served_but_not_documented_as_api() -> None:
    ui = [op for op in routes.OPERATIONS if op.tag == "ui"]
    assert ui
    assert all(op.path.startswith(("/ui", "/status")) for op in ui)
    assert all(op.auth in ("session", "open") for op in ui)
    paths = openapi.document()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]
    assert "/api/v1/checks" in paths
    assert routes.auth_of("POST", "/ui/incidents/{id}/{action}") == "session"


def incident() -> Incident:
    opened = 1_780_000_000.0
    inc = Incident(
        id="inc-1",
        rule="errors",
        check="web",
        severity="critical",
        summary="error rate | high *now*",
        opened_at=opened,
        status=IncidentStatus.RESOLVED,
        resolved_at=opened + 3723,
        trigger={
            "value_name": "error_ratio",
            "value": 0.09,
            "threshold": 0.05,
            "baseline": None,
            "for_seconds": 300.0,
        },
        acknowledged_by="ana",
        acknowledged_at=opened + 60,
    )
    inc.timeline = [
        TimelineEntry(opened, Step.OPENED, "firing: errors", {"value": 0.09, "limit": 0.05}),
        TimelineEntry(opened + 60, Step.ACKNOWLEDGED, "acknowledged by ana"),
        TimelineEntry(opened + 70, Step.ACTION, "running rollback", {"remediation": "rollback"}),
        TimelineEntry(opened + 90, Step.RESULT, "rollback: ok\nsecond line", {"ok": True}),
        TimelineEntry(opened + 200, Step.VERIFIED, "the rule cleared"),
        TimelineEntry(opened + 3723, Step.RESOLVED, "resolved"),
    ]
    return inc


def test_the_report_follows_the_post_incident_steps_in_order() -> None:
    text = report.render(incident(), now=0.0)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## What happened",
        "## Impact",
        "## Timeline",
        "## Actions",
        "## What was verified",
        "## Follow-ups",
    ]
    assert "- **Duration**: 1h 02m 03s" in text
    assert "- **Acknowledged**: 2026-05-28 20:27:40 UTC by ana" in text
    # One formatter (daemon/core/values.py): the rule's numbers in the unit of what it watched.
    trigger = "baseline=—; for_seconds=5m; threshold=5%; value=9%; value_name=error_ratio"
    assert f"Trigger: {trigger}." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1].endswith("| firing: errors | limit=5%; value=9% |")
    assert rows[4].endswith("| ok=yes |")
    actions = text.split("## Actions")[1].split("##")[0]
    assert "running rollback" in actions
    assert "rollback: ok second line" in actions
    assert "firing" not in actions
    verified = text.split("## What was verified")[1].split("##")[0]
    assert "the rule cleared" in verified
    assert "resolved" in verified
    assert text.count("(to fill in)") == 5


def test_a_resolution_by_hand_is_an_action_not_something_verified() -> None:
    closed = incident()
    ts = closed.opened_at + 300
    closed.timeline = [
        *closed.timeline[:4],
        TimelineEntry(ts, Step.RESOLVED, "resolved by ana: still failing", {"by": "ana"}),
    ]
    text = report.render(closed, now=0.0)
    actions = text.split("## Actions")[1].split("##")[0]
    verified = text.split("## What was verified")[1].split("##")[0]
    assert "resolved by ana: still failing" in actions
    assert "resolved by ana" not in verified
    assert "- nothing: it was resolved by hand, not seen to recover" in verified


def test_the_report_keeps_text_from_breaking_its_markdown() -> None:
    text = report.render(incident(), now=0.0)
    assert "error rate \\| high \\*now\\*" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 7
    assert all(line.count(" | ") == 3 for line in rows)
    assert "ok second line" in text  # a line break does not end the row


def test_the_report_escapes_markup_but_not_every_underscore() -> None:
    assert report.inline("min_samples _x_ <b> a|b") == "min_samples \\_x\\_ \\<b\\> a\\|b"


def test_the_report_shows_controls_and_direction_overrides_as_escapes() -> None:
    inc = incident()
    inc.summary = "disk \u202efull"
    inc.timeline[2].data = {"output": "ok\x1b[2J", "labels": {"team": "ops\u2066"}}
    text = report.render(inc, now=0.0)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\u2066" not in text
    assert "# Incident report: disk \\\\u202efull" in text  # a backslash, escaped in Markdown
    assert "| labels=team: ops\\\\u2066; output=ok\\\\x1b\\[2J |" in text


def test_the_status_stage_follows_the_timeline() -> None:
    inc = incident()
    inc.status, inc.resolved_at, inc.acknowledged_by = IncidentStatus.OPEN, None, None
    opened, ack, action, result, verified, _ = inc.timeline
    inc.timeline = [opened]
    assert status.stage(inc) == "investigating"
    inc.timeline = [opened, action, result]
    assert status.stage(inc) == "identified"
    inc.timeline = [opened, action, result, verified]
    assert status.stage(inc) == "monitoring"
    inc.timeline = [opened, verified, action]  # acted again since it was verified
    assert status.stage(inc) == "identified"
    inc.timeline, inc.acknowledged_by = [opened, ack], "ana"
    assert status.stage(inc) == "identified"
    inc.status = IncidentStatus.RESOLVED
    assert status.stage(inc) == "resolved"
