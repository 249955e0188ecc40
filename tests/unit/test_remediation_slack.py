"""The `slack` remediation's config, flags and duration formatting."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from remediations.base import Announcement, can_announce
from remediations.slack import SlackConfig, SlackRemediation, announcement_message, duration
from tests.fakes.slack import check_message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (900, "15m"),
        (3600, "1h"),
        (3900, "1h 5m"),
        (3605, "1h 5s"),
        (97_205, "1d 3h"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


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


def test_an_announcement_is_a_message_slack_takes_with_its_text_escaped() -> None:
    facts = tuple((f"Fact {i}", f"value <{i}>") for i in range(12))
    message = announcement_message(Announcement("Rolled back <@channel> & more", facts))
    assert check_message(message) is None
    assert message["text"] == "Rolled back &lt;@channel&gt; &amp; more"
    fields = message["blocks"][1]["fields"]
    assert len(fields) == 10  # Slack's limit
    assert fields[0]["text"] == "*Fact 0*\nvalue &lt;0&gt;"
    assert can_announce(SlackRemediation)


async def test_a_procedure_step_posts_what_runs_and_who_started_it() -> None:
    from daemon.procedures.models import ProcedureRun
    from daemon.procedures.runner import run_incident
    from remediations.slack import procedure_message

    run = ProcedureRun("run-1", "app_rollback", {"version": "v1.2.2"}, "ana", 0.0, [])
    message = procedure_message(run_incident(run, "announce"))
    assert message is not None
    assert message["text"] == (
        "Procedure app_rollback, step announce (run run-1, started by ana at 1970-01-01T00:00:00Z)"
    )
    fields = message["blocks"][1]["fields"]
    assert [f["text"] for f in fields] == ["*version*\nv1.2.2"]
    failed = procedure_message(run_incident(run, "on_failure", "rollback failed: HTTP 400"))
    assert failed is not None
    assert failed["text"].startswith("🔴 procedure app_rollback failed: rollback failed: HTTP 400")
