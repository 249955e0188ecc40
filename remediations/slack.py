"""`slack`: post the incident to Slack, an update every `update_every` while it is open, and
a last message when it resolves.

Messages follow the runbook's incident communication template, as Block Kit section fields:
Status, Impact, Started, Last update, What happened, Current status, Next update. execute()
posts the opening message (an update, if this remediation posted for the incident before,
e.g. from `escalate:`); update() the periodic update (daemon/pipeline/updates.py); resolve()
the resolved one with the same fields.

Two ways to post. An incoming webhook (`webhook_url`) posts each message to its channel on
its own: a webhook cannot reply in a thread. A bot token (`bot_token` and `channel`) posts
with the Web API's chat.postMessage (remediations/slack_api.py): the opening message's `ts`
is kept in its result on the incident's timeline, so the updates and the resolution go in
its thread, after a restart too.

The webhook URL and the token are credentials, so secrets: only the webhook's scheme and host
ever appear in results. Not idempotent: a repeat posts twice, which is noise rather than harm.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from daemon.core.models import Incident, RemediationResult, Step, TimelineEntry
from daemon.core.units import PositiveDuration
from daemon.core.updates import stage
from remediations.base import (
    REMEDIATIONS,
    Announcement,
    Hooks,
    RemediationConfig,
    RemediationContext,
    run_params,
)
from remediations.retry import RetryingConfig, check_http_url, safe_url, send_json
from remediations.slack_api import SLACK_API, Poster, Thread

# Slack Block Kit limits: header text 150 characters, a section field 2000 (and at most
# ten fields: the template has seven).
HEADER_LIMIT = 150
FIELD_LIMIT = 2000
SEVERITY_MARK = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵"}
RESOLVED_MARK = "✅"
NO_ACTION = "no automated action yet"

# A step's last timeline entry -> what runbookd is doing with it, in the order shown.
STEP_STATES = {
    Step.ACTION: "remediating",
    Step.APPROVED: "remediating",
    Step.RESULT: "remediating",
    Step.APPROVAL: "waiting for approval",
    Step.SKIPPED: "held back",
    Step.DRY_RUN: "dry-run only",
    Step.REJECTED: "rejected by an operator",
}
STATE_ORDER = (
    "remediating",
    "waiting for approval",
    "held back",
    "dry-run only",
    "failed",
    "rejected by an operator",
)


class SlackConfig(RetryingConfig):
    """Posts the incident to Slack, following the incident communication template (Status,
    Impact, Started, Last update, What happened, Current status, Next update), an update every
    `update_every` while it is open (and when run again, from `escalate:`), and a last message
    when it resolves. Through an incoming webhook (`webhook_url`), each is a message of its
    own; with a bot token (`bot_token` and `channel`, Slack's chat.postMessage), the updates
    and the resolution are replies in the opening message's thread. Delivered through the
    outbox, like a page."""

    example: ClassVar[str] = """
        remediations:
          tell_incidents_channel:
            type: slack
            webhook_url: ${SLACK_WEBHOOK_URL}
            impact: Checkout may fail for some customers
        """

    type: Literal["slack"]
    webhook_url: SecretStr | None = Field(
        None,
        description="`https://hooks.slack.com/services/T.../B.../...`: the credential itself "
        "(anyone holding it can post), so a secret; prefer `webhook_url_file`. Give it or "
        "`bot_token`, not both.",
    )
    bot_token: SecretStr | None = Field(
        None,
        description="A bot token (`xoxb-...`) with the `chat:write` scope, to post with "
        "chat.postMessage so that updates go in the incident's thread; a secret: prefer "
        "`bot_token_file`. Needs `channel`, and the bot must be in that channel.",
    )
    channel: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        description="With `bot_token`: the channel to post to, by ID (`C0123456789`) or name.",
    )
    api_url: str = Field(
        SLACK_API,
        description="With `bot_token`: the Web API's base URL (a proxy, or a test server).",
    )
    impact: str | None = Field(
        default=None,
        min_length=1,
        description='The template\'s Impact ("Checkout unavailable for EU customers"); '
        "default: the incident's summary. In a procedure's step, the message's first words.",
    )
    update_every: PositiveDuration = Field(
        1800.0,
        description="While an incident it announced is open, an update is posted this often "
        "(the runbook's 30 minutes), and each message promises the next one.",
    )

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_http_url(value.get_secret_value())
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return check_http_url(value)

    @model_validator(mode="after")
    def _one_way(self) -> SlackConfig:
        if (self.webhook_url is None) == (self.bot_token is None):
            raise ValueError("give webhook_url (an incoming webhook) or bot_token, not both")
        if self.bot_token is not None and self.channel is None:
            raise ValueError("bot_token needs channel: the channel to post to")
        if self.webhook_url is not None and self.channel is not None:
            raise ValueError("channel goes with bot_token: a webhook posts to its own channel")
        return self


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: alert text must not become a link or an @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{label}*\n{escape(value)}", FIELD_LIMIT)}


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """The two largest units: 45s, 15m, 1h 5m, 2d 3h."""
    left = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def _number(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return "n/a" if value is None else str(value)


# --- the template's fields ------------------------------------------------------------------


def impact(incident: Incident, configured: str | None) -> str:
    return configured or incident.summary.strip() or f"{incident.rule} on {incident.check}"


def what_happened(incident: Incident) -> str:
    """The condition that fired, with the value seen against the threshold."""
    trigger = incident.trigger
    condition = trigger.get("condition") or incident.check
    text = (
        f"{condition}: value {_number(trigger.get('value'))} "
        f"vs threshold {_number(trigger.get('threshold'))}"
    )
    if trigger.get("baseline") is not None:
        text += f" (baseline {_number(trigger['baseline'])})"
    return text


def step_states(timeline: list[TimelineEntry], own: str) -> dict[str, str]:
    """Each remediation's state from its last entry (this one excluded), in first-run order."""
    states: dict[str, str] = {}
    for entry in timeline:
        step = entry.step
        if step is None or step.remediation == own or step.hook:
            continue
        state = STEP_STATES.get(entry.kind)
        if entry.kind == Step.RESULT and not step.ok:
            state = "failed"
        if state is not None:
            states[step.remediation] = state
    return states


def _grouped(states: dict[str, str], labels: dict[str, str] | None = None) -> list[str]:
    """["remediating: rollback, page_oncall", "failed: restart"], states in STATE_ORDER."""
    return [
        f"{(labels or {}).get(state, state)}: "
        + ", ".join(name for name, s in states.items() if s == state)
        for state in STATE_ORDER
        if state in states.values()
    ]


def current_status(incident: Incident, own: str) -> str:
    """What runbookd is doing, e.g. "remediating: rollback, page_oncall; waiting for
    approval: flush-cache"."""
    groups = _grouped(step_states(incident.timeline, own))
    if any(entry.kind == Step.CIRCUIT_OPEN for entry in incident.timeline):
        groups.insert(0, "automation stopped (circuit open), paging only")
    return "; ".join(groups) or NO_ACTION


def resolved_status(incident: Incident, own: str) -> str:
    """What runbookd did, e.g. "resolved; ran: rollback, page_oncall"."""
    groups = _grouped(step_states(incident.timeline, own), {"remediating": "ran"})
    return "; ".join(["resolved", *groups]) if groups else "resolved; no automated action"


@dataclass(frozen=True, slots=True)
class Template:
    """The runbook's incident communication template, in its order."""

    status: str
    impact: str
    started: str
    last_update: str
    what_happened: str
    current_status: str
    next_update: str

    def fields(self) -> list[dict[str, str]]:
        return [
            _field("Status", self.status),
            _field("Impact", self.impact),
            _field("Started", self.started),
            _field("Last update", self.last_update),
            _field("What happened", self.what_happened),
            _field("Current status", self.current_status),
            _field("Next update", self.next_update),
        ]


def _message(header: str, fallback: str, incident: Incident, template: Template) -> dict[str, Any]:
    return {
        "text": escape(fallback),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(header, HEADER_LIMIT), "emoji": True},
            },
            {"type": "section", "fields": template.fields()},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": escape(f"incident {incident.id} · runbookd")}
                ],
            },
        ],
    }


def incident_message(
    incident: Incident, config: SlackConfig, *, own: str, now: float, update: bool = False
) -> dict[str, Any]:
    """The opening message, or with `update` a later one about the same incident."""
    severity = incident.severity
    template = Template(
        status=f"{severity}, open: {stage(incident)}" if update else f"{severity}, open",
        impact=impact(incident, config.impact),
        started=utc_iso(incident.opened_at),
        last_update=utc_iso(now),
        what_happened=what_happened(incident),
        current_status=current_status(incident, own),
        next_update=utc_iso(now + config.update_every),
    )
    mark = SEVERITY_MARK.get(severity, "⚠️")
    title = f"Update: {incident.rule}" if update else incident.rule
    fallback = f"[{severity.upper()}] {title}: {incident.summary}"
    return _message(f"{mark} {title}", fallback, incident, template)


def resolved_message(
    incident: Incident, config: SlackConfig, *, own: str, now: float
) -> dict[str, Any]:
    resolved_at = incident.resolved_at if incident.resolved_at is not None else now
    template = Template(
        status=f"{incident.severity}, resolved after {duration(resolved_at - incident.opened_at)}",
        impact=impact(incident, config.impact),
        started=utc_iso(incident.opened_at),
        last_update=utc_iso(now),
        what_happened=what_happened(incident),
        current_status=resolved_status(incident, own),
        next_update="none: the incident is resolved",
    )
    fallback = f"[RESOLVED] {incident.rule}: {incident.summary}"
    return _message(f"{RESOLVED_MARK} Resolved: {incident.rule}", fallback, incident, template)


def announcement_message(message: Announcement) -> dict[str, Any]:
    """An announcement (a deploy starting, completed, rolled back): its line, then its facts
    as fields (at most ten, Slack's limit)."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(escape(message.text), 3000)}}
    ]
    if message.facts:
        fields = [_field(label, value) for label, value in message.facts[:10]]
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "runbookd"}]})
    return {"text": escape(message.text), "blocks": blocks}


def procedure_message(incident: Incident, said: str | None = None) -> dict[str, Any] | None:
    """For a step of a procedure's run (daemon/procedures): what the run is and who started
    it, with its parameters, after `said` (the config's `impact`) when given; None for an
    incident. A failed run's page says what failed."""
    trigger = incident.trigger
    procedure = trigger.get("procedure")
    if not isinstance(procedure, str):
        return None
    started = f"run {incident.id}, started by {trigger.get('by', '?')} at "
    started += utc_iso(incident.opened_at)
    if incident.severity == "critical":
        text = f"{SEVERITY_MARK['critical']} {incident.summary} ({started})"
    else:
        text = f"Procedure {procedure}, step {incident.check} ({started})"
        text = f"{said}. {text}" if said else text
    return announcement_message(Announcement(text, tuple(run_params(incident).items())))


def posted_before(incident: Incident, own: str) -> bool:
    """This remediation already posted about the incident (it runs again in `escalate:`)."""
    return any(entry.succeeded(own) for entry in incident.timeline)


def thread_of(incident: Incident, own: str) -> Thread | None:
    """The thread of this remediation's opening message about the incident (bot-token mode),
    from its result on the timeline: so it is found after a restart too."""
    for entry in incident.timeline:
        if entry.succeeded(own) and (thread := Thread.read(entry.data.get("thread"))):
            return thread
    return None


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
        self.update_every = config.update_every  # remediations.base.Updater
        self.poster: Poster | None = None
        if config.bot_token is not None and config.channel is not None:
            token = config.bot_token.get_secret_value()
            poster = Poster(token, config.channel, config.api_url, config.timeout, config.retry)
            self.poster = poster

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        if (message := procedure_message(incident, self.config.impact)) is not None:
            return await self._post(ctx, incident, message)
        update = posted_before(incident, self.name)
        message = incident_message(
            incident, self.config, own=self.name, now=ctx.clock.now(), update=update
        )
        return await self._post(ctx, incident, message)

    async def update(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        """The periodic update of an open incident this remediation announced."""
        message = incident_message(
            incident, self.config, own=self.name, now=ctx.clock.now(), update=True
        )
        return await self._post(ctx, incident, message)

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        message = resolved_message(incident, self.config, own=self.name, now=ctx.clock.now())
        # In a thread, the resolution shows in the channel too: the news everyone waits for.
        return await self._post(ctx, incident, message, broadcast=True)

    async def announce(self, ctx: RemediationContext, message: Announcement) -> RemediationResult:
        """Post an announcement to the channel (the deployments channel)."""
        return await self._send(ctx, announcement_message(message), "Slack announcement")

    async def _post(
        self,
        ctx: RemediationContext,
        incident: Incident,
        message: dict[str, Any],
        *,
        broadcast: bool = False,
    ) -> RemediationResult:
        """A message about the incident: with a bot token, in its thread once there is one."""
        what = f"Slack message for {incident.id}"
        if self.poster is not None:
            thread = thread_of(incident, self.name)
            return await self.poster.post(ctx, message, what, thread=thread, broadcast=broadcast)
        return await self._send(ctx, message, what)

    async def _send(
        self, ctx: RemediationContext, message: dict[str, Any], what: str
    ) -> RemediationResult:
        if self.poster is not None:
            return await self.poster.post(ctx, message, what)
        assert self.config.webhook_url is not None  # the config has one way or the other
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
        return outcome.result(what, request)
