"""Slack's Web API `chat.postMessage`, for the `slack` remediation's bot-token mode: unlike an
incoming webhook it answers with the message's `ts`, which later messages name as their
`thread_ts` to reply in its thread.

Slack answers HTTP 200 with `{"ok": true, "channel": "C…", "ts": "…", "message": {…}}`, or
HTTP 200 with `{"ok": false, "error": "channel_not_found"}` (`not_in_channel`, `is_archived`,
`invalid_auth`, `token_revoked`, `msg_too_long`, ...), and HTTP 429 with `Retry-After` when
rate limited (send_json waits it out, or leaves it to the outbox). Of the errors only those
Slack documents as transient are tried again; a `fatal_error` may have posted, so it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yarl import URL

from daemon.core.models import RemediationResult
from remediations.base import RemediationContext
from remediations.retry import RetryConfig, send_json

SLACK_API = "https://slack.com/api"
METHOD = "chat.postMessage"
# A successful answer echoes the message with its blocks: a few KB; read the whole of it.
MAX_RESPONSE = 1 << 20
# Errors Slack documents as transient: trying again later may post the message.
TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "service_unavailable", "request_timeout"}
)


@dataclass(frozen=True, slots=True)
class Thread:
    """A message in a channel, whose replies form its thread."""

    channel: str
    ts: str

    def data(self) -> dict[str, str]:
        return {"channel": self.channel, "ts": self.ts}

    @classmethod
    def read(cls, data: object) -> Thread | None:
        if not isinstance(data, dict):
            return None
        channel, ts = data.get("channel"), data.get("ts")
        if isinstance(channel, str) and isinstance(ts, str) and channel and ts:
            return cls(channel, ts)
        return None


@dataclass(frozen=True, slots=True)
class Poster:
    """What one remediation posts with: its token, channel, endpoint and retry policy."""

    token: str
    channel: str
    api_url: str
    timeout: float
    retry: RetryConfig

    @property
    def endpoint(self) -> str:
        return str(URL(self.api_url.rstrip("/") + "/" + METHOD))

    async def post(
        self,
        ctx: RemediationContext,
        message: dict[str, Any],
        what: str,
        *,
        thread: Thread | None = None,
        broadcast: bool = False,
    ) -> RemediationResult:
        """Post `message` (text and blocks) to the channel, or as a reply in `thread` (and
        with `broadcast` to the channel too). A result that posted carries the thread its
        message belongs to (`data["thread"]`): its own for a message in the channel."""
        body: dict[str, Any] = {"channel": thread.channel if thread else self.channel, **message}
        if thread is not None:
            body["thread_ts"] = thread.ts
            if broadcast:
                body["reply_broadcast"] = True
        outcome = await send_json(
            ctx,
            "POST",
            self.endpoint,
            body,
            headers={"Authorization": f"Bearer {self.token}"},
            attempt_timeout=self.timeout,
            attempts=self.retry.attempts,
            base_delay=self.retry.base_delay,
            max_delay=self.retry.max_delay,
            redact_values=[self.token],
            max_body=MAX_RESPONSE,
        )
        request = {"url": self.endpoint, "channel": body["channel"], "text": message["text"]}
        if thread is not None:
            request["thread_ts"] = thread.ts
        result = outcome.result(what, request)
        if not outcome.ok:
            return result  # a transport failure, a 429 or a 5xx: as send_json judged it
        answer = outcome.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            detail = f"{what}: HTTP {outcome.status} but not Slack's JSON answer"
            return RemediationResult(False, detail, data=result.data)
        if not answer["ok"]:
            error = str(answer.get("error") or "unknown error")
            return RemediationResult(
                False, f"{what}: Slack said {error}", error in TRANSIENT, data=result.data
            )
        posted = Thread.read({"channel": answer.get("channel"), "ts": answer.get("ts")})
        own = thread or posted
        data = result.data | ({"thread": own.data()} if own is not None else {})
        return RemediationResult(True, f"{what}: posted", data=data)
