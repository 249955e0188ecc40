"""`http`: call a URL with a JSON body built from the incident.

Templates are data substitution only: `{{ incident.id }}` is looked up in a dict of incident
facts and the value is inserted as JSON data. Nothing is formatted, evaluated or rendered
by a template engine, so an alert's text can never change the shape of the request.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, JsonValue, SecretStr, field_validator, model_validator

from daemon.core.models import Incident, RemediationResult
from remediations.base import (
    NOTIFIER_FIELD,
    PARAMS,
    REMEDIATIONS,
    Hooks,
    RemediationConfig,
    RemediationContext,
    incident_fields,
)
from remediations.retry import RetryingConfig, check_http_url, safe_url, send_json

# `[^{}]*` keeps "{{ a }} and {{ b }}" from matching as one placeholder.
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_SAMPLE = Incident(id="", rule="", check="", severity="", summary="", opened_at=0.0)
TEMPLATE_FIELDS = frozenset(incident_fields(_SAMPLE))
# Header names whose values are masked if a server echoes them back.
_SECRET_HEADER_HINTS = (
    "auth",
    "key",
    "token",
    "secret",
    "signature",
    "cookie",
    "credential",
    "pass",
    "session",
)

StatusCode = Annotated[int, Field(ge=100, le=599)]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def check_template(template: JsonValue) -> None:
    """Refuse unknown placeholders at config load, not at 3am when the incident fires."""
    if isinstance(template, str):
        for match in _PLACEHOLDER.finditer(template):
            name = match.group(1).strip()
            if name not in TEMPLATE_FIELDS and not name.startswith(PARAMS):
                known = ", ".join(sorted(TEMPLATE_FIELDS))
                raise ValueError(f"unknown placeholder {match.group(0)!r} (known: {known})")
    elif isinstance(template, list):
        for item in template:
            check_template(item)
    elif isinstance(template, dict):
        for key, item in template.items():
            if _PLACEHOLDER.search(key):
                raise ValueError(f"placeholders belong in values, not keys: {key!r}")
            check_template(item)


def render(template: JsonValue, fields: Mapping[str, Any]) -> JsonValue:
    """Copy `template`, substituting placeholders in string values."""
    if isinstance(template, str):
        return _render_text(template, fields)
    if isinstance(template, list):
        return [render(item, fields) for item in template]
    if isinstance(template, dict):
        return {key: render(item, fields) for key, item in template.items()}
    return template


def _render_text(text: str, fields: Mapping[str, Any]) -> JsonValue:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        # The raw value: a number stays a number, a missing value becomes null.
        # A parameter outside a procedure's run is missing: null.
        value: JsonValue = fields.get(whole.group(1).strip())
        return value
    return _PLACEHOLDER.sub(lambda m: _as_text(fields.get(m.group(1).strip())), text)


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


class HttpRemediationConfig(RetryingConfig):
    """Calls a URL (`POST` by default) with a JSON body built from the incident, e.g. a
    deploy system's rollback hook. Placeholders in the body's string values,
    `{{ incident.id }}`, `incident.rule`, `incident.check`, `incident.severity`,
    `incident.summary`, `incident.status`, `incident.opened_at`, `incident.value`,
    `incident.threshold`, and in a procedure's step `params.NAME`, are filled in as JSON data,
    never evaluated: a string that is one placeholder takes its value as is (a number stays a
    number, a missing value is null).
    Success is a status in `expect_status`, by default any 2xx; redirects are not followed
    (and fail). Failed calls are retried as `retry` says."""

    example: ClassVar[str] = """
        remediations:
          rollback:
            type: http
            url: https://deploy.internal/api/rollback
            token: ${DEPLOY_TOKEN}
            body:
              service: web
              reason: "runbookd {{ incident.id }}"
              error_ratio: "{{ incident.value }}"   # a number, or null
            cooldown: 30m
            timeout: 10s
        """

    type: Literal["http"]
    url: str = Field(description="The http(s) URL to call.")
    method: Method = Field("POST", description="The request method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    token: SecretStr | None = Field(
        None,
        description="Sent as `Authorization: Bearer TOKEN` (not with an `Authorization` "
        "header); `token_file` reads it from a file.",
    )
    body: JsonValue = Field(
        None, description="The JSON body, with placeholders; null sends no body."
    )
    resolve_body: JsonValue = Field(
        None,
        description="If set, POSTed to the same URL (with placeholders) once the incident "
        "resolves.",
    )
    expect_status: list[StatusCode] = Field(
        default_factory=list,
        description="The statuses that count as success; empty: any 2xx.",
    )
    idempotent: bool = Field(
        False,
        description="Declares that the same call twice does no harm; a run a crash "
        "interrupted is never repeated whatever it says.",
    )
    notifier: bool = NOTIFIER_FIELD

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("body", "resolve_body")
    @classmethod
    def _template(cls, value: JsonValue) -> JsonValue:
        check_template(value)
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpRemediationConfig:
        if self.token is not None and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError("give token or an Authorization header, not both")
        return self


@REMEDIATIONS.register
class HttpRemediation(Hooks):
    type: ClassVar[str] = "http"
    Config: ClassVar[builtins.type[RemediationConfig]] = HttpRemediationConfig
    # Conservative class defaults; an instance follows its config (see __init__).
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: HttpRemediationConfig) -> None:
        self.name = name
        self.config = config
        # The operator knows whether the endpoint tolerates the same call twice, and whether
        # it only tells people.
        self.idempotent = config.idempotent
        self.notifier = config.notifier

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        body = render(self.config.body, incident_fields(incident))
        return await self._call(ctx, self.config.method, body)

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        if self.config.resolve_body is None:
            return None
        return await self._call(
            ctx, "POST", render(self.config.resolve_body, incident_fields(incident))
        )

    async def _call(
        self, ctx: RemediationContext, method: str, body: JsonValue
    ) -> RemediationResult:
        config = self.config
        headers = dict(config.headers)
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        outcome = await send_json(
            ctx,
            method,
            config.url,
            body,
            headers=headers,
            attempt_timeout=config.timeout,
            attempts=config.retry.attempts,
            base_delay=config.retry.base_delay,
            max_delay=config.retry.max_delay,
            expect=config.expect_status,
            redact_values=self._secrets(),
        )
        request = {
            "method": method,
            "url": safe_url(config.url),
            # Names only: header values may be credentials.
            "headers": sorted(headers),
            "has_body": body is not None,
        }
        return outcome.result(f"{method} {safe_url(config.url)}", request)

    def _secrets(self) -> list[str]:
        secrets = [v for k, v in self.config.headers.items() if _looks_secret(k)]
        if self.config.token is not None:
            secrets.append(self.config.token.get_secret_value())
        return secrets


def _looks_secret(header: str) -> bool:
    name = header.lower()
    return any(hint in name for hint in _SECRET_HEADER_HINTS)
