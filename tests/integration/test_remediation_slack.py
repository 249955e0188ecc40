"""The `slack` remediation against a faithful local incoming webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from daemon.core.clock import ManualClock
from daemon.core.models import IncidentStatus, TimelineEntry
from remediations.base import RemediationContext
from remediations.slack import SlackConfig, SlackRemediation
from tests.fakes import make_incident
from tests.fakes.slack import WEBHOOK_PATH, FakeSlack
from tests.utils import serve
from tests.world import FakeAction, make_world


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
async def base_url(fake: FakeSlack) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield url


@pytest.fixture
def webhook_url(base_url: str) -> str:
    return base_url + WEBHOOK_PATH


def make(webhook_url: str, **config: Any) -> SlackRemediation:
    data = {"type": "slack", "webhook_url": webhook_url, **config}
    return SlackRemediation("tell-ops", SlackConfig.model_validate(data))


def assert_no_secret(result: object) -> None:
    text = repr(result)
    assert WEBHOOK_PATH not in text
    assert "XXXX" not in text


def fields_of(message: dict[str, Any]) -> dict[str, str]:
    """The template's fields as label -> value, in order (values as sent: escaped)."""
    [section] = [block for block in message["blocks"] if "fields" in block]
    pairs = [field["text"].split("\n", 1) for field in section["fields"]]
    assert all(field["type"] == "mrkdwn" for field in section["fields"])
    return {label.strip("*"): value for label, value in pairs}


TEMPLATE_LABELS = [
    "Status",
    "Impact",
    "Started",
    "Last update",
    "What happened",
    "Current status",
    "Next update",
]


async def test_incident_message(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, base_url: str, webhook_url: str
) -> None:
    await clock.sleep(330)  # posted 5m30s after the incident opened
    incident = make_incident(
        trigger={"condition": "error_rate.error_ratio > 5%", "value": 0.072, "threshold": 0.05},
        timeline=[
            TimelineEntry(1_800_000_000.0, "opened", "firing"),
            *step("rollback", "compose_rollback"),
            *step("page_oncall", "pagerduty"),
            TimelineEntry(
                1_800_000_330.0, "action", "running tell-ops", {"remediation": "tell-ops"}
            ),
        ],
    )

    result = await make(webhook_url).execute(ctx, incident)

    assert fake.messages == [
        {
            "text": "[CRITICAL] high_error_rate: Error rate 7.2% above 5% for 5m",
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": "🔴 high_error_rate", "emoji": True},
                },
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": "*Status*\ncritical, open"},
                        {"type": "mrkdwn", "text": "*Impact*\nError rate 7.2% above 5% for 5m"},
                        {"type": "mrkdwn", "text": "*Started*\n2027-01-15T08:00:00Z"},
                        {"type": "mrkdwn", "text": "*Last update*\n2027-01-15T08:05:30Z"},
                        {
                            "type": "mrkdwn",
                            "text": "*What happened*\nerror_rate.error_ratio &gt; 5%: "
                            "value 0.072 vs threshold 0.05",
                        },
                        {
                            "type": "mrkdwn",
                            "text": "*Current status*\nremediating: rollback, page_oncall",
                        },
                        {"type": "mrkdwn", "text": "*Next update*\n2027-01-15T08:35:30Z"},
                    ],
                },
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": "incident inc-20270115-0001 · runbookd"}
                    ],
                },
            ],
        }
    ]
    assert fake.received[0].headers["Content-Type"] == "application/json"
    assert result.ok
    assert result.detail == "Slack message for inc-20270115-0001: HTTP 200"
    assert result.data == {
        "request": {
            "url": base_url,
            "text": "[CRITICAL] high_error_rate: Error rate 7.2% above 5% for 5m",
        },
        "status": 200,
        "response": "ok",
        "attempts": 1,
    }
    assert_no_secret(result)


def step(name: str, kind: str, *, ok: bool = True, ts: float = 1_800_000_100.0) -> list[Any]:
    """The two entries the pipeline writes for one step: before and after running it."""
    base = {"remediation": name, "type": kind, "phase": "do"}
    return [
        TimelineEntry(ts, "action", f"running {name} ({kind})", base),
        TimelineEntry(ts + 1, "result", f"{name}: done", {**base, "ok": ok}),
    ]


def entry(kind: str, name: str, **data: Any) -> TimelineEntry:
    return TimelineEntry(1_800_000_200.0, kind, f"{kind} {name}", {"remediation": name, **data})


@pytest.mark.parametrize(
    ("timeline", "status"),
    [
        ([], "no automated action yet"),
        ([entry("action", "rollback")], "remediating: rollback"),
        (
            [*step("rollback", "compose_rollback", ok=False), *step("page", "pagerduty")],
            "remediating: page; failed: rollback",
        ),
        (
            [
                *step("page", "pagerduty"),
                entry("approval", "flush-cache"),
                entry("skipped", "restart", reason="cooldown"),
                entry("dry_run", "scale"),
            ],
            "remediating: page; waiting for approval: flush-cache; held back: restart; "
            "dry-run only: scale",
        ),
        (
            [entry("approval", "flush-cache"), entry("approved", "flush-cache")],
            "remediating: flush-cache",
        ),
        (
            [entry("approval", "flush-cache"), entry("rejected", "flush-cache")],
            "rejected by an operator: flush-cache",
        ),
        (
            [TimelineEntry(1_800_000_001.0, "circuit_open", "stopped"), *step("page", "pagerduty")],
            "automation stopped (circuit open), paging only; remediating: page",
        ),
        # Its own steps are not news, and neither are undo steps after resolving.
        (
            [*step("tell-ops", "slack"), entry("result", "scale", phase="resolve", ok=True)],
            "no automated action yet",
        ),
    ],
)
async def test_current_status_follows_the_timeline(
    ctx: RemediationContext,
    fake: FakeSlack,
    webhook_url: str,
    timeline: list[TimelineEntry],
    status: str,
) -> None:
    await make(webhook_url).execute(ctx, make_incident(timeline=timeline))

    assert fields_of(fake.messages[0])["Current status"] == status


async def test_a_second_post_is_an_update(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    incident = make_incident(timeline=[*step("tell-ops", "slack"), *step("scale", "compose_scale")])

    await make(webhook_url).execute(ctx, incident)

    [message] = fake.messages
    assert message["blocks"][0]["text"]["text"] == "🔴 Update: high_error_rate"
    assert message["text"] == "[CRITICAL] Update: high_error_rate: Error rate 7.2% above 5% for 5m"
    assert fields_of(message)["Current status"] == "remediating: scale"


async def test_impact_and_update_interval_from_config(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    remediation = make(webhook_url, impact="Checkout down for EU customers", update_every="15m")

    await remediation.execute(ctx, make_incident())

    fields = fields_of(fake.messages[0])
    assert list(fields) == TEMPLATE_LABELS
    assert fields["Impact"] == "Checkout down for EU customers"
    assert fields["Next update"] == "2027-01-15T08:15:00Z"


@pytest.mark.parametrize(
    ("trigger", "what"),
    [
        ({"value": 0.072, "threshold": 0.05}, "error_rate: value 0.072 vs threshold 0.05"),
        ({}, "error_rate: value n/a vs threshold n/a"),
        (
            {
                "condition": "latency.p95_seconds > 1.5 x baseline(1h)",
                "value": 2.4,
                "threshold": 1.8,
                "baseline": 1.2,
            },
            "latency.p95_seconds &gt; 1.5 x baseline(1h): value 2.4 vs threshold 1.8 "
            "(baseline 1.2)",
        ),
    ],
)
async def test_what_happened(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str, trigger: dict[str, Any], what: str
) -> None:
    await make(webhook_url).execute(ctx, make_incident(trigger=trigger))

    assert fields_of(fake.messages[0])["What happened"] == what


async def test_resolved_message(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    await clock.sleep(960)
    incident = make_incident(
        resolved_at=1_800_000_900.0,
        status=IncidentStatus.RESOLVED,
        timeline=[
            *step("rollback", "compose_rollback"),
            *step("page_oncall", "pagerduty"),
            *step("tell-ops", "slack"),
            entry("result", "rollback", phase="resolve", ok=True),
        ],
    )

    result = await make(webhook_url).resolve(ctx, incident)

    assert result is not None
    assert result.ok
    [message] = fake.messages
    assert message["text"] == "[RESOLVED] high_error_rate: Error rate 7.2% above 5% for 5m"
    assert message["blocks"][0]["text"]["text"] == "✅ Resolved: high_error_rate"
    assert message["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*Status*\ncritical, resolved after 15m"},
        {"type": "mrkdwn", "text": "*Impact*\nError rate 7.2% above 5% for 5m"},
        {"type": "mrkdwn", "text": "*Started*\n2027-01-15T08:00:00Z"},
        {"type": "mrkdwn", "text": "*Last update*\n2027-01-15T08:16:00Z"},
        {"type": "mrkdwn", "text": "*What happened*\nerror_rate: value 0.072 vs threshold 0.05"},
        {"type": "mrkdwn", "text": "*Current status*\nresolved; ran: rollback, page_oncall"},
        {"type": "mrkdwn", "text": "*Next update*\nnone: the incident is resolved"},
    ]
    assert_no_secret(result)


async def test_resolved_time_defaults_to_now(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    await clock.sleep(3900)

    await make(webhook_url).resolve(ctx, make_incident())

    fields = fields_of(fake.messages[0])
    assert fields["Status"] == "critical, resolved after 1h 5m"
    assert fields["Last update"] == "2027-01-15T09:05:00Z"
    assert fields["Current status"] == "resolved; no automated action"


async def test_alert_text_cannot_mention_or_link(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    incident = make_incident(summary="<!channel> disk & <https://evil.example|click me>")

    await make(webhook_url).execute(ctx, incident)

    escaped = "&lt;!channel&gt; disk &amp; &lt;https://evil.example|click me&gt;"
    [message] = fake.messages
    assert message["text"] == f"[CRITICAL] high_error_rate: {escaped}"
    assert fields_of(message)["Impact"] == escaped


async def test_oversized_text_is_clipped_to_block_kit_limits(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    incident = make_incident(rule="r" * 300, summary="s" * 5000)

    result = await make(webhook_url).execute(ctx, incident)

    assert result.ok, result.data
    blocks = fake.messages[0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    impact = blocks[1]["fields"][1]["text"]
    assert impact == "*Impact*\n" + "s" * (2000 - len("*Impact*\n") - 1) + "…"


async def test_through_the_pipeline_open_then_resolved(
    session: aiohttp.ClientSession, fake: FakeSlack, webhook_url: str
) -> None:
    """The timeline as the pipeline really writes it."""
    rule = {"when": "app.error_ratio > 5%", "for": "3s", "do": ["rollback", "tell-ops"]}
    remediations: dict[str, Any] = {
        "rollback": FakeAction("rollback"),
        "tell-ops": make(webhook_url),
    }
    w = make_world({"errors": rule}, remediations)
    w.pipeline.ctx = RemediationContext(session, w.clock)
    for _ in range(5):
        await w.see(0.2)
    assert await w.pipeline.idle(5.0)
    await w.see(0.0)
    assert await w.pipeline.idle(5.0)

    opened, resolved = (fields_of(message) for message in fake.messages)
    assert opened["Status"] == "critical, open"
    assert opened["What happened"] == "app.error_ratio &gt; 5%: value 0.2 vs threshold 0.05"
    assert opened["Current status"] == "remediating: rollback"
    assert resolved["Status"].startswith("critical, resolved after ")
    assert resolved["Current status"] == "resolved; ran: rollback"


@pytest.mark.parametrize(
    ("error", "status"),
    [("action_prohibited", 403), ("channel_not_found", 404), ("channel_is_archived", 410)],
)
async def test_documented_errors_are_not_retried(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeSlack,
    webhook_url: str,
    error: str,
    status: int,
) -> None:
    fake.error = error

    result = await make(webhook_url).execute(ctx, make_incident())

    assert len(fake.received) == 1
    assert clock.slept == []
    assert (result.ok, result.recoverable) == (False, False)
    assert (result.data["status"], result.data["response"]) == (status, error)
    assert_no_secret(result)


async def test_revoked_webhook_is_no_service(
    ctx: RemediationContext, fake: FakeSlack, base_url: str
) -> None:
    revoked = base_url + "/services/T000/B000/REVOKEDTOKEN"

    result = await make(revoked).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert (result.data["status"], result.data["response"]) == (404, "no_service")
    assert "REVOKEDTOKEN" not in repr(result)


async def test_429_is_retried_after_retry_after(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    fake.fail_next(429, retry_after=3)

    result = await make(webhook_url).execute(ctx, make_incident())

    assert result.ok
    assert len(fake.received) == 2
    assert len(fake.messages) == 1
    assert clock.slept == [3.0]


async def test_a_retry_after_beyond_the_budget_is_left_to_the_outbox(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    fake.fail_next(429, retry_after=120)

    result = await make(webhook_url).execute(ctx, make_incident())

    # Slack may disable an app that keeps posting while limited: not a single early retry.
    assert len(fake.received) == 1
    assert clock.slept == []
    assert (result.ok, result.recoverable, result.retry_after) == (False, True, 120.0)
    assert result.data["status"] == 429
    assert result.data["retry_after_seconds"] == 120.0
    assert '"error": "ratelimited"' in result.data["response"]
    assert_no_secret(result)


async def test_500_is_retried_with_backoff(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    fake.fail_next(500, count=2)

    result = await make(webhook_url, retry={"base_delay": "500ms"}).execute(ctx, make_incident())

    assert result.ok
    assert len(fake.received) == 3
    assert clock.slept == [0.5, 1.0]


async def test_exhausted_attempts_are_recoverable(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    fake.fail_next(500, count=4)

    result = await make(webhook_url).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, True)
    assert len(fake.received) == 4
    assert fake.messages == []
    assert clock.slept == [1.0, 2.0, 4.0]
    assert result.data["response"] == "rollup_error"
    assert_no_secret(result)


async def test_webhook_url_file(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str, tmp_path: Path
) -> None:
    url_file = tmp_path / "slack-webhook"
    url_file.write_text(webhook_url + "\n")
    config = SlackConfig.model_validate({"type": "slack", "webhook_url_file": str(url_file)})

    result = await SlackRemediation("tell-ops", config).execute(ctx, make_incident())

    assert result.ok
    assert len(fake.messages) == 1
    assert WEBHOOK_PATH not in repr(config)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"impact": ""}, "impact"),
        ({"update_every": "0s"}, "update_every"),
        ({"update_every": "30"}, "update_every"),
    ],
)
def test_template_config_validation(webhook_url: str, config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SlackConfig.model_validate({"type": "slack", "webhook_url": webhook_url, **config})


def test_template_defaults(webhook_url: str) -> None:
    config = SlackConfig.model_validate({"type": "slack", "webhook_url": webhook_url})
    assert (config.impact, config.update_every) == (None, 1800.0)


# --- the fake itself refuses what Slack refuses ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "invalid_payload"),
        (b'{"username": "bot"}', "application/json", 400, "no_text"),
        (b'{"blocks": [{"type": "section"}]}', "application/json", 400, "invalid_blocks"),
        (b'{"text": "hi"}', "application/json", 200, "ok"),
    ],
)
async def test_fake_answers_like_slack(
    session: aiohttp.ClientSession,
    webhook_url: str,
    body: bytes,
    content_type: str,
    status: int,
    error: str,
) -> None:
    async with session.post(webhook_url, data=body, headers={"Content-Type": content_type}) as r:
        assert (r.status, await r.text()) == (status, error)
