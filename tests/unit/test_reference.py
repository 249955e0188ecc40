"""The configuration reference (daemon/config/reference.py): docs/configuration.md is its output,
every key has a meaning, and every example in it is a config `runbookd check-config` accepts."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from checks.base import CHECKS
from daemon.cli.main import main
from daemon.config.check import check_config_main
from daemon.config.document import RunbookConfig
from daemon.config.loader import load_config_text
from daemon.config.reference import reference
from daemon.config.settings import DaemonSettings
from daemon.config.webhooks import WebhookConfig
from daemon.core import plugins
from daemon.deploys.config import DeploysConfig
from daemon.jobs.config import JobConfig
from daemon.rules.config import AlertMatch, RuleConfig
from remediations.base import REMEDIATIONS
from tests.paths import ROOT

DOC = ROOT / "docs" / "configuration.md"
REGENERATE = "make docs (or: .venv/bin/runbookd config reference > docs/configuration.md)"

plugins.load()
TYPES = [("checks", name, CHECKS.get(name).Config) for name in CHECKS]
TYPES += [("remediations", name, REMEDIATIONS.get(name).Config) for name in REMEDIATIONS]
EXAMPLES: dict[str, type[BaseModel]] = {f"{section}.{name}": m for section, name, m in TYPES}
EXAMPLES |= {
    "runbookd": DaemonSettings,
    "rules (on check values)": RuleConfig,
    "rules (on alerts)": AlertMatch,
    "webhooks": WebhookConfig,
    "jobs": JobConfig,
    "deploys": DeploysConfig,
}


def test_docs_configuration_md_is_the_generated_reference() -> None:
    written = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert written == reference(), f"docs/configuration.md is out of date: run {REGENERATE}"


def test_the_command_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == reference()


def test_the_reference_does_not_change_between_calls() -> None:
    assert reference() == reference()


@pytest.mark.parametrize("where", sorted(EXAMPLES))
def test_every_example_passes_check_config(
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = inspect.cleandoc(getattr(EXAMPLES[where], "example", ""))
    assert example, f"{where} has no example"
    # Each ${VAR} distinct (tokens must differ), long enough for a secret, and a URL for the
    # fields that want one (a Slack webhook).
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", example)):
        monkeypatch.setenv(name, f"https://secrets.example.com/{name}/0123456789abcdef")
    path = tmp_path / "runbookd.yaml"
    path.write_text(example, encoding="utf-8")
    assert check_config_main(str(path)) == 0, capsys.readouterr().err
    config = load_config_text(example)
    section, _, kind = where.partition(".")
    if kind:  # a type's example configures that type
        entries = getattr(config, section).values()
        assert kind in {entry.type for entry in entries}


def _nested(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    def models(tp: Any) -> Iterator[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            yield tp
        for arg in get_args(tp):
            yield from models(arg)

    yield model
    for field in model.model_fields.values():
        for sub in models(field.annotation):
            yield from _nested(sub)


def test_every_key_has_a_meaning_and_every_type_an_introduction() -> None:
    roots = [RunbookConfig, AlertMatch, *(model for _, _, model in TYPES)]
    types = {model for _, _, model in TYPES}  # their `type:` is the section's title
    missing = sorted(
        f"{model.__qualname__}.{name}"
        for root in roots
        for model in _nested(root)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip() and not (model in types and name == "type")
    )
    assert missing == []
    assert [name for _, name, model in TYPES if not model.__doc__] == []


def test_the_gaps_a_new_user_hit_are_documented() -> None:
    text = reference()
    for needed in (
        "requests_metric",
        "status_label",
        "http_request_duration_seconds",
        "min_requests",
        "or vector(0)",
        "events_url",
        "RUNBOOKD_INCIDENT_ID",
        "RUNBOOKD_RULE",
        "RUNBOOKD_CHECK",
        "Authorization: Bearer TOKEN",
        "An incident is per rule episode",
    ):
        assert needed in text, needed
    rows = {line.split(" | ")[0] for line in text.splitlines() if line.startswith("| `")}
    for key in ("budget", "cooldown", "clear_for", "verify_within", "escalate", "timeout"):
        assert f"| `{key}`" in rows, key
