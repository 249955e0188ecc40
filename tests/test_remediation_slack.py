"""The `slack` remediation against a faithful local incoming webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from daemon.clock import ManualClock
from remediations.base import RemediationContext
from remediations.slack import SlackConfig, SlackRemediation
from tests.fakes import make_incident
from tests.fakes.slack import WEBHOOK_PATH, FakeSlack
from tests.utils import serve


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


async def test_incident_message(
    ctx: RemediationContext, fake: FakeSlack, base_url: str, webhook_url: str
) -> None:
    result = await make(webhook_url).execute(ctx, make_incident())

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
                    "text": {"type": "mrkdwn", "text": "Error rate 7.2% above 5% for 5m"},
                },
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": "*Severity*\ncritical"},
                        {"type": "mrkdwn", "text": "*Check*\nerror_rate"},
                        {"type": "mrkdwn", "text": "*Value*\n0.072 (threshold 0.05)"},
                        {"type": "mrkdwn", "text": "*Opened*\n2027-01-15 08:00:00 UTC"},
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


async def test_resolved_message(ctx: RemediationContext, fake: FakeSlack, webhook_url: str) -> None:
    incident = make_incident(resolved_at=1_800_000_900.0)

    result = await make(webhook_url).resolve(ctx, incident)

    assert result is not None
    assert result.ok
    [message] = fake.messages
    assert message["text"] == "[RESOLVED] high_error_rate: Error rate 7.2% above 5% for 5m"
    assert message["blocks"][0]["text"]["text"] == "✅ Resolved: high_error_rate"
    assert message["blocks"][2]["fields"] == [
        {"type": "mrkdwn", "text": "*Severity*\ncritical"},
        {"type": "mrkdwn", "text": "*Check*\nerror_rate"},
        {"type": "mrkdwn", "text": "*Opened*\n2027-01-15 08:00:00 UTC"},
        {"type": "mrkdwn", "text": "*Resolved*\n2027-01-15 08:15:00 UTC"},
    ]
    assert_no_secret(result)


async def test_resolved_time_defaults_to_now(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, webhook_url: str
) -> None:
    await clock.sleep(60)

    await make(webhook_url).resolve(ctx, make_incident())

    fields = fake.messages[0]["blocks"][2]["fields"]
    assert fields[-1]["text"] == "*Resolved*\n2027-01-15 08:01:00 UTC"


async def test_alert_text_cannot_mention_or_link(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    incident = make_incident(summary="<!channel> disk & <https://evil.example|click me>")

    await make(webhook_url).execute(ctx, incident)

    escaped = "&lt;!channel&gt; disk &amp; &lt;https://evil.example|click me&gt;"
    [message] = fake.messages
    assert message["text"] == f"[CRITICAL] high_error_rate: {escaped}"
    assert message["blocks"][1]["text"]["text"] == escaped


async def test_oversized_text_is_clipped_to_block_kit_limits(
    ctx: RemediationContext, fake: FakeSlack, webhook_url: str
) -> None:
    incident = make_incident(rule="r" * 300, summary="s" * 5000)

    result = await make(webhook_url).execute(ctx, incident)

    assert result.ok, result.data
    blocks = fake.messages[0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    assert blocks[1]["text"]["text"] == "s" * 2999 + "…"


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
    "config",
    [{}, {"webhook_url": "hooks.slack.com/services/x"}, {"webhook_url": "ftp://x/y"}],
)
def test_config_validation(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="webhook_url"):
        SlackConfig.model_validate({"type": "slack", **config})


def test_flags() -> None:
    assert SlackRemediation.notifier is True
    # A repeat posts the message twice: noise, not harm, but not idempotent either.
    assert SlackRemediation.idempotent is False
    assert SlackRemediation.destructive is False


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
