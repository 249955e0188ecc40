"""The `command` remediation's config, flags and resolve, and that it never uses a shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.config.loader import load_config_text
from remediations.base import RemediationContext
from remediations.command import CommandConfig, CommandRemediation
from tests.fakes import make_incident


def make(argv: list[str], **config: Any) -> CommandRemediation:
    model = CommandConfig.model_validate({"type": "command", "argv": argv, **config})
    return CommandRemediation("restart", model)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"argv": []}, "at least 1 item"),
        ({"argv": "systemctl restart web"}, "valid list"),
        ({"argv": [""]}, "at least 1 character"),
        ({"argv": ["/bin/echo", "a\0b"]}, "NUL"),
        ({"argv": ["/bin/true"], "env": {"RUNBOOKD_RULE": "x"}}, "set by runbookd"),
        ({"argv": ["/bin/true"], "env": {"A=B": "x"}}, "invalid environment"),
        ({"argv": ["/bin/true"], "ok_exit_codes": []}, "at least 1 item"),
        ({"argv": ["/bin/true"], "shell": True}, "Extra inputs"),
    ],
)
def test_config_validation(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CommandConfig.model_validate({"type": "command", **config})


async def test_resolve_does_nothing_and_flags(ctx: RemediationContext) -> None:
    remediation = make(["/bin/true"], idempotent=True)

    assert await remediation.resolve(ctx, make_incident()) is None
    assert remediation.idempotent is True
    assert make(["/bin/true"]).idempotent is False
    assert CommandRemediation.idempotent is False
    assert CommandRemediation.destructive is False
    assert CommandRemediation.notifier is False
    assert make(["/bin/true"]).notifier is False
    assert make(["/bin/true"], notifier=True).notifier is True  # a pager script


def test_runs_without_a_shell() -> None:
    # Belt and braces: the module must not reach for a shell anywhere.
    source = Path(sys.modules[CommandRemediation.__module__].__file__ or "").read_text()
    assert "create_subprocess_shell" not in source
    assert "shell=True" not in source


def test_a_command_or_http_remediation_declared_a_notifier_may_page_when_blind() -> None:
    text = """
checks:
  api: {type: http, url: "http://127.0.0.1:9/health"}
rules:
  r:
    when: api.up < 1
    on_blind: [page_script, page_hook]
remediations:
  page_script: {type: command, argv: [/usr/local/bin/page], notifier: true}
  page_hook: {type: http, url: "http://127.0.0.1:9/page", notifier: true}
"""
    config = load_config_text(text, "c.yaml")
    assert config.rules["r"].on_blind == ["page_script", "page_hook"]
