"""The `pagerduty` remediations' config and flags, and the local Events API v2
(tests/fakes/pagerduty.py) validating as PagerDuty does."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import REMEDIATIONS
from remediations.pagerduty import (
    PagerDutyChangeConfig,
    PagerDutyChangeRemediation,
    PagerDutyConfig,
    PagerDutyRemediation,
)
from tests.fakes.pagerduty import ROUTING_KEY, validate_change_event, validate_event


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


def test_change_defaults_and_flags() -> None:
    config = PagerDutyChangeConfig.model_validate(
        {"type": "pagerduty_change", "routing_key": ROUTING_KEY}
    )
    assert config.events_url == "https://events.pagerduty.com/v2/change/enqueue"
    assert (config.summary, config.actions, config.links) == (None, None, [])
    assert PagerDutyChangeRemediation.notifier is True
    # No dedup_key exists for change events: a repeat records the change twice.
    assert PagerDutyChangeRemediation.idempotent is False
    assert PagerDutyChangeRemediation.destructive is False
    assert REMEDIATIONS.get("pagerduty_change") is PagerDutyChangeRemediation


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"routing_key": "  "}, "routing_key is empty"),
        ({"routing_key": ROUTING_KEY, "events_url": "events.pagerduty.com"}, "http"),
        ({"routing_key": ROUTING_KEY, "severity": "critical"}, "severity"),
        ({"routing_key": ROUTING_KEY, "actions": []}, "actions"),
        ({"routing_key": ROUTING_KEY, "summary": "s" * 1025}, "summary"),
    ],
)
def test_change_config_validation(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PagerDutyChangeConfig.model_validate({"type": "pagerduty_change", **config})


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"payload": {"summary": "s"}}, "'routing_key' is missing or blank"),
        ({"routing_key": ROUTING_KEY}, "'payload' is missing"),
        ({"routing_key": ROUTING_KEY, "payload": {"source": "h"}}, "'payload.summary' is missing"),
        (
            {"routing_key": ROUTING_KEY, "payload": {"summary": "s" * 1025}},
            "'payload.summary' is too long",
        ),
        (
            {"routing_key": ROUTING_KEY, "payload": {"summary": "s", "timestamp": "yesterday"}},
            "'payload.timestamp' is not a valid ISO 8601",
        ),
        (
            {"routing_key": ROUTING_KEY, "payload": {"summary": "s"}, "links": [{"text": "t"}]},
            "'links' must be a list",
        ),
    ],
)
def test_fake_validates_change_events_like_pagerduty(event: dict[str, Any], error: str) -> None:
    assert any(e.startswith(error) for e in validate_change_event(event))


def test_fake_accepts_the_documented_example() -> None:
    # The request payload example of PagerDuty's "Send a Change Event" page, with a key of
    # the right length.
    example = {
        "routing_key": ROUTING_KEY,
        "payload": {
            "summary": "Build Success: Increase snapshot create timeout to 30 seconds",
            "timestamp": "2020-07-17T08:42:58.315+0000",
            "source": "acme-build-pipeline-tool-default-i-9999",
            "custom_details": {"build_state": "passed", "build_number": "2", "run_time": "1236s"},
        },
        "links": [{"href": "https://acme.pagerduty.dev/build/2", "text": "View more details"}],
    }
    assert validate_change_event(example) == []
    # A change event is not an alert event: /v2/enqueue would refuse it.
    assert validate_event(example)
