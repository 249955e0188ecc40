"""The `pagerduty` remediation against a faithful local Events API v2."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.core import plugins
from daemon.core.clock import ManualClock
from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from remediations.base import RemediationContext
from remediations.pagerduty import (
    PagerDutyChangeConfig,
    PagerDutyChangeRemediation,
    PagerDutyConfig,
    PagerDutyRemediation,
)
from remediations.retry import EXCERPT_CHARS
from tests.fakes import make_incident
from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.utils import free_port, serve
from tests.world import FakeAction, FakePager, make_world


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake() -> FakePagerDuty:
    return FakePagerDuty()


@pytest.fixture
async def events_url(fake: FakePagerDuty) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield f"{url}/v2/enqueue"


def make(events_url: str, **config: Any) -> PagerDutyRemediation:
    data = {"type": "pagerduty", "routing_key": ROUTING_KEY, "events_url": events_url}
    return PagerDutyRemediation("page-oncall", PagerDutyConfig.model_validate(data | config))


def assert_no_secret(result: object) -> None:
    assert ROUTING_KEY not in repr(result)


async def test_trigger_sends_the_documented_event(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str
) -> None:
    remediation = make(
        events_url,
        source="web-01.example.com",
        component="nginx",
        group="web",
        **{"class": "error rate"},
        client_url="https://runbookd.example.com/incidents",
        links=[{"href": "https://runbook.example.com/error-rate", "text": "Runbook"}],
    )

    result = await remediation.execute(ctx, make_incident())

    assert fake.events == [
        {
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "inc-20270115-0001",
            "payload": {
                "summary": "Error rate 7.2% above 5% for 5m",
                "source": "web-01.example.com",
                "severity": "critical",
                "timestamp": "2027-01-15T08:00:00.000+00:00",
                "component": "nginx",
                "group": "web",
                "class": "error rate",
                "custom_details": {
                    "rule": "high_error_rate",
                    "check": "error_rate",
                    "value": 0.072,
                    "threshold": 0.05,
                    "incident_id": "inc-20270115-0001",
                },
            },
            "client": "runbookd",
            "client_url": "https://runbookd.example.com/incidents",
            "links": [{"href": "https://runbook.example.com/error-rate", "text": "Runbook"}],
        }
    ]
    assert fake.received[0].headers["Content-Type"] == "application/json"
    assert result.ok
    assert result.detail == "PagerDuty trigger inc-20270115-0001: HTTP 202"
    assert result.data == {
        "request": {
            "url": events_url.removesuffix("/v2/enqueue"),
            "event_action": "trigger",
            "dedup_key": "inc-20270115-0001",
            "severity": "critical",
            "summary": "Error rate 7.2% above 5% for 5m",
        },
        "status": 202,
        "response": '{"status": "success", "message": "Event processed", '
        '"dedup_key": "inc-20270115-0001"}',
        "attempts": 1,
    }
    assert_no_secret(result)


async def test_resolve_uses_the_same_dedup_key(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str
) -> None:
    remediation = make(events_url)
    incident = make_incident()

    await remediation.execute(ctx, incident)
    result = await remediation.resolve(ctx, incident)

    assert result is not None
    assert result.ok
    assert fake.events[1] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": fake.events[0]["dedup_key"],
    }
    assert result.detail == "PagerDuty resolve inc-20270115-0001: HTTP 202"
    assert_no_secret(result)


async def test_minimal_event_defaults(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str
) -> None:
    await make(events_url).execute(ctx, make_incident(trigger={}))

    [event] = fake.events
    assert set(event) == {"routing_key", "event_action", "dedup_key", "payload", "client"}
    payload = event["payload"]
    assert set(payload) == {"summary", "source", "severity", "timestamp", "custom_details"}
    assert payload["source"] == socket.gethostname()
    assert payload["custom_details"]["value"] is None


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", "critical"),
        ("error", "error"),
        ("warning", "warning"),
        ("info", "info"),
        ("WARNING", "warning"),
        ("page", "error"),
    ],
)
async def test_severity_mapping(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str, severity: str, expected: str
) -> None:
    await make(events_url).execute(ctx, make_incident(severity=severity))

    assert fake.events[0]["payload"]["severity"] == expected


async def test_long_or_blank_summary_is_made_acceptable(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str
) -> None:
    remediation = make(events_url)

    long = await remediation.execute(ctx, make_incident(summary="é" * 5000))
    blank = await remediation.execute(ctx, make_incident(summary="  "))

    assert long.ok
    assert blank.ok
    assert fake.events[0]["payload"]["summary"] == "é" * 1024
    assert fake.events[1]["payload"]["summary"] == "high_error_rate on error_rate"


async def test_invalid_event_400_is_not_retried(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, events_url: str
) -> None:
    # A v1 "service key" or a REST API key has the wrong length.
    remediation = make(events_url, routing_key="u+shortRestApiKey")

    result = await remediation.execute(ctx, make_incident())

    assert len(fake.received) == 1
    assert clock.slept == []
    assert not result.ok
    assert not result.recoverable
    assert result.data["status"] == 400
    assert "Length of 'routing_key' is incorrect" in result.data["response"]
    assert "u+shortRestApiKey" not in repr(result)


async def test_a_key_echoed_across_the_excerpt_cut_leaves_no_part_of_it(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str
) -> None:
    # The timeline keeps EXCERPT_CHARS of an answer; once cut before it was masked, the
    # start of a key echoed across the cut stayed (10 characters of it, once).
    remediation = make(events_url)
    starts = range(EXCERPT_CHARS - len(ROUTING_KEY) - 4, EXCERPT_CHARS + 4)
    for start in starts:
        fake.echo_routing_key_at = start
        result = await remediation.execute(ctx, make_incident())

        assert result.data["status"] == 400
        recorded = json.dumps(result.data) + result.detail
        leaked = [n for n in range(4, len(ROUTING_KEY) + 1) if ROUTING_KEY[:n] in recorded]
        assert leaked == [], (start, result.data["response"][-60:])
        assert '{"status": "invalid event", "message": "xxx' in result.data["response"]
    assert len(fake.received) == len(starts)


async def test_429_is_retried_honouring_retry_after(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, events_url: str
) -> None:
    fake.fail_next(429, count=2, retry_after=5)

    result = await make(events_url).execute(ctx, make_incident())

    assert result.ok
    assert len(fake.received) == 3
    assert len(fake.events) == 1
    assert clock.slept == [5.0, 5.0]
    assert result.data["attempts"] == 3


async def test_500_is_retried_with_backoff(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, events_url: str
) -> None:
    fake.fail_next(500, count=2)

    result = await make(events_url).execute(ctx, make_incident())

    assert result.ok
    assert len(fake.received) == 3
    assert clock.slept == [1.0, 2.0]


async def test_exhausted_attempts_are_recoverable(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, events_url: str
) -> None:
    fake.fail_next(500, count=4)
    fake.fail_next(429, count=1)

    result = await make(events_url).execute(ctx, make_incident())

    assert not result.ok
    assert result.recoverable
    assert len(fake.received) == 4
    assert fake.events == []
    assert clock.slept == [1.0, 2.0, 4.0]
    assert result.detail == (
        "PagerDuty trigger inc-20270115-0001: gave up after 4 attempts, last: HTTP 500"
    )
    assert_no_secret(result)


async def test_unreachable_endpoint_is_recoverable(
    ctx: RemediationContext, clock: ManualClock
) -> None:
    remediation = make(f"http://127.0.0.1:{free_port()}/v2/enqueue", retry={"attempts": 2})

    result = await remediation.execute(ctx, make_incident())

    assert (result.ok, result.recoverable, result.data["attempts"]) == (False, True, 2)
    assert clock.slept == [1.0]
    assert_no_secret(result)


async def test_routing_key_file(
    ctx: RemediationContext, fake: FakePagerDuty, events_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "pagerduty.key"
    key_file.write_text(ROUTING_KEY + "\n")
    config = PagerDutyConfig.model_validate(
        {"type": "pagerduty", "routing_key_file": str(key_file), "events_url": events_url}
    )

    result = await PagerDutyRemediation("page", config).execute(ctx, make_incident())

    assert result.ok
    assert fake.events[0]["routing_key"] == ROUTING_KEY
    assert ROUTING_KEY not in repr(config)


async def test_fake_answers_invalid_json_with_400(
    session: aiohttp.ClientSession, fake: FakePagerDuty, events_url: str
) -> None:
    async with session.post(events_url, data=b"{not json") as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["Event object is not valid JSON"],
        }


# --- pagerduty_change: Change Events -------------------------------------------------------

OPENED = 1_800_000_000.0


@pytest.fixture
async def change_url(fake: FakePagerDuty) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield f"{url}/v2/change/enqueue"


def make_change(change_url: str, **config: Any) -> PagerDutyChangeRemediation:
    data = {"type": "pagerduty_change", "routing_key": ROUTING_KEY, "events_url": change_url}
    return PagerDutyChangeRemediation(
        "record-change", PagerDutyChangeConfig.model_validate(data | config)
    )


def step(
    ts: float, name: str, kind: str, *, ok: bool = True, phase: str = "do"
) -> list[TimelineEntry]:
    """The two entries the pipeline writes for one step: before and after running it."""
    base = {"remediation": name, "type": kind, "phase": phase}
    verdict = "succeeded" if ok else "failed"
    return [
        TimelineEntry(ts, "action", f"running {name} ({kind})", base),
        TimelineEntry(
            ts + 2, "result", f"{name} {verdict}: did it", {**base, "ok": ok, "outcome": "ok"}
        ),
    ]


def resolve_step(ts: float, name: str, *, ok: bool = True) -> TimelineEntry:
    """What the pipeline records for a remediation's resolve hook (no type, phase resolve)."""
    data = {"remediation": name, "phase": "resolve", "ok": ok}
    return TimelineEntry(ts, "result", f"{name} on resolve: scaled back in", data)


def incident_with(*steps: list[TimelineEntry] | TimelineEntry, **fields: Any) -> Incident:
    timeline = [TimelineEntry(OPENED, "opened", "firing: error rate")]
    for entries in steps:
        timeline += entries if isinstance(entries, list) else [entries]
    return make_incident(timeline=timeline, **fields)


async def test_change_event_is_the_documented_shape(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    plugins.load()  # notifiers are known by their registered type, as in the daemon
    remediation = make_change(
        change_url,
        source="runbookd.example.com",
        links=[{"href": "https://runbook.example.com/error-rate", "text": "Runbook"}],
    )
    incident = incident_with(
        step(OPENED + 60, "page-oncall", "pagerduty"),
        step(OPENED + 65, "rollback-web", "compose_rollback"),
        step(OPENED + 70, "tell-ops", "slack"),
        [TimelineEntry(OPENED + 75, "action", "running record-change", {"remediation": "x"})],
    )

    result = await remediation.execute(ctx, incident)

    assert fake.change_events == [
        {
            "routing_key": ROUTING_KEY,
            "payload": {
                "summary": "runbookd ran rollback-web (compose_rollback) for high_error_rate: "
                "Error rate 7.2% above 5% for 5m",
                "timestamp": "2027-01-15T08:01:07.000+00:00",
                "source": "runbookd.example.com",
                "custom_details": {
                    "incident_id": "inc-20270115-0001",
                    "rule": "high_error_rate",
                    "check": "error_rate",
                    "severity": "critical",
                    "incident_status": "open",
                    "value": 0.072,
                    "threshold": 0.05,
                    "actions": [
                        {
                            "remediation": "rollback-web",
                            "type": "compose_rollback",
                            "phase": "do",
                            "outcome": "succeeded",
                            "at": "2027-01-15T08:01:07.000+00:00",
                            "result": "rollback-web succeeded: did it",
                        }
                    ],
                },
            },
            "links": [{"href": "https://runbook.example.com/error-rate", "text": "Runbook"}],
        }
    ]
    assert fake.events == []  # nothing went to the alert endpoint
    assert fake.received[0].path == "/v2/change/enqueue"
    assert result.ok
    assert result.detail == "PagerDuty change event for inc-20270115-0001: HTTP 202"
    assert result.data == {
        "request": {
            "url": change_url.removesuffix("/v2/change/enqueue"),
            "summary": fake.change_events[0]["payload"]["summary"],
            "actions": ["rollback-web"],
        },
        "status": 202,
        "response": '{"status": "success", "message": "Change event processed"}',
        "attempts": 1,
    }
    assert_no_secret(result)


async def test_every_action_in_order_and_failures_named(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    incident = incident_with(
        step(OPENED + 10, "rollback-web", "compose_rollback", ok=False),
        step(OPENED + 20, "scale-web", "compose_scale", phase="escalate"),
    )

    result = await make_change(change_url).execute(ctx, incident)

    assert result.ok
    [event] = fake.change_events
    assert set(event) == {"routing_key", "payload"}
    assert event["payload"]["summary"] == (
        "runbookd ran rollback-web (compose_rollback, failed), scale-web (compose_scale) for "
        "high_error_rate: Error rate 7.2% above 5% for 5m"
    )
    assert event["payload"]["source"] == socket.gethostname()
    actions = event["payload"]["custom_details"]["actions"]
    assert [(a["remediation"], a["phase"], a["outcome"]) for a in actions] == [
        ("rollback-web", "do", "failed"),
        ("scale-web", "escalate", "succeeded"),
    ]


async def test_nothing_is_sent_before_any_action_ran(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    incident = incident_with(step(OPENED + 5, "page-oncall", "pagerduty"))

    result = await make_change(change_url).execute(ctx, incident)

    assert fake.received == []
    assert result.ok
    assert result.data == {"sent": False}
    assert result.detail == (
        "PagerDuty change event for inc-20270115-0001: no action has run, none sent"
    )


async def test_a_second_run_reports_only_what_ran_since_the_first(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    incident = incident_with(
        step(OPENED + 10, "rollback-web", "compose_rollback"),
        step(OPENED + 20, "record-change", "pagerduty_change"),
        step(OPENED + 30, "scale-web", "compose_scale", phase="escalate"),
    )

    await make_change(change_url).execute(ctx, incident)

    actions = fake.change_events[0]["payload"]["custom_details"]["actions"]
    assert [a["remediation"] for a in actions] == ["scale-web"]


async def test_actions_names_what_to_report(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    incident = incident_with(
        step(OPENED + 10, "restart-app", "systemd_restart"),
        step(OPENED + 20, "rollback-web", "compose_rollback"),
    )

    await make_change(change_url, actions=["rollback-web"]).execute(ctx, incident)

    [event] = fake.change_events
    assert [a["remediation"] for a in event["payload"]["custom_details"]["actions"]] == [
        "rollback-web"
    ]


async def test_fixed_summary(ctx: RemediationContext, fake: FakePagerDuty, change_url: str) -> None:
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))

    await make_change(change_url, summary="Rolled back web to the last healthy deploy").execute(
        ctx, incident
    )

    assert fake.change_events[0]["payload"]["summary"] == (
        "Rolled back web to the last healthy deploy"
    )


async def test_resolve_reports_the_undo_steps(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    remediation = make_change(change_url)
    incident = incident_with(
        step(OPENED + 5, "page-oncall", "pagerduty"),
        step(OPENED + 10, "scale-web", "compose_scale"),
        step(OPENED + 20, "record-change", "pagerduty_change"),
        resolve_step(OPENED + 900, "scale-web"),
        resolve_step(OPENED + 901, "page-oncall"),
        resolved_at=OPENED + 600,
    )
    incident.status = IncidentStatus.RESOLVED

    result = await remediation.resolve(ctx, incident)

    assert result is not None
    assert result.ok
    [event] = fake.change_events
    payload = event["payload"]
    assert (
        payload["summary"]
        == "runbookd ran scale-web (compose_scale) after high_error_rate resolved"
    )
    assert payload["timestamp"] == "2027-01-15T08:15:00.000+00:00"
    details = payload["custom_details"]
    assert details["incident_status"] == "resolved"
    assert [(a["remediation"], a["phase"]) for a in details["actions"]] == [
        ("scale-web", "resolve")
    ]


async def test_resolve_without_undo_steps_sends_nothing(
    ctx: RemediationContext, fake: FakePagerDuty, change_url: str
) -> None:
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))

    assert await make_change(change_url).resolve(ctx, incident) is None
    assert fake.received == []


async def test_change_event_400_is_not_retried(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, change_url: str
) -> None:
    remediation = make_change(change_url, routing_key="u+shortRestApiKey")
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))

    result = await remediation.execute(ctx, incident)

    assert (result.ok, result.recoverable) == (False, False)
    assert len(fake.received) == 1
    assert clock.slept == []
    assert "Length of 'routing_key' is incorrect" in result.data["response"]
    assert "u+shortRestApiKey" not in repr(result)


async def test_change_event_429_is_retried(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, change_url: str
) -> None:
    fake.fail_next(429, retry_after=7)
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))

    result = await make_change(change_url).execute(ctx, incident)

    assert result.ok
    assert clock.slept == [7.0]
    assert len(fake.change_events) == 1
    assert_no_secret(result)


async def test_change_event_5xx_is_not_retried_anywhere(
    ctx: RemediationContext, clock: ManualClock, fake: FakePagerDuty, change_url: str
) -> None:
    fake.fail_next(502)
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))

    result = await make_change(change_url).execute(ctx, incident)

    # A 5xx may follow PagerDuty recording the change: a repeat (here or from the outbox,
    # which retries only what is recoverable) would record it twice.
    assert (result.ok, result.recoverable) == (False, False)
    assert len(fake.received) == 1
    assert clock.slept == []
    assert result.detail.endswith("HTTP 502; not retried: the provider may have acted on it")
    assert_no_secret(result)


async def test_change_event_connection_refused_is_retried(
    ctx: RemediationContext, clock: ManualClock
) -> None:
    # Nothing listens: the request never left, so it is safe to send again.
    incident = incident_with(step(OPENED + 10, "rollback-web", "compose_rollback"))
    url = f"http://127.0.0.1:{free_port()}/v2/change/enqueue"

    result = await make_change(url, retry={"attempts": 2}).execute(ctx, incident)

    assert (result.ok, result.recoverable) == (False, True)
    assert result.data["attempts"] == 2
    assert clock.slept == [1.0]


async def test_through_the_pipeline_rollback_then_change_then_resolve(
    session: aiohttp.ClientSession, fake: FakePagerDuty, change_url: str
) -> None:
    """The timeline as the pipeline really writes it: one change event for the rollback,
    one for undoing it when the rule clears."""
    rule = {"when": "app.error_ratio > 5%", "for": "3s", "do": ["rollback", "record", "page"]}
    # A fake rollback and pager (type "fake", unknown to the registry): `actions` says which.
    remediations: dict[str, Any] = {
        "rollback": FakeAction("rollback"),
        "record": make_change(change_url, actions=["rollback"]),
        "page": FakePager("page"),
    }
    w = make_world({"errors": rule}, remediations)
    w.pipeline.ctx = RemediationContext(session, w.clock)
    for _ in range(5):
        await w.see(0.2)
    assert await w.pipeline.idle(5.0)
    await w.see(0.0)
    assert await w.pipeline.idle(5.0)

    first, second = fake.change_events
    assert first["payload"]["summary"].startswith("runbookd ran rollback (fake) for errors: ")
    assert second["payload"]["summary"] == "runbookd ran rollback (fake) after errors resolved"
    timeline = (await w.stored(w.opened[0].id)).timeline
    results = [
        (e.data["remediation"], e.data["phase"], e.data["ok"])
        for e in timeline
        if e.kind == "result"
    ]
    assert ("record", "do", True) in results
    assert ("record", "resolve", True) in results
