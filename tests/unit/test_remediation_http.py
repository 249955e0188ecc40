"""The `http` remediation's config: placeholders, URLs, authorization and side-effect flags."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from remediations.http import HttpRemediation, HttpRemediationConfig

TOKEN = "tok-5f0c9a7e1b2d4c6e8a0b"


def make(url: str, **config: Any) -> HttpRemediation:
    model = HttpRemediationConfig.model_validate({"type": "http", "url": url, **config})
    return HttpRemediation("webhook", model)


@pytest.mark.parametrize(
    "body",
    [
        {"id": "{{ incident.nope }}"},
        ["{{ incident.id }}", {"deep": "x {{ os.environ }} y"}],
        "{{ incident.summary.__class__ }}",
        {"{{ incident.id }}": "keys are not templated"},
    ],
)
def test_bad_placeholders_are_config_errors(body: Any) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        make("http://127.0.0.1:1/", body=body)


def test_config_rejects_bad_urls_and_double_authorization() -> None:
    with pytest.raises(ValidationError, match="http"):
        make("ftp://example.com/")
    with pytest.raises(ValidationError, match="not both"):
        make("http://example.com/", token=TOKEN, headers={"authorization": "Basic x"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        make("http://example.com/", bogus=1)


def test_side_effect_flags() -> None:
    assert HttpRemediation.idempotent is False
    assert HttpRemediation.destructive is False
    assert HttpRemediation.notifier is False
    assert make("http://example.com/").idempotent is False
    assert make("http://example.com/", idempotent=True).idempotent is True
    assert make("http://example.com/").notifier is False
    assert make("http://example.com/", notifier=True).notifier is True  # a paging webhook
