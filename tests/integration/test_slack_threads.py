"""The `slack` remediation's bot-token mode against a faithful local chat.postMessage: the
opening message in the channel, its updates and its resolution in its thread (after a restart
too), and Slack's documented refusals (`ok: false` errors, 429 with Retry-After)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from daemon.config.loader import load_config
from daemon.config.problems import ConfigError
from daemon.core.clock import ManualClock
from daemon.core.models import UPDATE_PHASE, Step, StepFacts, TimelineEntry
from daemon.pipeline.updates import Updates
from remediations.base import RemediationContext
from remediations.slack import SlackConfig, SlackRemediation, thread_of
from tests.fakes import make_incident
from tests.fakes.slack import INCIDENTS, TOKEN, FakeSlack
from tests.memory_store import MemoryData
from tests.utils import serve
from tests.world import FakeAction, World, make_world

EVERY = 1800.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(autojump=True)


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
async def api_url(fake: FakeSlack) -> AsyncIterator[str]:
    async with serve(fake.app) as url:
        yield url + "/api"


def bot(api_url: str, **config: Any) -> SlackRemediation:
    data = {"type": "slack", "bot_token": TOKEN, "channel": "#incidents", "api_url": api_url}
    return SlackRemediation("tell-ops", SlackConfig.model_validate(data | config))


def fields_of(body: dict[str, Any]) -> dict[str, str]:
    [section] = [block for block in body["blocks"] if "fields" in block]
    pairs = [field["text"].split("\n", 1) for field in section["fields"]]
    return {label.strip("*"): value for label, value in pairs}


def updating(w: World[Any]) -> Updates:
    return Updates(
        w.pipeline.actor,
        w.pipeline.outbox,
        incidents=lambda: w.engine.incidents.values(),
        public_every=lambda incident: None,
    )


def world(
    session: aiohttp.ClientSession, api_url: str, data: MemoryData, clock: ManualClock
) -> World[Any]:
    rule = {"when": "app.error_ratio > 5%", "for": "3s", "do": ["rollback", "tell-ops"]}
    actions: dict[str, Any] = {"rollback": FakeAction("rollback"), "tell-ops": bot(api_url)}
    w = make_world({"errors": rule}, actions, data=data, clock=clock)
    w.pipeline.ctx = RemediationContext(session, w.clock)
    return w


async def test_updates_and_the_resolution_go_in_the_opening_messages_thread_across_a_restart(
    session: aiohttp.ClientSession, fake: FakeSlack, api_url: str
) -> None:
    data, clock = MemoryData(), ManualClock()
    w = world(session, api_url, data, clock)
    for _ in range(5):
        await w.see(0.2)
    assert await w.pipeline.idle(5.0)
    [opening] = fake.posted
    assert (opening.channel, opening.thread_ts) == (INCIDENTS, None)
    assert fields_of(opening.body)["Status"] == "critical, open"
    incident = await w.stored(w.opened[0].id)
    # The opening message's ts is on the timeline, in the result of its run.
    assert thread_of(incident, "tell-ops") is not None
    assert thread_of(incident, "tell-ops").ts == opening.ts  # type: ignore[union-attr]

    await clock.advance(EVERY)
    assert await updating(w).round() == 1
    assert await w.pipeline.idle(5.0)
    [first] = fake.thread(opening.ts)
    fields = fields_of(first.body)
    assert fields["Status"] == "critical, open: identified"  # the rollback ran
    assert fields["Current status"] == "remediating: rollback"
    assert (first.channel, first.broadcast) == (INCIDENTS, False)

    after = world(session, api_url, data, clock)  # the daemon restarts
    await after.engine.restore()
    loop = updating(after)
    assert await loop.round() == 0
    await clock.advance(EVERY)
    assert await loop.round() == 1
    assert await after.pipeline.idle(5.0)
    await after.see(0.0)  # resolved
    assert await after.pipeline.idle(5.0)

    replies = fake.thread(opening.ts)
    assert len(replies) == 3
    assert len(fake.posted) == 4
    resolved = replies[-1]
    assert fields_of(resolved.body)["Status"].startswith("critical, resolved after ")
    assert resolved.broadcast  # the resolution shows in the channel too
    stored = await after.stored(incident.id)
    results = [e for e in stored.timeline if e.kind == Step.RESULT and e.step is not None]
    updates = [e for e in results if e.step and e.step.phase == UPDATE_PHASE]
    assert [e.data["thread"]["ts"] for e in updates] == [opening.ts, opening.ts]
    assert TOKEN not in repr(stored.to_json())


async def test_a_second_run_in_escalate_replies_in_the_thread(
    ctx: RemediationContext, fake: FakeSlack, api_url: str
) -> None:
    remediation = bot(api_url)
    first = await remediation.execute(ctx, make_incident())
    assert first.ok
    assert first.data["thread"] == {"channel": INCIDENTS, "ts": fake.posted[0].ts}
    incident = make_incident(timeline=[_result_of("tell-ops", first.data)])
    second = await remediation.execute(ctx, incident)
    assert second.ok
    assert fake.posted[1].thread_ts == fake.posted[0].ts
    assert fields_of(fake.posted[1].body)["Status"].startswith("critical, open: ")


def _result_of(name: str, data: dict[str, Any]) -> TimelineEntry:
    facts = StepFacts(name, "slack", "do", True).data()
    return TimelineEntry(1_800_000_010.0, Step.RESULT, f"{name} succeeded", data | facts)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"channel": "#elsewhere"}, "not_in_channel"),
        ({"channel": "C0NOSUCH"}, "channel_not_found"),
        ({"channel": "C0ARCHIVED"}, "is_archived"),
        ({"bot_token": "xoxb-wrong"}, "invalid_auth"),
    ],
)
async def test_documented_refusals_are_not_retried(
    ctx: RemediationContext,
    clock: ManualClock,
    fake: FakeSlack,
    api_url: str,
    config: dict[str, Any],
    error: str,
) -> None:
    result = await bot(api_url, **config).execute(ctx, make_incident())

    assert (result.ok, result.recoverable) == (False, False)
    assert result.detail.endswith(f"Slack said {error}")
    assert len(fake.received) == 1
    assert clock.slept == []
    assert fake.posted == []
    assert TOKEN not in repr(result)
    assert "xoxb-wrong" not in repr(result)


@pytest.mark.parametrize(
    ("error", "recoverable"),
    [
        ("token_revoked", False),
        ("msg_too_long", False),
        ("fatal_error", False),  # it may have posted: not again
        ("ratelimited", True),
        ("internal_error", True),
    ],
)
async def test_ok_false_errors_are_recoverable_only_when_slack_says_transient(
    ctx: RemediationContext, fake: FakeSlack, api_url: str, error: str, recoverable: bool
) -> None:
    fake.error = error
    result = await bot(api_url).execute(ctx, make_incident())
    assert (result.ok, result.recoverable) == (False, recoverable)
    assert len(fake.received) == 1


async def test_429_is_waited_out_or_left_to_the_outbox(
    ctx: RemediationContext, clock: ManualClock, fake: FakeSlack, api_url: str
) -> None:
    fake.fail_next(429, retry_after=3)
    assert (await bot(api_url).execute(ctx, make_incident())).ok
    assert clock.slept == [3.0]
    assert len(fake.posted) == 1

    fake.fail_next(429, retry_after=120)
    result = await bot(api_url).execute(ctx, make_incident())
    assert (result.ok, result.recoverable, result.retry_after) == (False, True, 120.0)
    assert clock.slept == [3.0]  # not a single early retry
    assert len(fake.posted) == 1


async def test_the_token_is_sent_as_a_bearer_and_never_kept(
    ctx: RemediationContext, fake: FakeSlack, api_url: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "slack-token"
    token_file.write_text(TOKEN + "\n")
    config = SlackConfig.model_validate(
        {"type": "slack", "bot_token_file": str(token_file), "channel": INCIDENTS}
        | {"api_url": api_url}
    )
    result = await SlackRemediation("tell-ops", config).execute(ctx, make_incident())
    assert result.ok
    assert fake.received[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake.received[0].body["channel"] == INCIDENTS
    assert TOKEN not in repr(result)
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({}, "give webhook_url"),
        ({"webhook_url": "https://hooks.slack.com/services/T/B/X", "bot_token": TOKEN}, "not both"),
        ({"bot_token": TOKEN}, "bot_token needs channel"),
        (
            {"webhook_url": "https://hooks.slack.com/services/T/B/X", "channel": "C1"},
            "channel goes with bot_token",
        ),
        ({"bot_token": TOKEN, "channel": "C1", "api_url": "slack.com/api"}, "api_url"),
    ],
)
def test_exactly_one_way_to_post(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SlackConfig.model_validate({"type": "slack", **config})


def test_a_config_with_both_ways_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(
        "checks:\n  app:\n    type: http\n    url: http://127.0.0.1:9/\n"
        "remediations:\n  tell-ops:\n    type: slack\n"
        "    webhook_url: https://hooks.slack.com/services/T/B/X\n"
        f"    bot_token: {TOKEN}\n    channel: C1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:6 remediations.tell-ops" in text  # the entry's line
    assert "not both" in text
    assert TOKEN not in text


async def test_a_rate_limited_update_waits_in_the_outbox_then_goes_in_the_thread(
    session: aiohttp.ClientSession, fake: FakeSlack, api_url: str
) -> None:
    clock = ManualClock()
    w = world(session, api_url, MemoryData(), clock)
    for _ in range(5):
        await w.see(0.2)
    assert await w.pipeline.idle(5.0)
    [opening] = fake.posted
    fake.fail_next(429, retry_after=120)
    await clock.advance(EVERY)
    assert await updating(w).round() == 1  # recorded and queued, whatever Slack says
    assert await w.pipeline.idle(5.0)
    assert fake.posted == [opening]
    [waiting] = await w.store.outbox_pending(w.opened[0].id)
    assert waiting.phase == UPDATE_PHASE
    assert waiting.next_at == clock.now() + 120  # Slack's Retry-After, in full

    await clock.advance(119)
    await w.pipeline.outbox._retry_due()
    assert fake.posted == [opening]  # not a single early retry
    await clock.advance(1)
    await w.pipeline.outbox._retry_due()
    [reply] = fake.thread(opening.ts)
    assert fields_of(reply.body)["Status"] == "critical, open: identified"
    assert await w.store.outbox_pending(w.opened[0].id) == []
