"""PagerDuty Events API v2: `pagerduty` pages, `pagerduty_change` records what runbookd changed.

`pagerduty` triggers an alert when the incident opens and resolves it when it closes. The
incident id is the dedup_key, so a repeated trigger lands on the same alert and the resolve
closes exactly the alert we opened.

`pagerduty_change` sends a Change Event (POST /v2/change/enqueue) naming the actions
runbookd took, such as a rollback or a scale-out, so responders see them on the service's
Recent Changes and next to the incident. It is a type of its own rather than an option of
`pagerduty`: a change event has another endpoint and shape (no event_action, dedup_key or
severity), says what changed rather than what is wrong, notifies nobody and cannot be
resolved, and a page and a change record are placed differently in a rule (the page first,
the change record after the actions it reports).

Over 400 lines: two types (events and change events) that share the provider's request
format, limits and retries.
"""

from __future__ import annotations

import builtins
import socket
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field, SecretStr, field_validator

from daemon.core.models import Incident, RemediationResult, Step, StepFacts, TimelineEntry
from daemon.core.units import StrictModel
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig, check_http_url, safe_url, send_json

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
CHANGE_EVENTS_URL = "https://events.pagerduty.com/v2/change/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024
DETAIL_LIMIT = 300  # of one action's result in a change event's custom_details


class PagerDutyLink(StrictModel):
    """A link shown with the event (a dashboard, the runbook)."""

    href: str = Field(description="The http(s) URL.")
    text: str | None = Field(None, description="The link's text; default: the URL.")

    @field_validator("href")
    @classmethod
    def _href(cls, value: str) -> str:
        return check_http_url(value)


class _EventsApiConfig(RetryingConfig):
    """What both event kinds share; each subclass names its own `events_url` default."""

    routing_key: SecretStr = Field(
        description="The 32-character integration key of an Events API v2 integration on the "
        "service (one key serves alerts and change events)."
    )
    events_url: str
    source: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="The event's `source`: where it comes from. Default: this host's name.",
    )
    links: list[PagerDutyLink] = Field(
        default_factory=list, description="Links shown with the event."
    )

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("routing_key is empty")
        return value

    @field_validator("events_url")
    @classmethod
    def _events_url(cls, value: str) -> str:
        return check_http_url(value)


class PagerDutyConfig(_EventsApiConfig):
    """Pages through the PagerDuty Events API v2: a `trigger` event when the incident opens
    and a `resolve` event when it resolves. The incident's id is the `dedup_key`, so a
    repeated trigger lands on the same PagerDuty alert and the resolve closes exactly it. The
    rule's severity maps to PagerDuty's (`critical`, `error`, `warning`, `info`). Success is a
    2xx (PagerDuty answers 202). Delivered through the outbox: a failed page is tried again
    with backoff, after a restart too (twelve attempts over some seven hours)."""

    model_config = RemediationConfig.model_config | {"populate_by_name": True}

    example: ClassVar[str] = """
        remediations:
          page_oncall:
            type: pagerduty
            routing_key: ${PAGERDUTY_ROUTING_KEY}
            component: web
            links: [{href: "https://grafana.example.com/d/web", text: Web dashboard}]
        """

    type: Literal["pagerduty"]
    events_url: str = Field(
        EVENTS_URL,
        description="The Events API v2 endpoint: for an EU account "
        "`https://events.eu.pagerduty.com/v2/enqueue`, or a proxy or a test pager.",
    )
    component: str | None = Field(None, description="The event's `component`, e.g. `web`.")
    group: str | None = Field(None, description="The event's `group`, e.g. `production`.")
    class_: str | None = Field(
        default=None, alias="class", description="The event's `class`, e.g. `deploy`."
    )
    client_url: str | None = Field(
        None, description="A URL shown as the event's client link (e.g. runbookd's console)."
    )

    @field_validator("client_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)


class PagerDutyChangeConfig(_EventsApiConfig):
    """Sends a PagerDuty Change Event naming the actions runbookd took for the incident (a
    rollback, a scale-out), so responders see them on the service's Recent Changes. Put it
    in `do:` after the actions it reports; it notifies nobody and cannot be resolved. An
    incident with no action run yet sends nothing."""

    example: ClassVar[str] = """
        remediations:
          record_change:
            type: pagerduty_change
            routing_key: ${PAGERDUTY_ROUTING_KEY}
            actions: [rollback]
        """

    type: Literal["pagerduty_change"]
    events_url: str = Field(
        CHANGE_EVENTS_URL, description="The Change Events endpoint (`/v2/change/enqueue`)."
    )
    summary: str | None = Field(
        default=None,
        min_length=1,
        max_length=SUMMARY_LIMIT,
        description='A fixed summary ("Rolled back web to the last healthy deploy"); '
        "default: one built from the actions reported and the incident.",
    )
    actions: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The remediations (by name) whose runs are reported; default: every one "
        "that is not a notifier.",
    )


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


# --- change events --------------------------------------------------------------------------


def _is_notifier(kind: str | None) -> bool:
    return kind is not None and kind in REMEDIATIONS and bool(REMEDIATIONS.get(kind).notifier)


def _types(timeline: list[TimelineEntry]) -> dict[str, str]:
    """Remediation name -> type, from the steps that recorded one (resolve results do not)."""
    found: dict[str, str] = {}
    for entry in timeline:
        if (facts := entry.step) is not None and facts.type is not None:
            found[facts.remediation] = facts.type
    return found


class Ran(NamedTuple):
    """An action's result on the timeline, with the step it reports."""

    entry: TimelineEntry
    facts: StepFacts


def _since_last_report(timeline: list[TimelineEntry], own: str) -> list[TimelineEntry]:
    """The entries after this remediation's last report, so a second run (in `escalate:`)
    reports only what happened since the first."""
    for index in range(len(timeline) - 1, -1, -1):
        if timeline[index].succeeded(own):
            return timeline[index + 1 :]
    return timeline


@REMEDIATIONS.register
class PagerDutyChangeRemediation(Hooks):
    type: ClassVar[str] = "pagerduty_change"
    Config: ClassVar[builtins.type[RemediationConfig]] = PagerDutyChangeConfig
    # Change events have no dedup_key: a repeat records the change twice, so one is sent
    # again (in the call or from the outbox) only when PagerDuty surely did not take it.
    idempotent: bool = False
    destructive: bool = False
    # It tells (PagerDuty's change timeline) rather than changes anything, and pages nobody.
    notifier: bool = True

    def __init__(self, name: str, config: PagerDutyChangeConfig) -> None:
        self.name = name
        self.config = config

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        runs = self.runs(incident, on_resolve=False)
        if not runs:
            detail = f"PagerDuty change event for {incident.id}: no action has run, none sent"
            return RemediationResult(True, detail, data={"sent": False})
        return await self._send(ctx, self.change_event(incident, runs, on_resolve=False))

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        """Undo steps run as the incident resolved (a scale-in) are changes too."""
        runs = self.runs(incident, on_resolve=True)
        if not runs:
            return None
        return await self._send(ctx, self.change_event(incident, runs, on_resolve=True))

    def runs(self, incident: Incident, *, on_resolve: bool) -> list[Ran]:
        """The results of the actions to report, in the order they ran."""
        entries = incident.timeline
        if not on_resolve:
            entries = _since_last_report(entries, self.name)
        types = _types(incident.timeline)
        return [
            Ran(entry, facts)
            for entry in entries
            if entry.kind == Step.RESULT
            and (facts := entry.step) is not None
            and facts.on_resolve == on_resolve
            and self._reports(facts.remediation, types)
        ]

    def _reports(self, name: str, types: dict[str, str]) -> bool:
        if name == self.name:
            return False
        if self.config.actions is not None:
            return name in self.config.actions
        return not _is_notifier(types.get(name))

    def change_event(
        self, incident: Incident, runs: list[Ran], *, on_resolve: bool
    ) -> dict[str, Any]:
        """The documented shape: routing_key, payload {summary, timestamp, source,
        custom_details} and links."""
        types = _types(incident.timeline)
        payload = {
            "summary": self._summary(incident, runs, types, on_resolve)[:SUMMARY_LIMIT],
            # When the (last) change happened, not when PagerDuty hears of it.
            "timestamp": iso8601(runs[-1].entry.ts),
            "source": self.config.source,
            "custom_details": {
                "incident_id": incident.id,
                "rule": incident.rule,
                "check": incident.check,
                "severity": incident.severity,
                "incident_status": "resolved" if on_resolve else incident.status.value,
                "value": incident.trigger.get("value"),
                "threshold": incident.trigger.get("threshold"),
                "actions": [_action(ran, types) for ran in runs],
            },
        }
        event: dict[str, Any] = {
            "routing_key": self.config.routing_key.get_secret_value(),
            "payload": payload,
        }
        if self.config.links:
            event["links"] = [link.model_dump(exclude_none=True) for link in self.config.links]
        return event

    def _summary(
        self,
        incident: Incident,
        runs: list[Ran],
        types: dict[str, str],
        on_resolve: bool,
    ) -> str:
        if self.config.summary is not None:
            return self.config.summary
        names = ", ".join(_label(ran.facts, types) for ran in runs)
        if on_resolve:
            return f"runbookd ran {names} after {incident.rule} resolved"
        what = incident.summary.strip() or f"{incident.rule} on {incident.check}"
        return f"runbookd ran {names} for {incident.rule}: {what}"

    async def _send(self, ctx: RemediationContext, event: dict[str, Any]) -> RemediationResult:
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
            # A 5xx or timeout may come after PagerDuty recorded the change, and a change
            # event has no dedup_key: only a 429 or a connection never made is sent again.
            idempotent=False,
        )
        details = event["payload"]["custom_details"]
        request = {
            "url": safe_url(config.events_url),
            "summary": event["payload"]["summary"],
            "actions": [action["remediation"] for action in details["actions"]],
        }
        return outcome.result(f"PagerDuty change event for {details['incident_id']}", request)


def _label(step: StepFacts, types: dict[str, str]) -> str:
    name = step.remediation
    facts = [kind] if (kind := types.get(name)) else []
    if not step.ok:
        facts.append("failed")
    return f"{name} ({', '.join(facts)})" if facts else name


def _action(ran: Ran, types: dict[str, str]) -> dict[str, Any]:
    name = ran.facts.remediation
    return {
        "remediation": name,
        "type": types.get(name),
        "phase": ran.facts.phase,
        "outcome": "succeeded" if ran.facts.ok else "failed",
        "at": iso8601(ran.entry.ts),
        "result": ran.entry.message[:DETAIL_LIMIT],
    }
