"""`pagerduty`: page through the PagerDuty Events API v2 (trigger on open, resolve on close).

The incident id is the dedup_key, so a repeated trigger lands on the same alert and the
resolve closes exactly the alert we opened.
"""

from __future__ import annotations

import builtins
import socket
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from daemon.models import Incident, RemediationResult
from daemon.units import StrictModel
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig, check_http_url, safe_url, send_json

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024


class PagerDutyLink(StrictModel):
    href: str
    text: str | None = None

    @field_validator("href")
    @classmethod
    def _href(cls, value: str) -> str:
        return check_http_url(value)


class PagerDutyConfig(RetryingConfig):
    model_config = RemediationConfig.model_config | {"populate_by_name": True}

    type: Literal["pagerduty"]
    # The 32-character integration key of an Events API v2 integration.
    routing_key: SecretStr
    events_url: str = EVENTS_URL
    source: str = Field(default_factory=socket.gethostname, min_length=1)
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    client_url: str | None = None
    links: list[PagerDutyLink] = Field(default_factory=list)

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("routing_key is empty")
        return value

    @field_validator("events_url", "client_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)


def pagerduty_severity(severity: str) -> str:
    """PagerDuty knows four severities; anything else pages as `error`, not silently `info`."""
    severity = severity.lower()
    return severity if severity in SEVERITIES else "error"


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


@REMEDIATIONS.register
class PagerDutyRemediation(Hooks):
    type: ClassVar[str] = "pagerduty"
    Config: ClassVar[builtins.type[RemediationConfig]] = PagerDutyConfig
    # The dedup_key makes a repeated trigger harmless.
    idempotent: bool = True
    destructive: bool = False
    notifier: bool = True

    def __init__(self, name: str, config: PagerDutyConfig) -> None:
        self.name = name
        self.config = config

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        event = self.trigger_event(incident)
        payload = event["payload"]
        request = {
            "url": safe_url(self.config.events_url),
            "event_action": "trigger",
            "dedup_key": incident.id,
            "severity": payload["severity"],
            "summary": payload["summary"],
        }
        return await self._send(ctx, event, request)

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        event = {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": "resolve",
            "dedup_key": incident.id,
        }
        request = {
            "url": safe_url(self.config.events_url),
            "event_action": "resolve",
            "dedup_key": incident.id,
        }
        return await self._send(ctx, event, request)

    def trigger_event(self, incident: Incident) -> dict[str, Any]:
        config = self.config
        event: dict[str, Any] = {
            "routing_key": config.routing_key.get_secret_value(),
            "event_action": "trigger",
            "dedup_key": incident.id,
            "payload": self._payload(incident),
            "client": "runbookd",
        }
        if config.client_url is not None:
            event["client_url"] = config.client_url
        if config.links:
            event["links"] = [link.model_dump(exclude_none=True) for link in config.links]
        return event

    def _payload(self, incident: Incident) -> dict[str, Any]:
        config = self.config
        # PagerDuty refuses a blank summary; the rule and check still say what is wrong.
        summary = incident.summary.strip() or f"{incident.rule} on {incident.check}"
        payload: dict[str, Any] = {
            "summary": summary[:SUMMARY_LIMIT],
            "source": config.source,
            "severity": pagerduty_severity(incident.severity),
            "timestamp": iso8601(incident.opened_at),
        }
        optional = {"component": config.component, "group": config.group, "class": config.class_}
        payload.update({key: value for key, value in optional.items() if value is not None})
        payload["custom_details"] = {
            "rule": incident.rule,
            "check": incident.check,
            "value": incident.trigger.get("value"),
            "threshold": incident.trigger.get("threshold"),
            "incident_id": incident.id,
        }
        return payload

    async def _send(
        self, ctx: RemediationContext, event: dict[str, Any], request: dict[str, Any]
    ) -> RemediationResult:
        config = self.config
        outcome = await send_json(
            ctx,
            "POST",
            config.events_url,
            event,
            attempt_timeout=config.timeout,
            attempts=config.retry.attempts,
            base_delay=config.retry.base_delay,
            max_delay=config.retry.max_delay,
            redact_values=[config.routing_key.get_secret_value()],
        )
        return outcome.result(f"PagerDuty {event['event_action']} {event['dedup_key']}", request)
