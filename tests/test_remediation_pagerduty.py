"""The `pagerduty` remediation against a faithful local Events API v2."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from daemon.clock import ManualClock
from remediations.base import RemediationContext
from remediations.pagerduty import PagerDutyConfig, PagerDutyRemediation
from tests.fakes import make_incident
from tests.fakes.pagerduty import FakePagerDuty, validate_event
from tests.utils import free_port, serve

ROUTING_KEY = "R0ut1ngKey0123456789abcdefABCDEF"
assert len(ROUTING_KEY) == 32


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


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"routing_key": "   "}, "routing_key is empty"),
        ({}, "routing_key"),
        ({"routing_key": ROUTING_KEY, "events_url": "events.pagerduty.com"}, "http"),
        ({"routing_key": ROUTING_KEY, "links": [{"text": "no href"}]}, "href"),
    ],
)
def test_config_validation(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PagerDutyConfig.model_validate({"type": "pagerduty", **config})


def test_default_endpoint_and_flags() -> None:
    config = PagerDutyConfig.model_validate({"type": "pagerduty", "routing_key": ROUTING_KEY})
    assert config.events_url == "https://events.pagerduty.com/v2/enqueue"
    assert PagerDutyRemediation.notifier is True
    assert PagerDutyRemediation.idempotent is True
    assert PagerDutyRemediation.destructive is False


# --- the fake itself refuses what PagerDuty refuses --------------------------------------


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"event_action": "trigger"}, "'routing_key' is missing or blank"),
        ({"routing_key": ROUTING_KEY, "event_action": "escalate"}, "'event_action' is invalid"),
        ({"routing_key": ROUTING_KEY, "event_action": "resolve"}, "'dedup_key' is missing"),
        (
            {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k" * 256},
            "'dedup_key' is too long",
        ),
        ({"routing_key": ROUTING_KEY, "event_action": "trigger"}, "'payload' is missing"),
        (
            {
                "routing_key": ROUTING_KEY,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "fatal"},
            },
            "'payload.severity' is invalid",
        ),
    ],
)
def test_fake_validates_like_pagerduty(event: dict[str, Any], error: str) -> None:
    assert any(e.startswith(error) for e in validate_event(event))


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
