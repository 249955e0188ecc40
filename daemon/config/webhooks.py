"""The `webhooks:` section: `POST /api/v1/webhooks/NAME` bodies mapped to alerts."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from daemon.config.settings import long_enough
from daemon.core.units import PositiveDuration, SecretsModel, StrictModel

WEBHOOK_FIELDS = frozenset({"name", "status", "fingerprint", "summary"})
_LABEL_FIELD = re.compile(r"^labels\.[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[^.\s]+(?:\.[^.\s]+)*$")


def _dotted_path(value: str) -> str:
    if len(value) > 256 or not _DOTTED.match(value):
        raise ValueError(f"not a dotted path into the body: {value!r} (e.g. alert.title)")
    return value


DottedPath = Annotated[str, AfterValidator(_dotted_path)]


class WebhookAuth(SecretsModel):
    """How a sender proves itself: an HMAC-SHA256 signature (preferred) or a bearer token."""

    hmac_secret: SecretStr | None = None
    token: SecretStr | None = None
    # A signed request is accepted this long either side of our clock (replay protection).
    tolerance: PositiveDuration = Field(default=300.0, le=3600)

    _secret_length = field_validator("hmac_secret", "token")(long_enough)

    @model_validator(mode="after")
    def _one_method(self) -> WebhookAuth:
        if (self.hmac_secret is None) == (self.token is None):
            raise ValueError("give hmac_secret (or hmac_secret_file) or token, exactly one")
        return self


class WebhookConfig(StrictModel):
    """`POST /api/v1/webhooks/NAME`: a JSON body mapped to an alert by dotted paths."""

    fields: dict[str, DottedPath] = Field(max_length=64)
    auth: WebhookAuth
    # The path of a list of alerts in the body; `fields` are then relative to each item.
    each: DottedPath | None = None

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key == "labels.alertname":
                raise ValueError("labels.alertname: the alert name comes from `name`")
            if key not in WEBHOOK_FIELDS and not _LABEL_FIELD.match(key):
                known = "name, status, fingerprint, summary or labels.<label>"
                raise ValueError(f"unknown field {key!r} (known: {known})")
        missing = [key for key in ("name", "status") if key not in value]
        if missing:
            raise ValueError(f"needs {' and '.join(missing)}")
        return value
