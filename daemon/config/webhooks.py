"""The `webhooks:` section: `POST /api/v1/webhooks/NAME` bodies mapped to alerts."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

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

    hmac_secret: SecretStr | None = Field(
        default=None,
        description="Requests carry `X-Runbookd-Timestamp: UNIX_SECONDS` and "
        "`X-Runbookd-Signature: sha256=HEX`, the HMAC-SHA256 with this secret of "
        "`TIMESTAMP.BODY`; each signature is accepted once. At least 16 characters.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Or: requests carry `Authorization: Bearer TOKEN`. At least 16 characters.",
    )
    tolerance: PositiveDuration = Field(
        default=300.0,
        le=3600,
        description="A signed request is accepted this long either side of runbookd's clock.",
    )

    _secret_length = field_validator("hmac_secret", "token")(long_enough)

    @model_validator(mode="after")
    def _one_method(self) -> WebhookAuth:
        if (self.hmac_secret is None) == (self.token is None):
            raise ValueError("give hmac_secret (or hmac_secret_file) or token, exactly one")
        return self


class WebhookConfig(StrictModel):
    """`POST /api/v1/webhooks/NAME`: a JSON body mapped to alerts by dotted paths. `status`
    reads as firing when it is one of `firing`, `alerting`, `triggered`, `open`, `critical`,
    `down`, `true`, and as resolved when one of `resolved`, `ok`, `normal`, `closed`,
    `recovered`, `cleared`, `up`, `inactive`, `false` (any case); anything else is refused with
    400 naming the path, so a typo never resolves an incident."""

    example: ClassVar[str] = """
        webhooks:
          uptime:                      # POST /api/v1/webhooks/uptime
            each: alerts
            fields:
              name: labels.alertname
              status: status
              summary: annotations.summary
              labels.instance: labels.instance
            auth: {hmac_secret: "${UPTIME_HMAC_SECRET}"}
        rules:
          site_down:
            when: {alert: SiteDown}
            do: [page_oncall]
        remediations:
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
        """

    fields: dict[str, DottedPath] = Field(
        max_length=64,
        description="Alert field -> dotted path into the body (or into each item of `each`). "
        "`name` (what `when: {alert: ...}` matches) and `status` are required; `fingerprint` "
        "(default: a hash of name and labels), `summary` and any number of `labels.LABEL` "
        "are optional.",
    )
    auth: WebhookAuth = Field(description="How the sender proves itself.")
    each: DottedPath | None = Field(
        default=None,
        description="The path of a list in the body: one alert per item, `fields` then "
        "relative to each item. Unset: the body is one alert.",
    )

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
