"""`slack`: post the incident to a Slack incoming webhook, and again when it resolves.

The webhook URL is the credential (anyone holding it can post), so it is a secret and only
its scheme and host ever appear in results. Not idempotent: a repeat posts twice, which is
noise rather than harm.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import SecretStr, field_validator
from yarl import URL

from daemon.models import Incident, RemediationResult
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig, check_http_url, safe_url, send_json

# Slack Block Kit limits: header text 150 characters, section text 3000, a field 2000.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
SEVERITY_MARK = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵"}


class SlackConfig(RetryingConfig):
    type: Literal["slack"]
    # https://hooks.slack.com/services/T.../B.../...; prefer webhook_url_file.
    webhook_url: SecretStr

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        check_http_url(value.get_secret_value())
        return value


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: alert text must not become a link or an @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{label}*\n{escape(value)}", FIELD_LIMIT)}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: object) -> str:
    return "n/a" if value is None else str(value)


def _message(
    header: str, fallback: str, incident: Incident, fields: list[dict[str, str]]
) -> dict[str, Any]:
    summary = incident.summary.strip() or f"{incident.rule} on {incident.check}"
    return {
        "text": escape(fallback),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(header, HEADER_LIMIT), "emoji": True},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(escape(summary), SECTION_LIMIT)},
            },
            {"type": "section", "fields": fields},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": escape(f"incident {incident.id} · runbookd")}
                ],
            },
        ],
    }


def opened_message(incident: Incident) -> dict[str, Any]:
    severity = incident.severity
    value, threshold = incident.trigger.get("value"), incident.trigger.get("threshold")
    fields = [
        _field("Severity", severity),
        _field("Check", incident.check),
        _field("Value", f"{_number(value)} (threshold {_number(threshold)})"),
        _field("Opened", _when(incident.opened_at)),
    ]
    mark = SEVERITY_MARK.get(severity, "⚠️")
    return _message(
        f"{mark} {incident.rule}",
        f"[{severity.upper()}] {incident.rule}: {incident.summary}",
        incident,
        fields,
    )


def resolved_message(incident: Incident, resolved_at: float) -> dict[str, Any]:
    fields = [
        _field("Severity", incident.severity),
        _field("Check", incident.check),
        _field("Opened", _when(incident.opened_at)),
        _field("Resolved", _when(resolved_at)),
    ]
    return _message(
        f"✅ Resolved: {incident.rule}",
        f"[RESOLVED] {incident.rule}: {incident.summary}",
        incident,
        fields,
    )


def _secret_parts(url: str) -> list[str]:
    """The URL and its path (the part that identifies the webhook), to mask in results."""
    path = URL(url).path
    return [url, path] if len(path) > 1 else [url]


@REMEDIATIONS.register
class SlackRemediation(Hooks):
    type: ClassVar[str] = "slack"
    Config: ClassVar[builtins.type[RemediationConfig]] = SlackConfig
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = True

    def __init__(self, name: str, config: SlackConfig) -> None:
        self.name = name
        self.config = config

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        return await self._post(ctx, incident, opened_message(incident))

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        resolved_at = incident.resolved_at if incident.resolved_at is not None else ctx.clock.now()
        return await self._post(ctx, incident, resolved_message(incident, resolved_at))

    async def _post(
        self, ctx: RemediationContext, incident: Incident, message: dict[str, Any]
    ) -> RemediationResult:
        url = self.config.webhook_url.get_secret_value()
        retry = self.config.retry
        outcome = await send_json(
            ctx,
            "POST",
            url,
            message,
            attempt_timeout=self.config.timeout,
            attempts=retry.attempts,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            redact_values=_secret_parts(url),
        )
        request = {"url": safe_url(url), "text": message["text"]}
        return outcome.result(f"Slack message for {incident.id}", request)
