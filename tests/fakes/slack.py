"""A Slack incoming webhook (`POST /services/T.../B.../...`) and the Web API's
`POST /api/chat.postMessage`, as Slack documents them.

Success is 200 with the text body "ok". Errors are plain-text strings with these codes:
400 invalid_payload / no_text / invalid_blocks, 403 action_prohibited, 404 no_service /
channel_not_found, 410 channel_is_archived, 500 rollup_error. Blocks are checked against
the Block Kit limits a client is most likely to break.

A rate limit is the one JSON answer: 429 with `{"ok": false, "error": "ratelimited"}` and a
Retry-After header in seconds, which must be waited out in full (an app that keeps sending
while limited may be disabled).
Source: https://docs.slack.dev/apis/web-api/rate-limits ("HTTP based APIs, including
incoming webhooks")

chat.postMessage (https://docs.slack.dev/reference/methods/chat.postMessage): a bearer token
(`Authorization: Bearer xoxb-...`), a JSON body with `channel` (an ID, or a name), `text`
and/or `blocks`, and `thread_ts` (the parent's `ts`) to reply in its thread, with
`reply_broadcast` to show the reply in the channel too. It answers HTTP 200 with
`{"ok": true, "channel": "C...", "ts": "...", "message": {...}}` or HTTP 200 with
`{"ok": false, "error": "..."}`: not_authed (no token), invalid_auth, token_revoked,
channel_not_found, not_in_channel, is_archived, no_text, msg_too_long, invalid_blocks,
invalid_json; a rate limit is HTTP 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes import Failure, FailureQueue, Received, receive, retry_after_headers

WEBHOOK_PATH = "/services/T000/B000/XXXX"
ERROR_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "action_prohibited": 403,
    "no_service": 404,
    "channel_not_found": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}
TOKEN = "xoxb-17-secret-bot-token"
# The channels the bot knows: ID -> name. The bot is a member of INCIDENTS only.
INCIDENTS = "C0INCIDENTS"
CHANNELS = {INCIDENTS: "incidents", "C0ELSEWHERE": "elsewhere", "C0ARCHIVED": "old"}
MAX_TEXT = 40000  # chat.postMessage truncates past 40,000 characters and refuses far past it
BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text"}
MAX_BLOCKS = 50


def _text_ok(text: object, limit: int) -> bool:
    return (
        isinstance(text, dict)
        and text.get("type") in ("plain_text", "mrkdwn")
        and isinstance(text.get("text"), str)
        and 0 < len(text["text"]) <= limit
    )


def _block_ok(block: object) -> bool:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        return False
    kind = block["type"]
    if kind == "header":
        text = block.get("text")
        return _text_ok(text, 150) and isinstance(text, dict) and text["type"] == "plain_text"
    if kind == "section":
        fields = block.get("fields", [])
        if "text" not in block and not fields:
            return False
        text_ok = "text" not in block or _text_ok(block["text"], 3000)
        return text_ok and len(fields) <= 10 and all(_text_ok(f, 2000) for f in fields)
    if kind == "context":
        elements = block.get("elements")
        return isinstance(elements, list) and 0 < len(elements) <= 10
    return True


def check_message(message: object) -> str | None:
    """The error Slack would answer for `message`, or None if it would post it."""
    if not isinstance(message, dict):
        return "invalid_payload"
    blocks = message.get("blocks")
    if not message.get("text") and not blocks and not message.get("attachments"):
        return "no_text"
    if blocks is not None and (
        not isinstance(blocks, list)
        or len(blocks) > MAX_BLOCKS
        or not all(_block_ok(block) for block in blocks)
    ):
        return "invalid_blocks"
    return None


@dataclass(frozen=True, slots=True)
class Posted:
    """A message chat.postMessage posted: in `channel` (its ID) at `ts`, in the thread of
    `thread_ts` if it is a reply."""

    channel: str
    ts: str
    thread_ts: str | None
    broadcast: bool
    body: dict[str, Any]


class FakeSlack:
    """`received` holds every request, `messages` those posted through the webhook, `posted`
    those posted with chat.postMessage.

    Set `error` to a documented error string to refuse every request with it (e.g. an
    archived channel; for chat.postMessage, an `{"ok": false}` error such as token_revoked);
    `fail_next` queues transient 429 / 500 answers. Set `held` to an event to hold every
    webhook post (received, not answered) until it is set.
    """

    def __init__(self, path: str = WEBHOOK_PATH) -> None:
        self.path = path
        self.error: str | None = None
        self.received: list[Received] = []
        self.messages: list[dict[str, Any]] = []
        self.posted: list[Posted] = []
        self.failures = FailureQueue()
        self.held: asyncio.Event | None = None
        self.app = web.Application()
        self.app.router.add_post("/services/{rest:.+}", self._post)
        self.app.router.add_post("/api/chat.postMessage", self._post_message)

    def thread(self, ts: str) -> list[Posted]:
        """The replies in the thread of the message `ts`, in order."""
        return [p for p in self.posted if p.thread_ts == ts]

    async def _post_message(self, request: web.Request) -> web.Response:
        received = await receive(request)
        self.received.append(received)
        failure = self.failures.pop()
        if failure is not None:
            return self._failure(failure)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _api_error("not_authed")
        if auth != f"Bearer {TOKEN}":
            return _api_error("invalid_auth")
        if self.error is not None:
            return _api_error(self.error)
        body = received.body
        if request.content_type != "application/json" or not isinstance(body, dict):
            return _api_error("invalid_json")
        channel = _channel_id(body.get("channel"))
        if channel is None:
            return _api_error("channel_not_found")
        if channel == "C0ARCHIVED":
            return _api_error("is_archived")
        if channel != INCIDENTS:
            return _api_error("not_in_channel")
        if len(str(body.get("text") or "")) > MAX_TEXT:
            return _api_error("msg_too_long")
        error = check_message(body)
        if error is not None:
            return _api_error("no_text" if error == "no_text" else "invalid_blocks")
        ts = f"{1_800_000_000 + len(self.posted)}.{len(self.posted) + 1:06d}"
        thread_ts = body.get("thread_ts")
        posted = Posted(
            channel,
            ts,
            thread_ts if isinstance(thread_ts, str) else None,
            body.get("reply_broadcast") is True,
            body,
        )
        self.posted.append(posted)
        message = {"type": "message", "subtype": "bot_message", "text": body.get("text", "")}
        message |= {"ts": ts, "bot_id": "B0RUNBOOKD", "blocks": body.get("blocks", [])}
        if posted.thread_ts is not None:
            message["thread_ts"] = posted.thread_ts
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})

    def fail_next(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        self.failures.add(status, count, retry_after=retry_after)

    async def _post(self, request: web.Request) -> web.Response:
        received = await receive(request)
        self.received.append(received)
        if self.held is not None:
            await self.held.wait()
        failure = self.failures.pop()
        if failure is not None:
            return self._failure(failure)
        if request.path != self.path:
            return _error("no_service")
        if self.error is not None:
            return _error(self.error)
        if request.content_type != "application/json":
            return _error("invalid_payload")
        error = check_message(received.body)
        if error is not None:
            return _error(error)
        self.messages.append(received.body)
        return web.Response(text="ok")

    def _failure(self, failure: Failure) -> web.Response:
        headers = retry_after_headers(failure)
        if failure.status == 429:
            body = {"ok": False, "error": "ratelimited"}
            return web.json_response(body, status=429, headers=headers)
        return web.Response(text="rollup_error", status=failure.status, headers=headers)


def _error(error: str) -> web.Response:
    return web.Response(text=error, status=ERROR_STATUS[error])


def _api_error(error: str) -> web.Response:
    """The Web API's refusals: HTTP 200 all the same, `ok` false."""
    return web.Response(
        text=json.dumps({"ok": False, "error": error}), content_type="application/json"
    )


def _channel_id(channel: object) -> str | None:
    """A channel's ID from its ID or its name (with or without `#`)."""
    if not isinstance(channel, str):
        return None
    if channel in CHANNELS:
        return channel
    name = channel.removeprefix("#")
    return next((cid for cid, known in CHANNELS.items() if known == name), None)
